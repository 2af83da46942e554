"""The SMILES VAE: the Transformer's causal decoder and padding-blind encoder, generation, the metrics, a few
training steps on real ZINC250k molecules with each latent family, validity through RDKit (a stub here: RDKit
is optional) and without it, and checkpoints that carry their vocabulary."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from hsvae.utils.errors import ConfigError
from hsvae.cli.evaluate import evaluate
from hsvae.cli.train import train
from hsvae.data import SMILESDataModule
from hsvae.data.smiles import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from hsvae.evaluation import molecules
from hsvae.evaluation.molecules import RDKitMissingWarning, reconstruction_counts, sample_metrics
from hsvae.latents import GaussianLatent, PowerSphericalLatent, SphericalCauchyLatent, VonMisesFisherLatent
from hsvae.models import SMILESVAE
from hsvae.training import SMILESVAEModule
from tests.conftest import FAST, compose_config

ZINC = "zinc250k/250k_rndm_zinc_drugs_clean.smi.gz"
TINY = ["model.net.embed_dim=32", "model.net.num_heads=2", "model.net.num_layers=1", "model.net.ff_dim=64",
        "model.net.memory_tokens=2", "model.net.dropout=0.0"]


@pytest.fixture(scope="module")
def zinc(data_dir):
    """The first 3000 molecules of the real file, split 80/10/10."""
    dm = SMILESDataModule(data_dir / ZINC, max_molecules=3000, batch_size=64)
    dm.setup()
    return dm


def tiny(zinc, latent=None) -> SMILESVAE:
    torch.manual_seed(0)
    net = SMILESVAE(latent or GaussianLatent(4), zinc.tokenizer.vocab_size, zinc.max_length, embed_dim=32,
                    num_heads=2, num_layers=1, ff_dim=64, dropout=0.0, memory_tokens=2)
    return net.eval()


def batch(zinc, n=8, split="val"):
    x, y = zinc.splits[split].x[:n], zinc.splits[split].y[:n]
    return x[:, : int(y.max())].long()


def test_decoder_is_causal_and_log_prob_is_the_token_sum(zinc):
    net = tiny(zinc)
    tokens = batch(zinc)
    z = net.embed(tokens)
    logits = net.decode_logits(z, tokens[:, :-1])
    changed = tokens[:, :-1].clone()
    changed[:, 10:] = 5  # any other tokens after position 9
    again = net.decode_logits(z, changed)
    assert torch.allclose(logits[:, :10], again[:, :10], atol=1e-5) and not torch.allclose(logits[:, 10:], again[:, 10:])
    log_p, _ = net.reconstruction_log_prob(z, tokens)
    manual = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    manual = (manual * (tokens[:, 1:] != PAD_ID)).sum(1)
    assert torch.allclose(log_p, manual, atol=1e-4)


def test_encoder_ignores_padding(zinc):
    net = tiny(zinc)
    tokens = batch(zinc)
    padded = torch.nn.functional.pad(tokens, (0, 5), value=PAD_ID)
    assert torch.allclose(net.embed(tokens), net.embed(padded), atol=1e-5)


def test_generation_stops_at_eos_and_agrees_with_teacher_forcing(zinc):
    net = tiny(zinc)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = net.generate(z)
    assert out.shape[1] <= net.positions - 1
    assert not torch.isin(out, torch.tensor([BOS_ID, UNK_ID])).any()
    for row in out:
        ends = (row == EOS_ID).nonzero()
        if len(ends):
            first = int(ends[0])
            assert (row[first + 1 :] == PAD_ID).all() and not (row[:first] == PAD_ID).any()
    # greedy: each token is the argmax of the teacher-forced logits on its own prefix (banned tokens aside)
    prefix = torch.cat([torch.full((6, 1), BOS_ID), out[:, :-1]], 1)
    logits = net.decode_logits(z, prefix)
    logits[..., [PAD_ID, BOS_ID, UNK_ID]] = float("-inf")
    live = torch.cat([torch.ones(6, 1, dtype=torch.bool), (prefix[:, 1:] != EOS_ID).cumprod(1).bool()], 1)
    live &= prefix != PAD_ID
    assert torch.equal(logits.argmax(-1)[live], out[live])
    sampled = net.generate(z, greedy=False, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert sampled.shape[0] == 6


@pytest.mark.parametrize("latent", [GaussianLatent(6), VonMisesFisherLatent(6), SphericalCauchyLatent(6), PowerSphericalLatent(6)])
def test_every_latent_family_gives_finite_gradients(zinc, latent):
    net = tiny(zinc, latent).train()
    terms = net(batch(zinc, 16, "train"))
    assert terms.z.shape == (16, latent.event_size) and terms.reconstruction.shape == (16,)
    terms.loss(0.015).backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_model_input(zinc):
    with pytest.raises(ValueError, match="divisible"):
        SMILESVAE(GaussianLatent(2), 10, 20, embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="special ids"):
        SMILESVAE(GaussianLatent(2), 3, 20)
    net = tiny(zinc)
    with pytest.raises(ValueError, match="exceed"):
        net.posterior(torch.ones(2, net.positions + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4\)"):
        net.generate(torch.randn(2, 5))


def test_metric_definitions():
    pad = PAD_ID
    target = torch.tensor([[5, 6, EOS_ID, pad], [5, 7, 8, EOS_ID]])
    predicted = torch.tensor([[5, 6, EOS_ID], [5, 9, 8]])  # row 0 exact; row 1: 2 of 4 positions right
    assert reconstruction_counts(predicted, target, pad) == (5, 7, 1)
    assert reconstruction_counts(torch.tensor([[5, 6, 9, 9]]), target[:1], pad) == (2, 3, 0)  # no <eos>
    samples = ["CCO", "CCO", "C1CC", "c1ccccc1"]
    assert sample_metrics(samples, {"CCO"}) == {"unique": 0.75, "novel": 0.5}
    full = sample_metrics(samples, {"CCO"}, is_valid=lambda s: s.count("1") % 2 == 0)
    assert full == {"unique": 0.75, "novel": 0.5, "valid": 0.75, "unique_valid": 2 / 3, "novel_valid": 1 / 3}
    with pytest.raises(ValueError, match="at least one"):
        sample_metrics([], set())


def test_without_rdkit_validity_is_skipped_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)  # `import rdkit` raises ImportError
    with pytest.warns(RDKitMissingWarning, match="RDKit is not installed") as record:
        assert molecules.rdkit_validity() is None
    assert len(record) == 1 and "\n" not in str(record[0].message)
    evaluator = molecules.MoleculeMetrics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluator.validity_checker is None and evaluator.validity_checker is None
    assert sum(issubclass(w.category, RDKitMissingWarning) for w in caught) == 1


def stub_is_molecule(smiles: str) -> bool:
    """The stub's chemistry: balanced parentheses and brackets, and every ring label closed."""
    depth = 0
    for ch in smiles:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    digits = [c for c in smiles.replace("[", " ").replace("]", " ") if c.isdigit()]
    return bool(smiles) and depth == 0 and smiles.count("[") == smiles.count("]") and all(digits.count(d) % 2 == 0 for d in set(digits))


@pytest.fixture
def rdkit_stub(monkeypatch):
    rdkit, chem, rdlogger = (types.ModuleType(n) for n in ("rdkit", "rdkit.Chem", "rdkit.RDLogger"))
    chem.MolFromSmiles = lambda s: object() if stub_is_molecule(s) else None
    rdlogger.DisableLog = lambda *_: None
    rdkit.Chem, rdkit.RDLogger = chem, rdlogger
    for name, module in (("rdkit", rdkit), ("rdkit.Chem", chem), ("rdkit.RDLogger", rdlogger)):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.slow  # ~8 s of training on real molecules (the default tier stays under 3 minutes)
def test_training_on_real_molecules_with_validity(tmp_path, data_dir, rdkit_stub):
    """A tiny model, 40 steps on real training molecules: the reconstruction beats a uniform guess by far,
    every metric is computed, and the validity is the stub's verdict on the written samples."""
    run = tmp_path / "run"
    cfg = compose_config(
        "train",
        ["experiment=smiles", "variant=gaussian64", f"paths.data_dir={data_dir}", "dataset.max_molecules=3000",
         "dataset.batch_size=64", "dataset.eval_batch_size=300", "trainer.max_epochs=2", "+trainer.limit_train_batches=20", "model.warmup_epochs=1",
         "model.optimizer.lr=3e-3", "evaluation.molecules.n_samples=40", "evaluation.molecules.n_reconstructions=40", "evaluation.molecules.batch_size=20",
         "evaluation.molecules.every_n_epochs=2", *TINY, *FAST],
        run,
    )
    metrics = train(cfg)
    expected = {"val/elbo", "val/token_accuracy", "val/char_accuracy", "val/string_accuracy", "val/prior_valid",
                "test/elbo", "test/reconstruction", "test/kl", "test/token_accuracy", "test/char_accuracy",
                "test/string_accuracy", "test/prior_valid", "test/prior_unique", "test/prior_novel",
                "test/prior_unique_valid", "test/prior_novel_valid", "test/unknown_strings", "train/beta"}
    assert expected <= set(metrics), expected - set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in expected if "accuracy" in k or "prior" in k)
    assert metrics["train/beta"] == pytest.approx(0.015)
    # the checkpoint is selected by the objective trained for, reconstruction - final_beta KL, not the ELBO
    objective = metrics["test/reconstruction"] - 0.015 * metrics["test/kl"]
    assert metrics["test/objective"] == pytest.approx(objective, rel=1e-5)
    assert "val/objective" in metrics
    # a uniform guess over the vocabulary scores -(tokens after <bos>) log V per molecule
    dm = SMILESDataModule(data_dir / ZINC, max_molecules=3000)
    dm.setup()
    uniform = -((dm.splits["test"].y - 1).float().mean() * torch.tensor(float(dm.tokenizer.vocab_size)).log()).item()
    assert metrics["test/reconstruction"] > 0.75 * uniform, (metrics["test/reconstruction"], uniform)  # measured: 0.59x
    assert metrics["test/token_accuracy"] > 0.2  # measured 0.31; a uniform guess: 1 / V = 0.02
    samples = (run / "smiles_samples_test.txt").read_text().splitlines()
    assert len(samples) == 40
    assert metrics["test/prior_valid"] == pytest.approx(sum(map(stub_is_molecule, samples)) / 40)
    assert metrics["test/prior_unique"] == pytest.approx(len(set(samples)) / 40)
    # the checkpoint carries its vocabulary and is evaluated by eval.py with the same tokenisation
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    assert tuple(ckpt["smiles_vocabulary"]) == dm.tokenizer.tokens and ckpt["smiles_max_length"] == dm.max_length
    monitors = [state["monitor"] for key, state in ckpt["callbacks"].items() if key.startswith("ModelCheckpoint")]
    assert sorted(monitors, key=str) == [None, "val/objective"]  # last.ckpt (no monitor) and best.ckpt
    assert (run / ".hydra" / "config.yaml").is_file()  # train() saved the config eval.py reads
    evaluated = evaluate(compose_config("eval", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}"], tmp_path / "eval"))
    assert evaluated["test/token_accuracy"] == pytest.approx(metrics["test/token_accuracy"], abs=0.02)
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]["test/prior_valid"] >= 0
    # a checkpoint of another vocabulary is refused
    module = SMILESVAEModule(net=torch.nn.Linear(1, 1), optimizer=torch.optim.Adam)
    module.tokenizer = dm.tokenizer
    with pytest.raises(ValueError, match="vocabulary"):
        module.on_load_checkpoint({**ckpt, "smiles_vocabulary": [*ckpt["smiles_vocabulary"][:-1], "[Xe]"]})


def test_smiles_model_refuses_other_datasets(compose_train):
    cfg = compose_train(["model=smiles_vae", "dataset=mnist", "evaluation=[]", *FAST])
    with pytest.raises(ValueError, match=r"model=smiles_vae trains on a SMILES data module \(dataset=zinc250k\); "
                                         r"got MNISTDataModule"):
        train(cfg)
    # the molecules evaluator on another dataset: one line naming its key, before anything is trained
    cfg = compose_train(["dataset=mnist", "evaluation=[molecules]", *FAST], "other")
    with pytest.raises(ConfigError, match=r"^evaluation.molecules \(MoleculeMetrics\) needs SMILES strings "
                                          r"\(dataset=zinc250k\).*MNISTDataModule with VAEModule does not provide "
                                          r"SMILESCorpus, Generates: drop molecules from evaluation=\[...\]"):
        train(cfg)


def test_reconstruction_metrics_decode_exactly_the_first_n_strings(zinc, monkeypatch):
    """n_reconstructions not a multiple of the decoding batch size: the last batch stops at the n-th string (it once
    took a whole batch, and exact / n could exceed 1). Here a decoder that returns each target gives 1.0."""
    from types import SimpleNamespace

    evaluator = molecules.MoleculeMetrics(n_samples=0, n_reconstructions=7, batch_size=5)
    evaluator.setup(zinc)
    module = SimpleNamespace(net=tiny(zinc), device=torch.device("cpu"))
    decoded_rows = []

    def generate(z, on_step=None, **kwargs):
        decoded_rows.append(z.shape[0])
        return current["batch"][:, 1:]

    current = {}
    embed = module.net.embed
    monkeypatch.setattr(module.net, "embed", lambda batch: (current.update(batch=batch), embed(batch))[1])
    monkeypatch.setattr(module.net, "generate", generate)
    trainer = SimpleNamespace(fast_dev_run=False, default_root_dir=None, is_global_zero=True)
    monkeypatch.setattr(molecules, "PhaseProgress", lambda *args, **kwargs: __import__(
        "contextlib").nullcontext(SimpleNamespace(stepper=lambda done, rows: None)))
    metrics = evaluator.decoding_metrics(trainer, module, "val")
    assert decoded_rows == [5, 2]
    assert metrics["val/string_accuracy"] == 1.0 and metrics["val/char_accuracy"] == 1.0
