"""The command line as a user meets it: ``python train.py ...`` and ``python eval.py ...`` in a fresh working
directory, with no ``hydra.run.dir`` / ``hydra.sweep.dir`` given (outputs go to ``./logs`` of that directory).

Covers: a multirun from the defaults; resume by ``ckpt_path`` alone (same directory, one continuous metrics.csv);
resuming a finished run (exit 0, nothing written); a refused run that leaves the run it was refused to overwrite
byte-identical; the table of bad inputs, each one line naming the key or file, no traceback, the documented exit
code, and a failed-run record where the run owned its directory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: size-reducing overrides of the synthetic default
SMALL = ["dataset.n_train=640", "trainer.max_epochs=1", "evaluation.ll.samples=2", "callbacks.progress_bar=null",
         "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
MNIST_SMALL = ["+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
               "evaluation=[ll]", "evaluation.ll.samples=2", "callbacks.progress_bar=null",
               "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


def run(script: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python <repo>/<script> args`` in ``cwd``, as a user types it (the tests' own package on the path)."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def only_run_dir(cwd: Path, task: str = "train") -> Path:
    runs = sorted((cwd / "logs" / task / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def tree_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str,
                          multirun: bool = False) -> str:
    """Exit ``code``; stderr's error is one line starting with ``error:`` that contains every fragment, and no
    traceback. A single run has no Hydra "Error executing job" line; a multirun has one per failed job (it names
    the job's overrides, which is what a user needs to tell the jobs apart)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("Error executing job with overrides") == (1 if multirun else 0), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def assert_failure_recorded(run_dir: Path, fragment: str, code: int) -> None:
    """A failed run's directory holds results.json with status "failed", the reason and the exit code, and its log
    file holds the message and the traceback."""
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and fragment in record["reason"] and record["exit_code"] == code, record
    log = next(run_dir.glob("*.log")).read_text()
    assert fragment in log and "Traceback" in log


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished synthetic run made by ``python train.py`` in a fresh directory."""
    cwd = tmp_path_factory.mktemp("finished")
    proc = run("train.py", ["latent=gaussian", *SMALL], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_run_dir(cwd)


# -- multirun ------------------------------------------------------------------------------------------


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_multirun_from_the_defaults(tmp_path):
    """No hydra.sweep.dir: the sweep goes to ./logs/<task>/multiruns/<date>/<job> of the working directory."""
    proc = run("train.py", ["-m", "latent=gaussian,vmf", *SMALL], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    for job, latent in (("0", "gaussian"), ("1", "vmf")):
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["status"] == "finished"
        assert f"latent={latent}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # (a multirun in subprocesses, ~7 s: the default tier stays under 3 minutes)
def test_multirun_with_a_failing_job_runs_the_rest_and_says_so(tmp_path):
    proc = run("train.py", ["-m", "latent.dim=0,2", *SMALL], tmp_path)
    assert_one_line_error(proc, 2, "latent.dim", multirun=True)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert "1 of 2 jobs finished; not finished: 0" in proc.stderr
    assert_failure_recorded(sweep / "0", "latent.dim", 2)
    assert json.loads((sweep / "1" / "results.json").read_text())["status"] == "finished"


@pytest.mark.data
@pytest.mark.slow  # ~8 s; the default tier keeps an MNIST and a synthetic run of the CLI
def test_a_tiny_smiles_run_exits_0(tmp_path, data_dir):
    """dataset=zinc250k selects its checkpoint by val/objective; the run reports best/val_objective and exits 0."""
    proc = run("train.py", ["dataset=zinc250k", "dataset.max_molecules=300", "dataset.batch_size=64",
                            "trainer.max_epochs=1", "model.net.embed_dim=32", "model.net.num_layers=1",
                            "model.net.ff_dim=64", "evaluation.molecules.n_samples=8", "evaluation.molecules.n_reconstructions=8",
                            "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"],
               tmp_path, env={"HSVAE_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
    assert results["status"] == "finished" and "best/val_objective" in results["metrics"]


# -- resume --------------------------------------------------------------------------------------------


def epochs_in(metrics_csv: Path) -> list[int]:
    """The epochs of the rows that carry a validation ELBO (one per epoch)."""
    with metrics_csv.open() as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f) if row.get("val/elbo")]


@pytest.mark.data
@pytest.mark.slow  # ~17 s (an interrupted and a resumed run); the default tier resumes in-process (test_train.py)
def test_resume_by_ckpt_path_alone_continues_the_mnist_run(tmp_path, data_dir):
    """An MNIST-config run interrupted (as by Ctrl-C) in epoch 2 is resumed by ``ckpt_path=...`` alone: the run's
    own config is restored (not the synthetic default), it continues in its own directory, and metrics.csv holds
    epochs 0..3 once each."""
    interrupt = ["+callbacks.interrupt._target_=tests.support.interrupt.InterruptAt", "+callbacks.interrupt.epoch=2"]
    first = run("train.py", ["dataset=mnist", "latent=vmf", "latent.dim=3", "trainer.max_epochs=4", *MNIST_SMALL,
                             *interrupt], tmp_path, env={"HSVAE_DATA_DIR": str(data_dir)})
    assert_one_line_error(first, 130, "interrupted", "ckpt_path=")
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert epochs_in(run_dir / "csv" / "metrics.csv") == [0, 1]

    last = run_dir / "checkpoints" / "last.ckpt"
    # the interrupting callback is part of the run's config; the new value wins over the run's own
    second = run("train.py", [f"ckpt_path={last}", "callbacks.interrupt.epoch=-1"], tmp_path,
                 env={"HSVAE_DATA_DIR": str(data_dir)})
    assert second.returncode == 0, second.stderr[-3000:]
    assert only_run_dir(tmp_path) == run_dir  # no second directory
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 4
    assert results["config"]["dataset"]["_target_"].endswith("MNISTDataModule")
    assert results["config"]["latent"]["dim"] == 3
    assert epochs_in(run_dir / "csv" / "metrics.csv") == [0, 1, 2, 3]


@pytest.mark.slow  # ~25 s: three loggers, W&B's offline service started twice
def test_resume_keeps_every_loggers_history(tmp_path):
    """logger=many_loggers (CSV, TensorBoard, W&B offline), interrupted in epoch 1 and resumed by ckpt_path: one
    W&B run id across both parts, both parts' TensorBoard event files in the run's one folder, CSV epochs once
    each."""
    interrupt = ["+callbacks.interrupt._target_=tests.support.interrupt.InterruptAt", "+callbacks.interrupt.epoch=1"]
    small = [s for s in SMALL if not s.startswith("trainer.max_epochs")]
    first = run("train.py", ["logger=many_loggers", "trainer.max_epochs=3", *small, *interrupt], tmp_path,
                env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert first.returncode == 130, first.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    second = run("train.py", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "callbacks.interrupt.epoch=-1"],
                 tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert second.returncode == 0, second.stderr[-3000:]
    assert only_run_dir(tmp_path) == run_dir
    assert epochs_in(run_dir / "csv" / "metrics.csv") == [0, 1, 2]
    wandb_ids = {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(wandb_ids) == 1 and len(list((run_dir / "wandb").glob("offline-run-*"))) == 2, wandb_ids
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))  # ...<time>.<host>.<pid>.<n>
    assert {e.parent for e in events} == {run_dir / "tensorboard"}
    assert len({e.name.split(".")[-2] for e in events}) == 2, events  # written by both processes


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_the_banner_of_a_real_run_names_its_sources(finished_run):
    """Inside the Hydra app the config has no Hydra node: the banner's "set by" lines come from the job's own."""
    log = (finished_run / "train.log").read_text()
    assert "  set by     model=mlp_vae (default of train.yaml)" in log
    assert "latent.dim=2 (from latent=gaussian)" in log and "trainer.max_epochs=1 (command line)" in log
    assert "callbacks.early_stopping.patience=5 (from task=svae_synthetic, via dataset=synthetic)" in log


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_resuming_a_finished_run_exits_0_and_writes_nothing(finished_run, tmp_path):
    before = tree_hashes(finished_run)
    proc = run("train.py", [f"ckpt_path={finished_run / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished" in proc.stderr
    assert tree_hashes(finished_run) == before
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_a_refused_run_leaves_the_finished_run_byte_identical(finished_run, tmp_path):
    before = tree_hashes(finished_run)
    proc = run("train.py", [f"hydra.run.dir={finished_run}", "latent=gaussian", "latent.dim=7"], tmp_path)
    assert_one_line_error(proc, 2, str(finished_run), "already holds a run", "allow_overwrite")
    assert tree_hashes(finished_run) == before


@pytest.mark.slow
def test_a_resume_that_cannot_load_is_refused_by_name(finished_run, tmp_path):
    """A checkpoint moved out of its run directory is used with the command line's config; a config whose model
    does not fit it is refused, naming the parameter."""
    moved = tmp_path / "elsewhere.ckpt"
    shutil.copy(finished_run / "checkpoints" / "last.ckpt", moved)
    proc = run("train.py", [f"ckpt_path={moved}", "latent=gaussian", "latent.dim=7", *SMALL], tmp_path)
    assert_one_line_error(proc, 1, "does not fit", "in the checkpoint but")
    assert_failure_recorded(only_run_dir(tmp_path), "does not fit", 1)


# -- bad input -------------------------------------------------------------------------------------------


def _not_a_checkpoint(tmp: Path) -> Path:
    path = tmp / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path


def _torch_file_without_state(tmp: Path) -> Path:
    path = tmp / "weights.ckpt"
    torch.save({"weights": torch.zeros(3)}, path)
    return path


def shrink(args: list[str]) -> list[str]:
    """The SMALL overrides that neither set a key the case sets nor belong to the synthetic dataset (or its task's
    evaluators) when the case picks another (they would fail before the case's own error is reached)."""
    keys = {a.split("=", 1)[0].lstrip("+") for a in args}
    other_dataset = "dataset" in keys
    return [s for s in SMALL if s.split("=", 1)[0].lstrip("+") not in keys
            and not (other_dataset and s.startswith(("dataset.", "model.", "evaluation.")))]


#: (id, train.py arguments, exit code, fragments of the one-line message, whether a failed run is recorded)
BAD_TRAIN_INPUTS = [
    ("latent.dim=0", ["latent.dim=0"], 2, ["latent.dim", "got 0"], True),
    ("latent.dim=abc", ["latent.dim=abc"], 2, ["latent.dim", "'abc'"], True),
    ("seed=abc", ["seed=abc"], 2, ["seed must be an integer", "'abc'"], True),
    ("latent=vfm", ["latent=vfm"], 2, ["latent/vfm", "vmf", "spcauchy"], False),
    ("max_epochs=0", ["trainer.max_epochs=0"], 2, ["trainer.max_epochs", "got 0"], True),
    ("unknown key", ["foo=3"], 2, ["foo", "+foo=3"], False),
    ("negative lr", ["model.optimizer.lr=-1"], 2, ["model.optimizer.lr"], True),
    ("negative batch", ["dataset.batch_size=-3"], 2, ["dataset.batch_size"], True),
    ("eval_samples=-1", ["evaluation.ll.samples=-1"], 2, ["evaluation.ll.samples"], True),
    ("missing ckpt", ["ckpt_path=/nonexistent/last.ckpt"], 2, ["ckpt_path=/nonexistent/last.ckpt", "does not exist"],
     True),
    ("text as ckpt", [_not_a_checkpoint], 1, ["not a readable checkpoint", "notes.ckpt"], True),
    ("torch file as ckpt", [_torch_file_without_state], 1, ["not a Lightning checkpoint", "weights.ckpt"], True),
    ("gpu without one", ["trainer=gpu"], 2, ["trainer.accelerator=gpu", "trainer=cpu"], True),
    ("unknown logger", ["logger=nope"], 2, ["logger/nope"], False),
    ("bad graph name", ["dataset=cora", "dataset.name=reddit"], 2, ["dataset.name", "reddit"], True),
]


#: the cases of the default tier (one of each kind: composition, a value, a checkpoint); the rest run in the slow
#: tier (each case is a python process of ~5 s, most of it importing Lightning)
DEFAULT_TIER_CASES = ("latent.dim=abc",)


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0], marks=() if c[0] in DEFAULT_TIER_CASES else pytest.mark.slow)
                                  for c in BAD_TRAIN_INPUTS])
def test_bad_train_input_is_one_line(case, tmp_path):
    _, args, code, fragments, recorded = case
    if case[0] == "gpu without one" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = [f"ckpt_path={a(tmp_path)}" if callable(a) else a for a in args]
    proc = run("train.py", [*shrink(args), *args], tmp_path)
    assert_one_line_error(proc, code, *fragments)
    runs = tmp_path / "logs" / "train" / "runs"
    if recorded:
        assert_failure_recorded(only_run_dir(tmp_path), fragments[0], code)
    else:  # refused while composing: no run directory was made
        assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_missing_mnist_is_one_line_naming_the_folder(tmp_path):
    proc = run("train.py", ["dataset=mnist", f"paths.data_dir={tmp_path / 'nowhere'}", "dataset.download=false",
                            *MNIST_SMALL], tmp_path)
    assert_one_line_error(proc, 1, "MNIST not found in", str(tmp_path / "nowhere"), "HSVAE_DATA_DIR")
    assert_failure_recorded(only_run_dir(tmp_path), "MNIST not found", 1)


@pytest.mark.slow
@pytest.mark.data
def test_corrupt_mnist_header_names_the_file(tmp_path, data_dir):
    copy = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", copy)
    target = copy / "t10k-labels-idx1-ubyte"
    raw = bytearray(target.read_bytes())
    raw[0:4] = (0x0BAD).to_bytes(4, "big")
    target.write_bytes(bytes(raw))
    proc = run("train.py", ["dataset=mnist", f"paths.data_dir={tmp_path / 'data'}", "dataset.download=false",
                            *MNIST_SMALL], tmp_path)
    assert_one_line_error(proc, 1, str(target), "not an intact MNIST idx file")


@pytest.mark.slow
def test_eval_bad_inputs(finished_run, tmp_path):
    """eval.py: no checkpoint given (2), a file that is no checkpoint (1, named as such rather than as a missing
    config), a checkpoint moved away from its run's config (2, naming train_config)."""
    assert_one_line_error(run("eval.py", [], tmp_path), 2, "ckpt_path")
    assert_one_line_error(run("eval.py", [f"ckpt_path={_not_a_checkpoint(tmp_path)}"], tmp_path), 1,
                          "not a readable checkpoint")
    moved = tmp_path / "moved" / "best.ckpt"
    moved.parent.mkdir()
    shutil.copy(finished_run / "checkpoints" / "best.ckpt", moved)
    assert_one_line_error(run("eval.py", [f"ckpt_path={moved}"], tmp_path), 2, "train_config=")


@pytest.mark.slow
def test_verbose_shows_the_traceback(tmp_path):
    proc = run("train.py", ["latent.dim=0", *SMALL], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "error: latent.dim" in proc.stderr


#: lines that tell a user nothing about their run (hsvae/cli/entry_points.py keeps them in the run's log file)
NOISE = ("litlogger", "litmodels", "LeafSpec", "callbacks used to create the checkpoint", "GPU available",
         "The dirpath has changed")


@pytest.mark.slow  # (an eval.py subprocess)
def test_what_eval_prints_is_ours_and_the_libraries_notices_go_to_its_log(finished_run, tmp_path):
    proc = run("eval.py", [f"ckpt_path={finished_run / 'checkpoints' / 'best.ckpt'}",
                           f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert not [fragment for fragment in NOISE if fragment in console], console[-3000:]
    assert "test/log_likelihood" in console  # the results are still printed
    log = (tmp_path / "eval" / "eval.log").read_text()
    assert "GPU available" in log  # what the console drops, the log keeps


def test_a_config_error_is_classified_without_importing_the_run_s_libraries():
    """A typo's one line comes before torch and Lightning are imported (scripts/bench_cli_errors.py times it)."""
    code = ("import sys; sys.argv = ['train.py', 'latent=vfm']\n"
            "from hsvae.cli.entry_points import train_main\n"
            "try:\n    train_main()\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = [m for m in ('torch', 'pytorch_lightning', 'optuna') if m in sys.modules]\n"
            "print(code, heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "2 []", proc.stdout + proc.stderr[-2000:]
    assert "Could not find 'latent/vfm'" in proc.stderr
