"""Kill real training processes at varied moments; no run directory may be left corrupt.

Each round starts ``sparsekit train`` on 600 MNIST images, stops it with SIGINT, SIGTERM or
SIGKILL (before training, at an epoch boundary, inside an epoch), then checks the run
directory: ``config.json`` is valid JSON, every line of ``metrics.jsonl`` is valid JSON,
``checkpoint.npz`` loads, at most one epoch of work is lost, and ``sparsekit train
--resume`` finishes the run with bit for bit the weights of a run that was never
interrupted. SIGINT and SIGTERM during training must end with exit code 130 and the one-line
resume hint. ``SPARSEKIT_KILL_ROUNDS`` sets the number of rounds (default 20).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import sigint_by_default

ROUNDS = int(os.environ.get("SPARSEKIT_KILL_ROUNDS", "20"))
EPOCHS = 4
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
ERROR = "sparsekit: error: "

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _sparsekit() -> list[str]:
    script = Path(sys.executable).with_name("sparsekit")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sparsekit.cli.main import main; main()"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_DEBUG"}
    env["COLUMNS"] = "200"
    # tiny matrices: BLAS threads only compete with the other rounds for the cores
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _train_args(data: Path, out: Path) -> list[str]:
    return [
        "train", "ksparse", "--dataset", str(data), "--hidden", "32", "--k", "10",
        "--k-start", "32", "--epochs", str(EPOCHS), "--seed", "1", "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory, data_dir) -> Path:
    from sparsekit.data import load_mnist

    ds = load_mnist(data_dir, subset=600)
    path = tmp_path_factory.mktemp("interrupt-data") / "mnist600.npy"
    np.save(path, ds.to_array(np.float32).reshape(600, 28, 28))
    return path


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> dict[str, np.ndarray]:
    """The weights of the same run, never interrupted."""
    from sparsekit.training.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("interrupt-reference")
    proc = subprocess.run(
        [*_sparsekit(), *_train_args(images, out)], env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = out.iterdir()
    ckpt = load_checkpoint(run)
    assert ckpt["meta"]["epoch"] == EPOCHS
    return ckpt["state"]["params"]


@dataclass
class Round:
    index: int
    sig: signal.Signals
    moment: str
    returncode: int | None = None
    stderr: str = ""
    notes: list[str] = field(default_factory=list)


def _metrics_lines(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def _kill_at_some_moment(rnd: Round, proc: subprocess.Popen, out: Path, rng: random.Random):
    """Wait for the moment this round chose, then send its signal."""
    deadline = time.monotonic() + 60
    if rnd.moment.startswith("after-start"):
        time.sleep(rng.uniform(0.05, 0.9))
    else:  # "epoch-N": once N epochs are in metrics.jsonl (N=0: training has begun), plus jitter
        want = int(rnd.moment.split("-")[1])
        while proc.poll() is None and time.monotonic() < deadline:
            runs = list(out.iterdir()) if out.exists() else []
            if runs and (runs[0] / "checkpoint.npz").exists() and _metrics_lines(runs[0]) >= want:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.12))
    if proc.poll() is None:
        proc.send_signal(rnd.sig)


def _check_run_dir(run: Path, graceful: bool) -> tuple[int | None, int, list[str]]:
    """(checkpoint epoch or None, epochs in metrics.jsonl, problems) of a killed run."""
    from sparsekit.errors import SparsekitError
    from sparsekit.training.checkpoint import load_checkpoint

    problems: list[str] = []
    if (run / "config.json").exists():
        try:
            config = json.loads((run / "config.json").read_text(encoding="utf-8"))
            if config.get("method") != "ksparse":
                problems.append("config.json names another method")
        except (ValueError, OSError) as exc:
            problems.append(f"config.json is not valid JSON: {exc}")
    epochs: list[int] = []
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                epochs.append(json.loads(line)["epoch"])
            except (ValueError, KeyError) as exc:
                problems.append(f"metrics.jsonl has a broken line {line!r}: {exc}")
    if epochs != list(range(1, len(epochs) + 1)):
        problems.append(f"metrics.jsonl epochs {epochs}")
    ckpt_epoch = None
    if (run / "checkpoint.npz").exists():
        try:
            ckpt_epoch = load_checkpoint(run)["meta"]["epoch"]
        except SparsekitError as exc:
            problems.append(f"checkpoint.npz does not load: {exc}")
    done = len(epochs)
    if ckpt_epoch is None:
        if done:
            problems.append(f"{done} epochs done but no checkpoint")
    elif not done - 1 <= ckpt_epoch <= done:
        problems.append(f"checkpoint at epoch {ckpt_epoch} but {done} epochs done")
    elif graceful and ckpt_epoch != done:
        problems.append(f"graceful stop: checkpoint at epoch {ckpt_epoch}, {done} epochs done")
    if graceful:
        leftovers = [p.name for p in run.iterdir() if ".tmp" in p.name]
        if leftovers:
            problems.append(f"temporary files left by a graceful stop: {leftovers}")
    return ckpt_epoch, done, problems


def _play(rnd: Round, images: Path, root: Path, reference: dict[str, np.ndarray]) -> Round:
    from sparsekit.runs.writer import read_metrics
    from sparsekit.training.checkpoint import load_checkpoint

    rng = random.Random(rnd.index)
    out = root / f"round-{rnd.index}"
    proc = subprocess.Popen(
        [*_sparsekit(), *_train_args(images, out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_by_default,
    )
    try:
        _kill_at_some_moment(rnd, proc, out, rng)
        _, rnd.stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rnd.returncode = proc.returncode
    runs = sorted(out.iterdir()) if out.exists() else []
    if len(runs) > 1:
        rnd.notes.append(f"{len(runs)} run directories")
        return rnd
    if not runs:  # stopped before the run directory existed: nothing to lose
        if rnd.returncode == 0:
            rnd.notes.append("finished without a run directory")
        return rnd
    run = runs[0]
    lines = [line for line in rnd.stderr.splitlines() if line.strip()]
    graceful = rnd.returncode == 130 and bool(lines) and "resume with" in lines[-1]
    if rnd.returncode == 130 and not graceful and rnd.sig != signal.SIGKILL:
        # a signal before the handlers were installed (still starting): fine if nothing ran
        if _metrics_lines(run):
            rnd.notes.append(f"exit 130 without the resume hint after training: {lines[-1:]}")
    if graceful:
        want = f"{ERROR}interrupted; resume with: sparsekit train --resume {run}"
        if lines[-1] != want:
            rnd.notes.append(f"last stderr line {lines[-1]!r}, expected {want!r}")
        if sum(line.startswith(ERROR) for line in lines) != 1:
            rnd.notes.append("more than one error line")
    if rnd.sig != signal.SIGKILL and rnd.returncode not in (0, 130, -signal.SIGTERM):
        rnd.notes.append(f"exit code {rnd.returncode}")
    if "Traceback" in rnd.stderr:
        rnd.notes.append("a traceback")
    ckpt_epoch, _, problems = _check_run_dir(run, graceful)
    rnd.notes.extend(problems)
    if problems:
        return rnd
    # resume: finishes the run exactly, or (no checkpoint yet) says why in one line
    resumed = subprocess.run(
        [*_sparsekit(), "train", "--resume", str(run)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ckpt_epoch is None:
        errors = [line for line in resumed.stderr.splitlines() if line.strip()]
        if resumed.returncode != 6 or len(errors) != 1 or "Traceback" in resumed.stderr:
            rnd.notes.append(f"resume without checkpoint: {resumed.returncode} {errors}")
        return rnd
    if resumed.returncode != 0:
        rnd.notes.append(f"resume failed ({resumed.returncode}): {resumed.stderr.strip()[-300:]}")
        return rnd
    final = load_checkpoint(run)
    if final["meta"]["epoch"] != EPOCHS:
        rnd.notes.append(f"resumed run ends at epoch {final['meta']['epoch']}")
    if [r["epoch"] for r in read_metrics(run)] != list(range(1, EPOCHS + 1)):
        rnd.notes.append(f"metrics after resume: {[r['epoch'] for r in read_metrics(run)]}")
    params = final["state"]["params"]
    if set(params) != set(reference) or any(
        not np.array_equal(params[k], reference[k]) for k in reference
    ):
        rnd.notes.append("resumed weights differ from the uninterrupted run")
    return rnd


def _rounds(n: int) -> list[Round]:
    """Every signal at every moment (18 pairs), then again from the start."""
    moments = ["after-start"] + [f"epoch-{e}" for e in range(EPOCHS + 1)]
    pairs = [(moment, sig) for moment in moments for sig in SIGNALS]
    return [Round(i, pairs[i % len(pairs)][1], pairs[i % len(pairs)][0]) for i in range(n)]


@pytest.mark.slow
def test_killed_runs_are_never_corrupt_and_resume_exactly(images, reference, tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:
        played = list(pool.map(lambda r: _play(r, images, tmp_path, reference), _rounds(ROUNDS)))
    bad = [r for r in played if r.notes]
    report = "\n".join(
        f"round {r.index} ({r.sig.name} at {r.moment}, exit {r.returncode}): {'; '.join(r.notes)}"
        for r in bad
    )
    assert not bad, f"{len(bad)} of {len(played)} runs went wrong:\n{report}"
    graceful = [r for r in played if r.returncode == 130 and r.sig != signal.SIGKILL]
    assert graceful, "no round stopped gracefully: the kill moments are off"


def _stop_after(args: list[str], run_dir_of, epochs: int, sig: signal.Signals):
    """Start sparsekit ARGS, send ``sig`` once ``epochs`` epochs are in metrics.jsonl."""
    proc = subprocess.Popen(
        [*_sparsekit(), *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_by_default,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            run = run_dir_of()
            if run is not None and _metrics_lines(run) >= epochs:
                break
            time.sleep(0.002)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def test_stops_inside_an_epoch_keep_the_last_completed_epoch_also_when_resumed(images, tmp_path):
    """A stop in the middle of an epoch keeps the epoch before: nothing of the partial epoch
    is saved; the same holds for a resumed run, and the run then finishes."""
    from sparsekit.runs.writer import read_metrics
    from sparsekit.training.checkpoint import load_checkpoint

    out = tmp_path / "runs"
    args = [*_train_args(images, out)]
    args[args.index("--epochs") + 1] = "50"
    args += ["--batch-size", "8"]  # 75 steps per epoch: plenty of time inside one

    def run_dir():
        runs = list(out.iterdir()) if out.exists() else []
        return runs[0] if runs else None

    hint = f"{ERROR}interrupted; resume with: sparsekit train --resume "
    code, stderr = _stop_after(args, run_dir, 1, signal.SIGINT)
    assert code == 130, stderr
    run = run_dir()
    first = load_checkpoint(run)["meta"]["epoch"]
    assert first == _metrics_lines(run) >= 1
    assert stderr.strip().splitlines()[-1] == f"{hint}{run}"
    assert json.loads((run / "summary.json").read_text())["epochs"] == first

    code, stderr = _stop_after(
        ["train", "--resume", str(run)], lambda: run, first + 1, signal.SIGTERM
    )
    assert code == 130, stderr
    second = load_checkpoint(run)["meta"]["epoch"]
    assert second == _metrics_lines(run) > first
    assert stderr.strip().splitlines()[-1] == f"{hint}{run}"
    assert "Traceback" not in stderr

    proc = subprocess.run(
        [*_sparsekit(), "train", "--resume", str(run), "--epochs", str(second + 1)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, second + 2))
    assert load_checkpoint(run)["meta"]["epoch"] == second + 1


class _FakeTrainer:
    def __init__(self, epoch: int, epochs: int) -> None:
        self.stop_requested = False
        self.epoch = epoch
        self.config = type("Config", (), {"epochs": epochs})()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_on_signals_in_process(sig, request):
    from sparsekit.cli.stop import Interrupted, stop_on_signals

    if signal.getsignal(sig) is signal.SIG_IGN:  # a background job's SIGINT: see conftest.sigint_by_default
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        request.addfinalizer(lambda: signal.signal(sig, signal.SIG_IGN))
    before = signal.getsignal(sig)
    trainer = _FakeTrainer(epoch=2, epochs=5)
    with pytest.raises(
        Interrupted, match=r"^interrupted; resume with: sparsekit train --resume r$"
    ):
        with stop_on_signals(trainer, "r") as received:
            os.kill(os.getpid(), sig)
            time.sleep(0.01)  # the handler runs between bytecodes
            assert trainer.stop_requested and received == [sig]
    assert signal.getsignal(sig) is before
    assert Interrupted.exit_code == 130

    # a second signal aborts at once
    trainer = _FakeTrainer(epoch=2, epochs=5)
    with pytest.raises(Interrupted):
        with stop_on_signals(trainer, "r"):
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
            pytest.fail("the second signal did not abort")
    assert signal.getsignal(sig) is before

    # a signal during the last epoch's end, when everything is done: no error
    trainer = _FakeTrainer(epoch=5, epochs=5)
    with stop_on_signals(trainer, "r"):
        os.kill(os.getpid(), sig)
        time.sleep(0.01)
    assert signal.getsignal(sig) is before
