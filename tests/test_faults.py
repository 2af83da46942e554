"""Faults at any moment: real signals delivered in each phase of a run (issue 23).

Each case runs ``python train.py`` as a user does, in a subprocess that sends itself the signal as it enters the
phase (``HSVAE_FAULT_SIGNAL=<signal>@<phase>``, hsvae/cli/signals.py): a real signal, at a deterministic point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["latent=vmf", "trainer.max_epochs=2", "dataset.n_train=320", "evaluation.ll.samples=5",
         "callbacks.progress_bar=null", "callbacks.early_stopping=null"]
#: phase (as the run names it) -> (a record is written, a checkpoint exists)
PHASES = {
    "composing the config": (False, False),
    "checking the output folder": (False, False),  # not this run's folder yet: nothing written there
    "setting up the run": (True, False),
    "loading the data": (True, False),
    "training (epoch 1)": (True, True),
    "validating (epoch 1)": (True, True),
    "testing": (True, True),
    "writing the results": (True, True),
}


def train(run_dir: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HSVAE_FAULT_SIGNAL", None)
    if fault:
        env["HSVAE_FAULT_SIGNAL"] = fault
    return subprocess.run([sys.executable, "train.py", *SMALL, f"hydra.run.dir={run_dir}", *extra], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def check_interrupted(proc: subprocess.CompletedProcess, run_dir: Path, name: str, phase: str) -> None:
    recorded, trained = PHASES[phase]
    assert proc.returncode == 128 + getattr(signal, name), proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"interrupted by {name}" in lines[0] and f"while {phase}" in lines[0], lines[0]
    if recorded:
        record = results(run_dir)
        assert (record["status"], record["signal"], record["phase"]) == ("interrupted", name, phase)
        assert record["exit_code"] == 128 + getattr(signal, name)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() == trained


def check_continued(run_dir: Path, reference: dict) -> None:
    """The same command again finishes the run: the uninterrupted run's numbers."""
    again = train(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert results(run_dir)["status"] == "finished"
    assert results(run_dir)["metrics"] == reference["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results(run_dir)


@pytest.mark.slow  # three subprocess runs (the default tier stays under 3 minutes)
def test_sigterm_in_the_test_stage_is_recorded_and_the_same_command_finishes_the_run(tmp_path, reference):
    """What SLURM sends at a time limit, while the run tests: exit 143 with a record, not 0 without one."""
    run_dir = tmp_path / "run"
    check_interrupted(train(run_dir, "SIGTERM@testing"), run_dir, "SIGTERM", "testing")
    check_continued(run_dir, reference)


@pytest.mark.slow  # 21 subprocess runs and their continuations
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_ends_with_a_record_and_the_same_command_continues(tmp_path, reference, name,
                                                                                  phase):
    run_dir = tmp_path / "run"
    check_interrupted(train(run_dir, f"{name}@{phase}"), run_dir, name, phase)
    check_continued(run_dir, reference)


# -- the environment ---------------------------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "probably a bug" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.slow  # a subprocess run (the default tier stays under 3 minutes)
def test_an_output_path_under_a_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = train(tmp_path / "afile" / "run")
    one_error_line(proc, 1, "a part of this path is a file, not a folder", str(tmp_path / "afile"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a read-only mode")
def test_a_folder_without_write_permission_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    one_error_line(train(locked / "run"), 1, "permission denied", str(locked))


def test_a_full_disk_is_one_line_and_the_finished_run_stays_whole(tmp_path, monkeypatch):
    """ENOSPC while the checkpoint is written (torch's writer reports it as a RuntimeError, caught in the atomic
    writer) and while results.json is written: "no space left", never "probably a bug"; the previous checkpoint
    and no temporary file remain."""
    import errno

    import torch

    from hsvae.cli.failures import classify
    from hsvae.training.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(3.0)}, path)
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("hsvae.training.checkpoint_io.disk_is_full", lambda folder: True)
    with pytest.raises(OSError) as err:
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    code, message = classify(err.value)
    assert code == 1 and message.startswith(f"error: no space left on the device: {path}; free some space")


@pytest.mark.slow  # five races, two subprocess runs each
def test_two_runs_racing_for_one_folder_one_runs_the_other_is_refused(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(5):
        run_dir = tmp_path / f"race{attempt}"
        command = [sys.executable, "train.py", *SMALL, f"hydra.run.dir={run_dir}"]
        procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        codes = sorted(p.returncode for p in procs)
        # either one was refused while the other ran, or the second came after the first finished (nothing to do)
        refused = [err for p, (_, err) in zip(procs, outs) if p.returncode == 2]
        assert codes in ([0, 2], [0, 0]), outs
        if refused:
            assert "is in use by another run (pid" in refused[0] and "Traceback" not in refused[0], refused[0]
        else:
            assert any("already finished" in err for _, err in outs), outs
        assert results(run_dir)["status"] == "finished"
        rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
        assert len(rows) == len(set(rows)), "an epoch logged twice"
        assert not (run_dir / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    import socket

    from hsvae.cli.continuation import FolderInUseError, claim_folder

    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": "x"}))
    with claim_folder(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError, match=rf"in use by another run \(pid {os.getpid()} on "):
            with claim_folder(folder):
                pass
    assert "taking over the lock" in caplog.text and not (folder / ".lock").exists()


@pytest.fixture
def small_file_system(tmp_path):
    """A real 16 MiB tmpfs (as root; a skip with its reason otherwise)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the injected-ENOSPC test covers the rest)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow  # two subprocess runs
def test_a_run_on_a_real_full_file_system_is_one_line_and_leaves_the_finished_run_whole(small_file_system):
    finished = small_file_system / "finished"
    assert train(finished).returncode == 0
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    # fill what is left but 200 kB: the next run's first checkpoint (1.2 MB) cannot be written
    free = os.statvfs(small_file_system).f_bavail * os.statvfs(small_file_system).f_frsize
    with open(small_file_system / "filler", "wb") as f:
        f.write(b"\0" * max(free - 200_000, 0))
    full = small_file_system / "full"
    line = one_error_line(train(full), 1, "no space left on the device", str(small_file_system))
    assert "free some space there" in line
    assert {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()} == before  # nothing changed
    assert not [p for p in small_file_system.rglob(".*.tmp")]  # no half-written file left behind


# -- paths as users type them --------------------------------------------------------------------------------------


@pytest.mark.slow  # four subprocess runs
@pytest.mark.parametrize("quote", ["'{}'", '"{}"'])
def test_folders_with_spaces_and_accents_run_and_resume_quoted_either_way(tmp_path, quote):
    run_dir = tmp_path / "run é 1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HSVAE_FAULT_SIGNAL": "SIGTERM@training (epoch 1)"}
    first = subprocess.run([sys.executable, "train.py", *SMALL, f"hydra.run.dir={quote.format(run_dir)}"], cwd=ROOT,
                           capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 143 and (run_dir / "checkpoints" / "last.ckpt").is_file(), first.stderr[-3000:]
    env.pop("HSVAE_FAULT_SIGNAL")
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = subprocess.run([sys.executable, "train.py", f"ckpt_path={quote.format(last)}"], cwd=ROOT,
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = results(run_dir)
    assert record["status"] == "finished" and record["attempts"] == 2  # continued in its own folder


@pytest.mark.slow  # a subprocess run (the default tier stays under 3 minutes)
def test_an_unquoted_value_with_spaces_gets_a_hint_how_to_quote_it(tmp_path):
    proc = train(tmp_path / "run é 1")
    one_error_line(proc, 2, "needs Hydra's quotes inside the shell's", "hydra.run.dir='/runs/run é 1'")


# -- data that parses but is wrong ---------------------------------------------------------------------------------


def copy_raw(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_cut_planetoid_file_is_named_with_both_checksums(data_dir, tmp_path):
    """Cora's test.index cut to half its bytes still parses: its checksum names it; with verify=false (a graph of
    one's own) the structural check does."""
    from hsvae.utils.errors import DatasetNotFoundError
    from hsvae.data.planetoid import load_planetoid

    raw = copy_raw(data_dir / "Planetoid" / "Cora" / "raw", tmp_path / "data" / "Planetoid" / "Cora" / "raw")
    index = raw / "ind.cora.test.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with pytest.raises(DatasetNotFoundError) as err:
        load_planetoid("cora", tmp_path / "data", tmp_path / "cache", download=False)
    message = str(err.value)
    assert str(index) in message and "expected 9b822cae1d01f41e8bf8782e20367c0e" in message
    assert "its MD5 is " in message and "dataset.verify=false" in message
    with pytest.raises(DatasetNotFoundError, match=r"does not fit the graph: \d+ indices for 1000 test feature rows"):
        load_planetoid("cora", tmp_path / "data", tmp_path / "cache2", download=False, verify=False)


@pytest.mark.slow  # copies and hashes MNIST's 55 MB three times
def test_a_changed_mnist_byte_is_named_and_a_verified_file_is_not_hashed_again(data_dir, tmp_path, monkeypatch):
    from hsvae.data import integrity
    from hsvae.utils.errors import DatasetNotFoundError
    from hsvae.data.mnist import load_mnist

    raw = copy_raw(data_dir / "MNIST" / "raw", tmp_path / "data" / "MNIST" / "raw")
    for extra in raw.glob("*.gz"):
        extra.unlink()
    load_mnist(tmp_path / "data", download=False, cache_dir=tmp_path / "cache")  # verified, stamped
    monkeypatch.setattr(integrity, "md5_of", lambda path: pytest.fail(f"{path} hashed again"))
    load_mnist(tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # a label changed: the idx header and the size are intact
    labels.write_bytes(bytes(data))
    with pytest.raises(DatasetNotFoundError, match=r"t10k-labels-idx1-ubyte is not the published file: its MD5 is "
                                                   r"[0-9a-f]{32}, expected 27ae3e4e09519cfbb04c329615203637"):
        load_mnist(tmp_path / "data", download=False, cache_dir=tmp_path / "cache")  # the stamp no longer fits
    load_mnist(tmp_path / "data", download=False, verify=False)  # opted out: read as it is


def test_a_changed_smiles_list_is_named(data_dir, tmp_path):
    import gzip

    from hsvae.data import SMILESDataModule
    from hsvae.utils.errors import DatasetNotFoundError

    path = tmp_path / "zinc.smi.gz"
    lines = gzip.decompress((data_dir / "zinc250k" / "250k_rndm_zinc_drugs_clean.smi.gz").read_bytes()).splitlines()
    path.write_bytes(gzip.compress(b"\n".join(lines[:100])))
    with pytest.raises(DatasetNotFoundError, match=r"zinc\.smi\.gz is not the published file.*dataset\.verify=false"):
        SMILESDataModule(path, max_molecules=50).setup()


@pytest.mark.slow  # a subprocess run and its continuation
def test_a_batch_systems_warning_signal_ends_the_run_as_sigterm_does(tmp_path, reference):
    run_dir = tmp_path / "run"
    check_interrupted(train(run_dir, "SIGUSR2@training (epoch 1)"), run_dir, "SIGUSR2", "training (epoch 1)")
    check_continued(run_dir, reference)


@pytest.mark.parametrize("number, cause", [
    ("ENOSPC", "no space left on the device"), ("EDQUOT", "disk quota exceeded"), ("EROFS", "read-only file system"),
    ("EACCES", "permission denied"), ("ENOTDIR", "a part of this path is a file"),
    ("ENOENT", "no such file or folder (it vanished, or was never there)")])
def test_every_fault_of_the_environment_is_one_line_naming_the_path(number, cause):
    import errno

    from hsvae.cli.failures import classify

    err = OSError(getattr(errno, number), os.strerror(getattr(errno, number)), "/runs/x/results.json")
    code, message = classify(err)
    assert code == 1 and message.startswith(f"error: {cause}") and "/runs/x/results.json" in message
    assert "probably a bug" not in message


@pytest.mark.slow  # a subprocess run
def test_a_read_only_file_system_is_one_line(small_file_system):
    subprocess.run(["mount", "-o", "remount,ro", str(small_file_system)], check=True)
    one_error_line(train(small_file_system / "run"), 1, "read-only file system", str(small_file_system))


def test_make_tables_on_a_missing_folder_or_paper_file_is_one_line(tmp_path, capsys):
    from hsvae.analysis.tables import main as make_tables

    assert make_tables([str(tmp_path / "nowhere")]) == 2
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"format": 1, "metrics": {"test/elbo": -1.0}, "config": {}}))
    assert make_tables([str(tmp_path / "runs"), "--metrics", "test/elbo", "--paper", str(tmp_path / "no.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err), err
    assert str(tmp_path / "nowhere") in err[0] and str(tmp_path / "no.yaml") in err[1]


@pytest.mark.slow  # a subprocess
def test_a_refused_eval_leaves_no_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "eval.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    one_error_line(proc, 2, "eval.py needs the checkpoint to test")
    assert list(tmp_path.iterdir()) == []


def wait_until_training(folders: list[Path], proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until every folder's run has checkpointed an epoch."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if all((folder / "checkpoints" / "last.ckpt").is_file() for folder in folders):
            return
        time.sleep(0.1)
    raise AssertionError(f"the jobs did not start training (sweep exited {proc.poll()})")


@pytest.mark.slow  # a sweep of two jobs through joblib, twice
@pytest.mark.parametrize("name, to_group", [("SIGTERM", False), ("SIGINT", True)])
def test_a_signal_to_a_joblib_sweep_reaches_every_job_and_the_same_command_finishes_it(tmp_path, name, to_group):
    """SIGTERM sent to the launching process alone (``kill <pid>``) or Ctrl-C to the whole process group: each job
    running in a worker records its interruption (signal, phase, checkpoint), the sweep exits 128 + the signal's
    number naming it, and the same command resumes both jobs to the end."""
    command = [sys.executable, "train.py", "-m", "seed=0,1", *SMALL, "trainer.max_epochs=60", "launcher=joblib",
               "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HSVAE_FAULT_SIGNAL", None)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    jobs = [tmp_path / "0", tmp_path / "1"]
    wait_until_training(jobs, proc)
    if to_group:
        os.killpg(proc.pid, getattr(signal, name))
    else:
        proc.send_signal(getattr(signal, name))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + getattr(signal, name), stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert lines == [line for line in lines if f"interrupted by {name}" in line] and lines, stderr[-3000:]
    assert "while running the sweep's jobs" in lines[-1] and "Traceback" not in stderr, stderr[-3000:]
    for job in jobs:
        record = results(job)
        assert (record["status"], record["signal"]) == ("interrupted", name), record
        assert record["phase"].startswith(("training", "validating")), record["phase"]
        assert (job / "checkpoints" / "last.ckpt").is_file()

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for job in jobs:
        assert (results(job)["status"], results(job)["attempts"]) == ("finished", 2)


def test_a_metrics_csv_an_interruption_left_torn_still_resumes(tmp_path):
    """Rows with a field beyond the header, or fewer fields (a rewrite cut short): the kept history holds the
    header's columns only, so the resumed run's first save does not fail on them."""
    from hsvae.training.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="", version="")
    Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
    (Path(logger.log_dir) / "metrics.csv").write_text(
        "epoch,step,val/elbo\n0,9,-10.0\n0,9,-9.5,extra\n1,19\n2,29,-8.0,1,2\n")
    assert logger.continue_history(1) == 3
    assert all(None not in row for row in logger.kept_history)
    assert logger.kept_history[2] == {"epoch": "1", "step": "19", "val/elbo": ""}
    logger.log_metrics({"val/elbo": -7.0, "epoch": 2}, step=29)
    logger.save()  # the first save writes the kept rows back, then the new one
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "step", "val/elbo"] or "val/elbo" in rows[0]
    assert len(rows) == 5


# a job of a joblib sweep, stood in for by a process that holds its folder's lock and, signalled, takes its time to
# write its record before it releases the lock
_SLOW_RECORDER = """
import json, os, signal, sys, time
from pathlib import Path
folder, delay = Path(sys.argv[1]), float(sys.argv[2])
def stop(signum, frame):
    time.sleep(delay)
    (folder / "results.json").write_text(json.dumps({"status": "interrupted"}))
    (folder / ".lock").unlink()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
folder.mkdir(parents=True, exist_ok=True)
(folder / ".lock").write_text(json.dumps({"pid": os.getpid()}))
while True:
    time.sleep(0.05)
"""


def test_the_launcher_raises_only_once_every_job_has_recorded_the_signal_it_forwarded(tmp_path, monkeypatch):
    """The race CI met: joblib, handed the first job's interruption, kills the workers still writing theirs. The
    launching process's handler forwards the signal and returns (raising) only after every job released its lock;
    the jobs here take 0.2 s and 2 s to record."""
    from hsvae.cli import signals

    jobs = [subprocess.Popen([sys.executable, "-c", _SLOW_RECORDER, str(tmp_path / name), delay])
            for name, delay in (("0", "0.2"), ("1", "2.0"))]
    try:
        deadline = time.time() + 30
        while not all((tmp_path / name / ".lock").is_file() for name in "01") and time.time() < deadline:
            time.sleep(0.05)
        monkeypatch.setattr(signals, "_received", None)
        monkeypatch.setattr(signals, "_sweep_dir", tmp_path)
        monkeypatch.setattr(signals, "_phase", signals.SWEEP_PHASE)
        with pytest.raises(signals.Interrupted) as raised:
            signals._handle(signal.SIGTERM, None)
        assert (raised.value.name, raised.value.phase) == ("SIGTERM", signals.SWEEP_PHASE)
        for name in "01":
            assert json.loads((tmp_path / name / "results.json").read_text())["status"] == "interrupted"
            assert not (tmp_path / name / ".lock").exists()
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_an_error_raised_as_a_signal_unwinds_the_run_is_recorded_as_the_signal(tmp_path, monkeypatch):
    """torch.save cut short by the signal's KeyboardInterrupt raises a RuntimeError ("unexpected pos"): with a
    signal received, the run records the interruption (signal, phase, resume hint) and raises it, not a bug."""
    import signal as signal_module

    from hsvae.cli import signals
    from hsvae.cli.failures import recording_failures

    monkeypatch.setattr(signals, "_received", signals.Interrupted(signal_module.SIGINT, "training (epoch 1)"))
    with pytest.raises(signals.Interrupted):
        with recording_failures(tmp_path, "train.log"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 251648 vs 251600")
    record = results(tmp_path)
    assert (record["status"], record["signal"], record["phase"]) == ("interrupted", "SIGINT", "training (epoch 1)")
    assert "unexpected pos" in (tmp_path / "train.log").read_text()  # the error's traceback stays in the log
