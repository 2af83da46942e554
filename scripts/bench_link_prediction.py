"""Benchmark: one 200-epoch link-prediction run on Cora per latent family, framework vs. bare PyTorch loops.

All runs share one edge split (seed 0) and this process, and do the same work: 200 full-batch Adam steps
(lr 0.01) of the VGAE (GCN 32 -> latent 16, inner-product decoder, Kipf's all-pairs weighted cross-entropy
+ KL / N), the validation AUC and AP after every epoch, keeping the best-validation state, then the test AUC
and AP of that state.

- framework: ``LinkPredictionModule`` in a Lightning ``Trainer`` as ``train.py`` runs it (a ModelCheckpoint
  writing best.ckpt and last.ckpt, the CSV logger; no progress bar and no latent plot), timed from ``fit``
  to the end of ``test`` (which reloads best.ckpt).
- bare (PyG): a plain loop over torch-geometric's ``GCNConv`` (cached normalisation, no bias) and ``VGAE``
  for the Gaussian latent, the same distributions from ``hsvae.distributions`` for the spherical ones, and
  the loss written the obvious way: ``binary_cross_entropy_with_logits`` on the dense N x N logits with
  ``pos_weight``; the best state kept in memory.
- bare (hsvae VGAE): the same plain loop around the framework's own ``VGAE`` module (sparse GCN, the fused
  all-pairs loss): what is left of the framework's time is Lightning's overhead.

Printed: seconds per run (the minimum over ``--repeats``), and the framework's time over the bare loops'
(target: at most 1.1 against the bare PyG loop).

    python scripts/bench_link_prediction.py --data-dir ../shared/data [--latents gaussian vmf] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import tempfile
import time
import warnings

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.registry import build_latent, latent_families
from hsvae.data import LinkSplit, PlanetoidLinkDataModule
from hsvae.evaluation.links import link_metrics
from hsvae.models.vgae import VGAE, encoder_features, gcn_normalized_adjacency
from hsvae.training import LinkPredictionModule
from hsvae.cli.failures import run_script

LATENTS = latent_families()
EPOCHS, LR, HIDDEN, DIM = 200, 0.01, 32, 16


def build_net(latent: str, in_features: int) -> VGAE:
    return VGAE(in_features, build_latent(latent, DIM), hidden=HIDDEN)


# -- the framework ------------------------------------------------------------------------------------------


def framework_run(dm: PlanetoidLinkDataModule, latent: str) -> tuple[float, dict]:
    torch.manual_seed(0)
    net = build_net(latent, dm.num_features)
    module = LinkPredictionModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=LR))
    with tempfile.TemporaryDirectory() as out:
        checkpoint = pl.callbacks.ModelCheckpoint(
            dirpath=out, filename="best", monitor="val/auc_ap", mode="max", save_last=True, enable_version_counter=False
        )
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=EPOCHS, log_every_n_steps=1, callbacks=[checkpoint],
            logger=pl.loggers.CSVLogger(out, name="csv", version=""), enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=out,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        trainer.test(module, datamodule=dm, ckpt_path=checkpoint.best_model_path, verbose=False)
        seconds = time.perf_counter() - start
    return seconds, {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


# -- bare loops ---------------------------------------------------------------------------------------------


class PyGEncoder(nn.Module):
    """torch-geometric's GCNConv x 2 (cached normalisation; no bias, as Kipf's layers, but for the spherical
    latents' output layer, as the framework's VGAE)."""

    def __init__(self, in_features: int, out_features: int, output_bias: bool = False):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_features, HIDDEN, cached=True, bias=False)
        self.conv2 = GCNConv(HIDDEN, out_features, cached=True, bias=output_bias)

    def forward(self, x, edge_index):
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)


def dense_kipf_loss(logits: torch.Tensor, label: torch.Tensor, pos_weight: torch.Tensor, norm: float) -> torch.Tensor:
    return norm * F.binary_cross_entropy_with_logits(logits, label, pos_weight=pos_weight)


def bare_pyg_run(graph: LinkSplit, latent: str) -> tuple[float, dict]:
    """Plain PyTorch + torch-geometric, written as a user would (dense N x N loss)."""
    from torch_geometric.nn import VGAE as PyGVGAE

    torch.manual_seed(0)
    start = time.perf_counter()
    n, edge_index = graph.num_nodes, graph.message_passing_edges()
    label = torch.zeros(n, n)
    label[edge_index[0], edge_index[1]] = 1.0
    ones = float(label.sum())
    label += torch.eye(n)
    pos_weight = torch.tensor((n * n - ones) / ones)
    norm = n * n / (2 * (n * n - ones))
    if latent == "gaussian":

        class Encoder(PyGEncoder):
            def forward(self, x, edge_index):
                mu, logstd = super().forward(x, edge_index).split(DIM, dim=-1)
                return mu, logstd

        model = PyGVGAE(Encoder(graph.num_features, 2 * DIM))
        modules, params = [model], list(model.parameters())

        def embed():
            return model.encode(graph.x, edge_index), model.__mu__

        def kl(z):
            return model.kl_loss()

        def scale():
            return 1.0
    else:
        family = build_latent(latent, DIM)
        encoder = PyGEncoder(graph.num_features, family.raw_size, output_bias=True)
        log_scale = nn.Parameter(torch.zeros(()))
        modules, params = [encoder], [*encoder.parameters(), log_scale]
        state = {}

        def embed():
            q = family.posterior(encoder(graph.x, edge_index))  # the distribution classes themselves
            state["q"] = q
            return q.rsample(), q.loc

        def kl(z):
            return family.kl(state["q"], z).mean()

        def scale():
            return log_scale.exp()

    optimizer = torch.optim.Adam(params, lr=LR)
    val_pairs, val_labels = graph.eval_pairs("val")
    best, best_state = -math.inf, None
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        z, _ = embed()
        loss = dense_kipf_loss(scale() * z @ z.T, label, pos_weight, norm) + kl(z) / n
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            _, mu = embed()
            m = link_metrics(scale() * (mu[val_pairs[0]] * mu[val_pairs[1]]).sum(-1), val_labels)
            score = float(m["auc"] + m["ap"]) / 2
            if score > best:
                best, best_state = score, copy.deepcopy([p.detach().clone() for p in params])
    with torch.no_grad():
        for p, saved in zip(params, best_state):
            p.copy_(saved)
        for module in modules:
            module.eval()
        _, mu = embed()
        pairs, labels = graph.eval_pairs("test")
        m = link_metrics(scale() * (mu[pairs[0]] * mu[pairs[1]]).sum(-1), labels)
    return time.perf_counter() - start, {"test/auc": float(m["auc"]), "test/ap": float(m["ap"])}


def bare_hsvae_run(graph: LinkSplit, latent: str) -> tuple[float, dict]:
    """The same plain loop around the framework's own VGAE module."""
    torch.manual_seed(0)
    start = time.perf_counter()
    net = build_net(latent, graph.num_features)
    x = encoder_features(graph.x)
    adjacency = gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    val_pairs, val_labels = graph.eval_pairs("val")
    best, best_state = -math.inf, None
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        loss = net(x, adjacency, graph.train_pos).loss()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            z = net.embed(x, adjacency)
            m = link_metrics(net.logits(z, val_pairs), val_labels)
            score = float(m["auc"] + m["ap"]) / 2
            if score > best:
                best, best_state = score, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    with torch.no_grad():
        pairs, labels = graph.eval_pairs("test")
        m = link_metrics(net.logits(net.embed(x, adjacency), pairs), labels)
    return time.perf_counter() - start, {"test/auc": float(m["auc"]), "test/ap": float(m["ap"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("HSVAE_DATA_DIR", "data"))
    parser.add_argument("--cache-dir", default=os.environ.get("HSVAE_CACHE_DIR", ".cache"))
    parser.add_argument("--latents", nargs="+", default=LATENTS, choices=LATENTS)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant; the minimum is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    dm = PlanetoidLinkDataModule("cora", args.data_dir, args.cache_dir, download=False, seed=0)
    dm.setup()
    graph = dm.graph
    print(f"Cora: {graph.num_nodes} nodes, {graph.train_pos.shape[1]} training edges; {EPOCHS} epochs; "
          f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; min of {args.repeats} runs")
    header = (f"{'latent':<16}{'framework s':>12}{'bare PyG s':>12}{'bare hsvae s':>13}{'fw/PyG':>8}{'fw/hsvae':>9}"
              "   test AUC/AP (fw, PyG, hsvae)")
    print(header)
    for latent in args.latents:
        times = {"fw": [], "pyg": [], "hs": []}
        results = {}
        for _ in range(args.repeats):  # interleaved, so that load changes hit all three alike
            for key, run in (("fw", lambda: framework_run(dm, latent)), ("pyg", lambda: bare_pyg_run(graph, latent)),
                             ("hs", lambda: bare_hsvae_run(graph, latent))):
                seconds, metrics = run()
                times[key].append(seconds)
                results[key] = metrics
        fw, pyg, hs = (min(times[k]) for k in ("fw", "pyg", "hs"))
        scores = "  ".join(
            f"{100 * results[k]['test/auc']:.1f}/{100 * results[k]['test/ap']:.1f}" for k in ("fw", "pyg", "hs")
        )
        print(f"{latent:<16}{fw:>12.2f}{pyg:>12.2f}{hs:>13.2f}{fw / pyg:>8.2f}{fw / hs:>9.2f}   {scores}", flush=True)


if __name__ == "__main__":
    run_script(main)
