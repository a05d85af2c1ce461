"""Checkpoints and run directories: exact resume, the progression animation, refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

import sparsekit
from sparsekit.cli.main import main
from sparsekit.data import load_mnist
from sparsekit.errors import CheckpointError
from sparsekit.evaluation.figures import filter_grid
from sparsekit.layout import CHECKPOINT
from sparsekit.runs.restore import restore_trainer
from sparsekit.runs.writer import RunWriter, read_metrics
from sparsekit.testing import mnist_data_dir
from sparsekit.training.checkpoint import load_checkpoint, save_checkpoint
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Callback, Trainer, make_method

DATA_DIR = mnist_data_dir()
N = 1000
SPEC = {"spec": "mnist", "data": str(DATA_DIR), "split": "train", "subset": N}
#: Short runs that still exercise each update rule: k-sparse anneals k over epochs 0-1.
CASES = {
    "ksparse": ({"k": 10, "k_start": 30}, {"hidden": 36, "epochs": 4}),
    "arora": ({}, {"hidden": 36, "epochs": 4}),
    # The trainer's upkeep: unit-norm decoder, b_dec from the data, dead-unit counters (AuxK
    # reads them) and resampling every 3 steps, whose generator and counters must resume.
    "topk": (
        {"k": 2, "k_aux": 16, "dead_after": 100, "resample_every": 3},
        {"hidden": 64, "epochs": 4, "batch_size": 100},
    ),
    # An inference threshold learned as method state.
    "batchtopk": (
        {"k": 5, "k_aux": 16, "dead_after": 200},
        {"hidden": 36, "epochs": 4, "batch_size": 100},
    ),
}


@pytest.fixture(scope="module")
def mnist():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {DATA_DIR}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    return load_mnist(DATA_DIR, subset=N)


class StopAfter(Callback):
    """Asks the trainer to stop once ``epochs`` epochs are done (like a clean interrupt)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch == self.epochs:
            trainer.stop_requested = True


class Crash(Callback):
    """Raises after epoch ``epochs`` (after the run writer has written that epoch)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch == self.epochs:
            raise RuntimeError("simulated crash")


def make_trainer(name, mnist, callbacks=(), **overrides):
    params, settings = CASES[name]
    method = make_method(name, **params)
    config = resolve_config(method, **{**settings, **overrides})
    return Trainer(method, mnist, config, callbacks=callbacks)


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(run_dir)["state"]["params"]


@pytest.fixture(scope="module")
def full_runs(mnist, tmp_path_factory):
    """One uninterrupted 4-epoch run per method (the reference for exact resume)."""
    runs = {}
    for name in CASES:
        run_dir = tmp_path_factory.mktemp(f"{name}-full")
        trainer = make_trainer(name, mnist, [RunWriter(run_dir, data_spec=SPEC)])
        trainer.fit()
        if name == "topk":  # the case must exercise resampling, or it proves nothing
            assert trainer.upkeep.resampled > 0
        runs[name] = run_dir
    return runs


# --------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("name", sorted(CASES))
def test_resume_after_a_stop_is_bit_for_bit(name, mnist, full_runs, tmp_path):
    make_trainer(name, mnist, [RunWriter(tmp_path, data_spec=SPEC), StopAfter(2)]).fit()
    assert load_checkpoint(tmp_path)["meta"]["epoch"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "stopped"

    trainer = restore_trainer(tmp_path, callbacks=[RunWriter(tmp_path)])  # reloads MNIST
    assert trainer.epoch == 2
    trainer.fit()

    reference = final_params(full_runs[name])
    resumed = final_params(tmp_path)
    full_state = load_checkpoint(full_runs[name])["state"]
    resumed_state = load_checkpoint(tmp_path)["state"]
    assert full_state["method_state"] == resumed_state["method_state"]
    for key, value in full_state["upkeep"].items():
        assert (
            np.array_equal(value, resumed_state["upkeep"][key])
            if isinstance(value, np.ndarray)
            else value == resumed_state["upkeep"][key]
        ), key
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert reference[key].dtype == resumed[key].dtype
        assert np.array_equal(reference[key], resumed[key]), key
    full_rows = read_metrics(full_runs[name])
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("name", ["ksparse", "topk"])
def test_a_resumed_runs_fve_is_bit_for_bit(name, mnist, full_runs, tmp_path):
    # The SST behind fve sums the first epoch's batches in their shuffled order: a resumed
    # run must take it (count, mean, M2) from the checkpoint, not from its own first epoch.
    make_trainer(name, mnist, [RunWriter(tmp_path, data_spec=SPEC), StopAfter(2)]).fit()
    saved = load_checkpoint(tmp_path)
    variance = saved["state"]["data_variance"]
    assert variance["n"] == N and variance["m2"].shape == (mnist.dim,)
    restore_trainer(tmp_path, callbacks=[RunWriter(tmp_path)]).fit()
    full = [r["fve"] for r in read_metrics(full_runs[name])]
    assert [r["fve"] for r in read_metrics(tmp_path)] == full


def test_a_checkpoint_without_the_variance_still_resumes(mnist, tmp_path):
    make_trainer("ksparse", mnist, [RunWriter(tmp_path, data_spec=SPEC), StopAfter(2)]).fit()
    path = tmp_path / CHECKPOINT
    with np.load(path) as archive:
        members = {k: archive[k] for k in archive.files if not k.startswith("variance/")}
    meta = json.loads(members["meta"].tobytes().decode())
    del meta["data_variance_n"]  # as sparsekit before the variance was saved wrote it
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **members)
    assert load_checkpoint(tmp_path)["state"]["data_variance"] is None
    trainer = restore_trainer(tmp_path, callbacks=[RunWriter(tmp_path)])
    trainer.fit()
    assert trainer.epoch == 4 and np.isfinite(trainer.history[-1]["fve"])


def test_resume_after_a_crash_drops_what_the_checkpoint_does_not_cover(mnist, full_runs, tmp_path):
    """Checkpoint every 2 epochs, crash after epoch 3: resume from 2, redo 3 and 4 exactly."""
    writer = RunWriter(tmp_path, data_spec=SPEC, checkpoint_every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer("ksparse", mnist, [writer, Crash(3)]).fit()
    assert len(read_metrics(tmp_path)) == 3
    assert load_checkpoint(tmp_path)["meta"]["epoch"] == 2

    trainer = restore_trainer(tmp_path, mnist, callbacks=[RunWriter(tmp_path, checkpoint_every=2)])
    trainer.fit()
    # The row the crashed run wrote for epoch 3 was dropped and written again.
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert read_metrics(tmp_path) == trainer.history
    reference = final_params(full_runs["ksparse"])
    for key, value in final_params(tmp_path).items():
        assert np.array_equal(value, reference[key]), key
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.n_frames == 5  # epochs 0..4, the frame of the crashed epoch 3 replaced


def test_cli_resume_is_bit_for_bit_and_can_extend(mnist, full_runs, tmp_path, capsys):
    make_trainer("ksparse", mnist, [RunWriter(tmp_path, data_spec=SPEC), StopAfter(1)]).fit()
    assert run_main(["train", "--resume", str(tmp_path)]) == 0
    reference = final_params(full_runs["ksparse"])
    for key, value in final_params(tmp_path).items():
        assert np.array_equal(value, reference[key]), key

    assert run_main(["train", "--resume", str(tmp_path), "--epochs", "5"]) == 0
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["meta"]["epoch"] == 5 and ckpt["config"].epochs == 5
    assert len(read_metrics(tmp_path)) == 5
    assert json.loads((tmp_path / "config.json").read_text())["train"]["epochs"] == 5


def run_main(argv: list[str]) -> int:
    """The exit status of the command line run in this process."""
    try:
        main(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else int(exc.code)
    return 0


def test_resume_refuses_changed_settings(full_runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(full_runs["arora"]), "--lr", "0.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr cannot be changed when resuming" in err[0]


# --------------------------------------------------------------------------- figures


def test_run_directory_holds_every_figure(full_runs):
    run_dir = full_runs["ksparse"]
    for name in (
        "config.json", "metrics.jsonl", "summary.json", "filters.png", "progression.gif",
        "reconstructions.png", "curves.png", CHECKPOINT,
    ):  # fmt: skip
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "ksparse" and summary["method_params"]["k"] == 10
    assert summary["epochs"] == 4 and summary["status"] == "finished"
    assert summary["sparsekit_version"] == sparsekit.__version__
    assert summary["final"]["mean_active"] == pytest.approx(10.0)
    assert summary["total_seconds"] > 0
    # 20 held-out test images: 2 pairs of rows of 10, scale 2.
    with Image.open(run_dir / "reconstructions.png") as image:
        h = 1 + 2 * (2 * 28 + 2) + (1 + 1)
        assert image.size == (2 * (10 * 28 + 11), 2 * h)
    holdout = load_checkpoint(run_dir)["extra"]["holdout"]
    test = load_mnist(DATA_DIR, split="test", subset=20).to_array(np.float32)
    assert np.array_equal(holdout, test)


def test_progression_has_one_frame_per_snapshot_and_the_grid_size(mnist, tmp_path):
    trainer = make_trainer(
        "arora", mnist, [RunWriter(tmp_path, data_spec=SPEC, snapshot_every=2)], epochs=5
    )
    trainer.fit()
    grid = filter_grid(trainer.model.encoder_weights, (28, 28))
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.n_frames == 4  # epochs 0, 2, 4 and the last one, 5
        assert gif.size == (grid.shape[1], grid.shape[0])
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("L"))
    assert np.array_equal(last, grid)  # the last frame is the final filter grid, exactly
    with Image.open(tmp_path / "filters.png") as image:
        assert np.array_equal(np.asarray(image), grid)


def test_progression_is_bounded_by_max_frames(mnist, tmp_path):
    make_trainer("arora", mnist, [RunWriter(tmp_path, max_frames=3)], epochs=5).fit()
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.n_frames == 3
    # Without a data description the held-out images are the last training rows.
    holdout = load_checkpoint(tmp_path)["extra"]["holdout"]
    assert np.array_equal(holdout, mnist.take(np.arange(N - 20, N), np.float32))


def test_long_runs_keep_a_bounded_number_of_evenly_spread_frames(mnist, tmp_path):
    writer = RunWriter(tmp_path, max_frames=2)  # keeps at most 2 * 2 frames in memory
    make_trainer("arora", mnist, [writer], epochs=6).fit()
    with np.load(tmp_path / "progression.npz", allow_pickle=False) as archive:
        epochs = archive["epochs"].tolist()
        assert archive["tiles"].shape == (len(epochs), 36, 28, 28)
    assert epochs == writer.frame_epochs == [0, 4, 6]
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.n_frames == 2  # the first and the last


def test_library_load_run_and_render_run(full_runs, tmp_path):
    model = sparsekit.load_run(full_runs["ksparse"])
    assert model.image_shape == (28, 28) and model.hidden == 36
    assert np.array_equal(model.encoder_weights, final_params(full_runs["ksparse"])["W_enc"])
    written = sparsekit.render_run(full_runs["ksparse"], tmp_path, cols=4, scale=2, max_filters=8)
    assert sorted(p.name for p in written) == [
        "curves.png",
        "filters.png",
        "progression.gif",
        "reconstructions.png",
    ]
    expected = filter_grid(model.encoder_weights, (28, 28), cols=4, scale=2, max_filters=8)
    with Image.open(tmp_path / "filters.png") as image:
        assert np.array_equal(np.asarray(image), expected)
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (expected.shape[1], expected.shape[0])


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def broken(full_runs, tmp_path):
    """Copy the arora run and rewrite its checkpoint's members with ``edit``."""
    run_dir = tmp_path / "run"
    shutil.copytree(full_runs["arora"], run_dir)

    def rewrite(edit):
        path = run_dir / CHECKPOINT
        with np.load(path, allow_pickle=False) as archive:
            members = {k: archive[k] for k in archive.files}
        edit(members)
        path.unlink()
        with open(path, "wb") as fh:
            np.savez(fh, **members)
        return run_dir

    return rewrite


def set_meta(members, **changes):
    meta = json.loads(members["meta"].tobytes())
    meta.update(changes)
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def one_error_line(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return exit_info.value.code, lines[0]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.update({"params/W_enc": m["params/W_enc"][:, :100]}), "has shape (36, 100)"),
        (lambda m: m.pop("params/b_dec"), "array 'params/b_dec' is missing"),
        (lambda m: m.update({"params/W_enc": m["params/W_enc"].astype(np.float64)}), "dtype"),
        (lambda m: set_meta(m, method="nope"), "method 'nope' is not installed"),
        (lambda m: set_meta(m, epoch=7), "epoch 7 does not match"),
        (lambda m: m.pop("meta"), "not a sparsekit checkpoint"),
    ],
    ids=["wrong-shape", "missing-array", "wrong-dtype", "unknown-method", "bad-epoch", "no-meta"],
)
def test_bad_checkpoints_are_refused_with_one_line(broken, capsys, edit, words):
    run_dir = broken(edit)
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(run_dir)
    for command in ("show", "export"):
        code, line = one_error_line(capsys, [command, str(run_dir)])
        assert code == CheckpointError.exit_code
        assert line.startswith("sparsekit: error: ") and words in line
    code, line = one_error_line(capsys, ["train", "--resume", str(run_dir)])
    assert code == CheckpointError.exit_code and words in line


def test_a_pickled_object_is_refused_not_loaded(broken, tmp_path):
    marker = tmp_path / "pwned"
    run_dir = broken(lambda m: m.update({"params/W_enc": np.array([Evil(marker)], dtype=object)}))
    result = run_cli("show", str(run_dir), timeout=120)
    assert result.returncode == CheckpointError.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "refused" in lines[0] and "pickled object" in lines[0]
    assert not marker.exists()


class Evil:
    """Would create a file if unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_are_refused_with_one_line(full_runs, tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(full_runs["arora"], run_dir)
    path = run_dir / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage]
    )
    code, line = one_error_line(capsys, ["show", str(run_dir)])
    assert code == CheckpointError.exit_code
    assert "not a valid checkpoint" in line or "not a sparsekit checkpoint" in line


def test_missing_run_directory(tmp_path, capsys):
    code, line = one_error_line(capsys, ["export", str(tmp_path / "nowhere")])
    assert code == CheckpointError.exit_code and "no such run directory" in line
    code, line = one_error_line(capsys, ["train", "--resume", str(tmp_path)])
    assert code == CheckpointError.exit_code and "not a run directory" in line
    (tmp_path / "config.json").write_text("{}")
    code, line = one_error_line(capsys, ["show", str(tmp_path)])
    assert code == CheckpointError.exit_code
    code, line = one_error_line(capsys, ["train", "--resume", str(tmp_path)])
    assert code == CheckpointError.exit_code and "no checkpoint.npz" in line


def test_checkpoint_is_written_atomically_and_holds_no_objects(mnist, tmp_path):
    trainer = make_trainer("ksparse", mnist, epochs=1)
    path = save_checkpoint(tmp_path / "c.npz", trainer, keep_previous=True)
    save_checkpoint(path, trainer, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "c.prev.npz"]
    with np.load(path, allow_pickle=False) as archive:
        assert all(not archive[k].dtype.hasobject for k in archive.files)
        assert "meta" in archive.files and "params/W_enc" in archive.files
    # Without a data description, restoring needs the data handed over.
    with pytest.raises(CheckpointError, match="pass the data set"):
        restore_trainer(path)
    assert restore_trainer(path, mnist).epoch == 0
