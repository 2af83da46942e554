"""The stack (hsvae.stack, issue 25): K runs of one task as one computation, on the unchanged task and model.

Exact where nothing is random: member i of a stack, run alone on fixed noise, gives its model's loss, and the
members' rows as one batch run each member's networks on its own rows. Statistical where the noise is: the members'
metrics are distributed as their separate runs'. Through the CLI: ``seeds=[0,1,2]`` writes three runs that
make_tables and eval.py read as runs.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from scipy import stats

from hsvae.cli.registry import build_latent, latent_families
from hsvae.models import VAE, BernoulliLikelihood, MLPDecoder, MLPEncoder
from hsvae.stack import MemberSplit, StackedTask
from hsvae.training import VAEModule
from tests.conftest import FAST

PIXELS, BATCH = 64, 16


@pytest.fixture(autouse=True)
def no_validation(monkeypatch):
    # as in training (validate_distributions=false)
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", False)


def _task(latent: str, seed: int, hidden: int = 32) -> VAEModule:
    """A member's task, built as its separate run builds it after seeding."""
    torch.manual_seed(seed)
    net = VAE(MLPEncoder(PIXELS, [hidden]), functools.partial(MLPDecoder, out_features=PIXELS, hidden=[hidden]),
              build_latent(latent, 3), BernoulliLikelihood())
    return VAEModule(net, functools.partial(torch.optim.Adam, lr=1e-2))


@pytest.mark.parametrize("latent", latent_families())
def test_a_members_loss_on_fixed_noise_is_its_models_loss(latent):
    """Member i alone (its stacked parameters, its batch, the noise of a fixed seed) gives exactly the loss and the
    gradient of the unchanged model holding member i's parameters; the members' rows as one batch run member i's
    networks on its rows (the deterministic part: the posterior's parameters)."""
    tasks = [_task(latent, seed) for seed in (0, 1, 2)]
    stack = StackedTask(tasks)
    x = torch.bernoulli(torch.rand(3, BATCH, PIXELS, generator=torch.Generator().manual_seed(5)))
    for i, task in enumerate(tasks):
        torch.manual_seed(11)
        expected = task.net(x[i]).loss()
        expected.backward()
        torch.manual_seed(11)
        with stack.only(i):
            got = stack.task.net(x[i]).loss()
        assert torch.equal(got, expected)
        got.backward()
        for name, value in task.net.encoder.named_parameters():
            assert torch.equal(stack.splits["encoder"].stacked()[name].grad[i], value.grad), name
    rows = stack.task.net.posterior_params(x.flatten(0, 1)).unflatten(0, (3, BATCH))
    for i, task in enumerate(tasks):
        torch.testing.assert_close(rows[i], task.net.posterior_params(x[i]), rtol=1e-5, atol=1e-6)
    for i, task in enumerate(tasks):  # member i's state is its model's
        assert all(torch.equal(stack.member_state(i)[k], v) for k, v in task.net.state_dict().items()
                   if k in stack.member_state(i))


def test_the_stacked_loss_is_k_times_the_rows_mean_and_members_must_match():
    tasks = [_task("gaussian", seed) for seed in (0, 1)]
    stack = StackedTask(tasks)
    assert sum(p.numel() for p in stack.parameters()) == sum(p.numel() for t in tasks for p in t.parameters())
    with pytest.raises(ValueError, match="member 1 is not built like member 0"):
        StackedTask([tasks[0], _task("gaussian", 1, hidden=16)])
    with pytest.raises(ValueError, match="^tasks: the scheduler .* is no torch.optim.lr_scheduler class"):
        StackedTask([VAEModule(tasks[0].net, tasks[0].optimizer_factory, scheduler=lambda optimizer: None)])
    with pytest.raises(ValueError, match="K \\* B"):
        stack.splits["encoder"](torch.zeros(3, PIXELS))
    assert isinstance(stack.task.net.decoder, MemberSplit)


def _fit(task, batches: torch.Tensor) -> None:
    """Adam steps of the task's own training step (``batches``: ``(steps, B, ...)``, or ``(steps, K, B, ...)``
    for a stack), binarised dynamically, with nothing else of a run."""
    optimizer = task.configure_optimizers()
    for step, images in enumerate(batches):
        batch = (torch.bernoulli(images), torch.zeros(images.shape[:-1]))
        if isinstance(task, StackedTask):  # (a stack's batch: the list of its members')
            batch = [tuple(part[i] for part in batch) for i in range(task.k)]
        loss = task.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _elbo(net, images: torch.Tensor, draws: int = 10) -> float:
    with torch.no_grad():
        return float(torch.stack([net(images).elbo().mean() for _ in range(draws)]).mean())


#: stacks of 3 seeds, against the same seeds' separate runs
STACKS, K = 10, 3


def test_a_stack_of_three_seeds_is_distributed_as_the_separate_runs():
    """Member i of a stack and the separate run with its seed share their initialisation and data; they differ in
    their noise (the stack draws every member's from one stream). After 20 Adam steps of a vMF VAE, the paired
    differences of the held-out ELBO of 10 stacks of 3 seeds (n = 30) and of their separate runs must not differ
    from 0 by a paired t-test at alpha = 0.01. Its power: a systematic shift of 0.7 of the differences' standard
    deviation (an error of the stacked step) is found with probability 0.83 (noncentral t, n = 30, at alpha = 0.01;
    checked below), and the test also fails if the members
    equal their separate runs to float rounding (a stack that reuses one member's noise would)."""
    steps, batch = 20, 32
    data = torch.rand(STACKS * K, steps, batch, PIXELS, generator=torch.Generator().manual_seed(1))
    held_out = torch.bernoulli(torch.rand(256, PIXELS, generator=torch.Generator().manual_seed(2)))
    stacked, separate = [], []
    for s in range(STACKS):
        seeds = [K * s + i for i in range(K)]
        tasks = [_task("vmf", seed) for seed in seeds]
        stack = StackedTask(tasks)
        torch.manual_seed(1000 + s)
        _fit(stack, data[seeds].transpose(0, 1))  # (steps, K, B, ...)
        for i, seed in enumerate(seeds):
            with stack.only(i):
                stacked.append(_elbo(stack.task.net, held_out))
            torch.manual_seed(2000 + seed)
            _fit(tasks[i], data[seed])
            separate.append(_elbo(tasks[i].net, held_out))
    differences = torch.tensor(stacked) - torch.tensor(separate)
    n, alpha = len(differences), 0.01
    power = 1 - stats.nct.cdf(stats.t.ppf(1 - alpha / 2, n - 1), n - 1, 0.7 * math.sqrt(n))
    assert power > 0.8
    assert stats.ttest_1samp(differences.numpy(), 0.0).pvalue > alpha, differences
    assert differences.abs().max() > 1e-4  # the noise is the stack's own


def _train_args(tmp_path, name: str, extra: list[str]) -> list[str]:
    return ["dataset.n_train=400", "trainer.max_epochs=2", "evaluation.ll.samples=5", "logger=csv", *FAST, *extra]


def test_seeds_writes_one_run_per_member_that_tables_and_eval_read(compose_train, tmp_path):
    """``seeds=[0,1,2]``: three run folders, each with its config (``seed: s``), its results.json with a separate
    run's keys, its CSV log (every epoch, then the test) and a best.ckpt that eval.py tests to the same numbers;
    make_tables counts them as three runs."""
    import csv

    from hsvae.analysis.tables import find_jobs
    from hsvae.cli.evaluate import evaluate
    from hsvae.cli.train import train
    from tests.conftest import compose_config

    mean = train(compose_train(_train_args(tmp_path, "stack", ["seeds=[0,1,2]"]), "stack"))
    separate = train(compose_train(_train_args(tmp_path, "one", ["seed=1"]), "one"))
    members = {s: json.loads((tmp_path / "stack" / f"seed_{s}" / "results.json").read_text()) for s in (0, 1, 2)}
    for seed, results in members.items():
        assert results["seed"] == seed and results["config"]["seed"] == seed
        # a separate run's keys, its train/ metrics as the stack's (stack/train/...): none is the member's own;
        # and its best epoch's record
        keys = {f"stack/{k}" if k.startswith("train/") else k for k in separate}
        assert keys <= set(results["metrics"]) and all(k.startswith("best/") for k in set(results["metrics"]) - keys)
        assert results["metrics"]["best/epoch"] == results["stack"]["best_epoch"]
        rows = list(csv.DictReader((tmp_path / "stack" / f"seed_{seed}" / "csv" / "metrics.csv").open()))
        assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[-1]["test/elbo"]
    assert members[0]["metrics"]["test/elbo"] != members[1]["metrics"]["test/elbo"]
    assert mean["test/elbo"] == pytest.approx(sum(m["metrics"]["test/elbo"] for m in members.values()) / 3)
    jobs = find_jobs([tmp_path / "stack"])
    assert sorted(j.results["seed"] for j in jobs) == [0, 1, 2] and all(j.problem is None for j in jobs)
    checkpoint = tmp_path / "stack" / "seed_2" / "checkpoints" / "best.ckpt"
    evaluated = evaluate(compose_config("eval", [f"ckpt_path={checkpoint}", *FAST[1:]], tmp_path / "eval"))
    assert evaluated["test/elbo"] == pytest.approx(members[2]["metrics"]["test/elbo"], rel=1e-6)


def test_a_task_that_builds_its_network_in_setup_is_refused_in_one_line(compose_train, data_dir):
    from hsvae.cli.train import train
    from hsvae.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^seeds=\[\.\.\.\]: model hsvae\.training\.SMILESVAEModule does not "
                                          r"stack \(tasks: SMILESVAEModule builds its network from the data"):
        train(compose_train(["experiment=smiles", "seeds=[0,1]", f"paths.data_dir={data_dir}", *FAST], "smiles"))


@pytest.mark.parametrize("overrides, message", [
    (["seeds=[0,0]"], r"^seeds must be a list of distinct integers"),
    (["seeds=[0,1]", "latent.prior=vmf"], r"^latent\.prior=vmf: the members of a stack share one latent family"),
    (["seeds=[0,1]", "compile=true"], r"^compile: a stack runs eager"),
    (["seeds=[0,1]", "ckpt_path=last.ckpt"], r"^ckpt_path: resuming a stack from a checkpoint is not supported"),
    (["seeds=[0,1]", "+model.scheduler._target_=hsvae.Nope"], r"^model\.scheduler\._target_=hsvae\.Nope: a stack "),
])
def test_what_a_stack_does_not_support_is_refused_by_key(compose_train, overrides, message):
    from hsvae.cli.stack_runs import check_stackable, stack_seeds
    from hsvae.utils.errors import ConfigError

    cfg = compose_train(overrides)
    with pytest.raises(ConfigError, match=message):
        stack_seeds(cfg)
        check_stackable(cfg)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                 reason="needs a CUDA device"))])
def test_the_stacked_step_on_a_cuda_device_never_waits(device):
    """The stacked step (forward with every member's draws in one call, backward, Adam) reads nothing back to the
    host (``set_sync_debug_mode("error")``), and member i alone on fixed noise is its model on the device."""
    tasks = [_task("vmf", seed).to(device) for seed in (0, 1, 2)]
    stack = StackedTask(tasks).to(device)
    x = torch.bernoulli(torch.rand(2, 3, BATCH, PIXELS, device=device))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _fit(stack, x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    tasks[1].net.load_state_dict(stack.member_state(1), strict=False)
    torch.manual_seed(3)
    expected = tasks[1].net(x[0, 1]).loss()
    torch.manual_seed(3)
    with stack.only(1):
        assert torch.equal(stack.task.net(x[0, 1]).loss(), expected)


def test_an_interrupted_stack_continues_where_it_stopped(compose_train, tmp_path, monkeypatch):
    """Ctrl-C in epoch 2 of a 4-epoch stack, then the same command again: it continues from the stack's last
    epoch (parameters, Adam, each member's selection, early stopping and history), each epoch is logged once in
    each member's log, and the interruption's record is gone."""
    import csv

    from hsvae.cli.train import train
    from hsvae.stack import MemberSelection

    common = _train_args(tmp_path, "stack", ["trainer.max_epochs=4", "seeds=[0,2]"])

    def interrupt(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(MemberSelection, "on_train_batch_start", interrupt, raising=False)
    with pytest.raises(KeyboardInterrupt):
        train(compose_train(common, "stack"))
    record = json.loads((tmp_path / "stack" / "results.json").read_text())
    assert record["status"] == "interrupted" and not (tmp_path / "stack" / "seed_0" / "results.json").exists()
    monkeypatch.undo()
    train(compose_train(common, "stack"))
    assert not (tmp_path / "stack" / "results.json").exists()
    for seed in (0, 2):
        results = json.loads((tmp_path / "stack" / f"seed_{seed}" / "results.json").read_text())
        assert results["epochs"] == 4 and math.isfinite(results["metrics"]["test/elbo"])
        rows = list(csv.DictReader((tmp_path / "stack" / f"seed_{seed}" / "csv" / "metrics.csv").open()))
        assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]


def test_each_member_is_selected_and_stopped_on_its_own_metric():
    """Member 0 improves every epoch; member 1 peaks at epoch 1 and stops after the run's patience (2) through its
    own EarlyStopping; the fit ends once both have stopped, member 0 at its own patience after its plateau."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import EarlyStopping

    from hsvae.stack import MemberSelection

    selection = MemberSelection(2, "val/elbo", "max", lambda: EarlyStopping("val/elbo", mode="max", patience=2))
    scores = [(-10.0, -9.0), (-9.0, -8.0), (-8.0, -8.5), (-7.0, -8.2), (-7.0, -7.0), (-7.5, -6.0)]
    trainer = SimpleNamespace(global_step=0, current_epoch=0, callback_metrics={}, should_stop=False)
    for epoch, (a, b) in enumerate(scores):
        trainer.current_epoch = epoch
        stack = SimpleNamespace(member_metrics={"val/elbo": torch.tensor([a, b])},
                                member_state=lambda i, e=epoch: {"w": torch.tensor([float(e)])})
        selection.on_train_epoch_end(trainer, stack)
        if trainer.should_stop:
            break
    assert selection.best_epochs == [3, 1] and selection.best_scores == [-7.0, -8.0]
    assert selection.stopped == [True, True] and epoch == 5  # member 1 stopped at epoch 3, member 0 at epoch 5
    assert selection.best_states[1]["w"].item() == 1.0 and len(selection.rows[0]) == 6
    with pytest.raises(ValueError, match="mode"):
        MemberSelection(2, "val/elbo", "best")
