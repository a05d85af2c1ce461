"""The GPU path in CI: every built-in on the simulated device (sparsekit.backend.simulated).

Each method trains an epoch on a small MNIST subset through the trainer with a run writer
(checkpoint and figures), is restored from that checkpoint, trains a second epoch and is
loaded and drawn again, on the simulated device and on NumPy: the two agree to float32
rounding (the device path skips the CPU's fused loops and sparse kernels). Inside each step
the simulated arrays refuse every host transfer, and the CPU's fast paths (CPU_ONLY) refuse
to run, so a method that syncs with the host or reaches CPU-only code in its step fails
here; the tests at the bottom check that the guard does fail on each kind.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

from sparsekit import (
    Trainer,
    get_backend,
    load_run,
    make_method,
    render_run,
    resolve_config,
    restore_trainer,
    save_checkpoint,
)
from sparsekit.backend.simulated import (
    DeviceArray,
    DeviceMisuseError,
    HostTransferError,
    in_step,
    simulated_backend,
    xp,
)
from sparsekit.core.activations import Sigmoid
from sparsekit.methods.plain import Plain
from sparsekit.runs import writer as run
from sparsekit.runs.writer import RunWriter

HIDDEN, BATCH, ROWS, SEED = 32, 50, 300, 1

#: Small problems; the SAE settings make units die within the epoch, so AuxK and the
#: trainer's resampling of dead units run on the device too.
SETTINGS: dict[str, dict] = {
    # tol=0: a fixed iteration count, as the device always runs (no flag read back per step)
    "dict-learning": {"tol": 0.0, "max_iter": 30},
    "ksparse": {"k": 5, "k_start": 10},
    "topk": {"k": 2, "k_aux": 8, "dead_after": 50, "resample_every": 3},
    "batchtopk": {"k": 2, "k_aux": 8, "dead_after": 50, "resample_every": 3},
    "matryoshka": {"k": 2, "k_aux": 8, "dead_after": 50},
    "jumprelu": {"dead_after": 50, "resample_every": 3},
    "gated": {"dead_after": 50, "resample_every": 3},
    "standard": {"l1": 0.01, "l1_warm_up_steps": 4},
    "mp-sae": {"k": 3},
}

#: Methods with a known host transfer inside their step (none: each would be a strict xfail).
TRANSFERS: dict[str, str] = {}
#: Methods whose device run trains without a host transfer and with the CPU's history (to
#: 1e-4), but whose weights end up apart in one unit's row (up to 3e-4 absolute after two
#: epochs; each path alone resumes bit for bit). Not yet explained: a strict xfail, so the
#: day it is fixed the marker has to go.
DIVERGES = {
    name: "one unit's weights drift from the CPU's by up to 3e-4: the device's dense batch "
    "top-k against the CPU's padded sparse code, cause not isolated"
    for name in ("batchtopk", "matryoshka")
}

METHODS = [
    "plain",
    "l2",
    "kl",
    "arora",
    "ksparse",
    "topk",
    "batchtopk",
    "jumprelu",
    "gated",
    "matryoshka",
    "relu-l1",
    "standard",
    "mp-sae",
    "dict-learning",
]
FIGURES = ("filters.png", "reconstructions.png", "curves.png", "progression.gif")


#: The CPU's fast paths (compiled loops, SciPy's compiled sparse kernels, the thread
#: splitter, under every name they are imported by): a step on the device must not reach them.
CPU_ONLY = [
    ("sparsekit.backend.fused", "Loop.ready"),  # compiled loops
    ("sparsekit.backend.sparse_code", "_sparsetools"),
    ("sparsekit.backend.sparse_code", "split_run"),
    ("sparsekit.backend.threads", "split_run"),
    ("sparsekit.backend.selection", "split_run"),
]


@pytest.fixture
def cpu_only_code_refused(monkeypatch):
    """Each of CPU_ONLY raises when called inside a step on the simulated device."""
    for module_name, name in CPU_ONLY:
        owner = importlib.import_module(module_name)
        *path, attr = name.split(".")
        for part in path:  # a class attribute, e.g. Loop.ready
            owner = getattr(owner, part)

        def refuse(*args, _original=getattr(owner, attr), _where=f"{module_name}.{name}", **kw):
            if in_step():
                raise DeviceMisuseError(f"CPU-only code reached from the device path: {_where}")
            return _original(*args, **kw)

        monkeypatch.setattr(owner, attr, refuse)


def _param(name: str):
    if name in TRANSFERS:
        mark = pytest.mark.xfail(strict=True, raises=HostTransferError, reason=TRANSFERS[name])
        return pytest.param(name, marks=mark)
    return name


@pytest.fixture(scope="module")
def images(data_dir) -> np.ndarray:
    from sparsekit.data import load_mnist

    # (N, 28, 28): the run knows its image shape and draws filters and reconstructions.
    return load_mnist(data_dir, split="train", subset=ROWS).to_array(np.float32).reshape(-1, 28, 28)


def _config(method, epochs):
    return resolve_config(method, hidden=HIDDEN, epochs=epochs, batch_size=BATCH, seed=SEED)


def _epoch_checkpoint_resume(name, backend, run_dir, images, figures=True):
    """One epoch, a checkpoint (with a run writer's figures), then a second epoch from the
    checkpoint; the trainer."""
    run_dir.mkdir()
    method = make_method(name, **SETTINGS.get(name, {}))
    writers = lambda: [RunWriter(run_dir)] if figures else []  # noqa: E731
    first = Trainer(method, images, _config(method, 1), backend=backend, callbacks=writers())
    first.fit()
    if not figures:
        save_checkpoint(run_dir / "checkpoint.npz", first)
    trainer = restore_trainer(
        run_dir, dataset=images, epochs=2, backend=backend, callbacks=writers()
    )
    assert trainer.epoch == 1
    trainer.fit()
    return trainer


def _host_curves(path, history):
    """Stands in for run.save_curves_png (matplotlib: a second a drawing, and nothing on the
    device); checks that the history it would plot holds host numbers only."""
    for row in history:
        for key, value in row.items():
            assert isinstance(value, (int, float, str, type(None))), (key, type(value))
    path.write_bytes(b"curves")
    return path


@pytest.mark.parametrize("name", [_param(name) for name in METHODS])
def test_every_builtin_trains_checkpoints_resumes_and_draws_on_the_device(
    name, images, tmp_path, monkeypatch, cpu_only_code_refused
):
    monkeypatch.setattr(run, "save_curves_png", _host_curves)
    device = simulated_backend()
    trainer = _epoch_checkpoint_resume(name, device, tmp_path / "device", images)
    cpu = _epoch_checkpoint_resume(name, get_backend(), tmp_path / "cpu", images, False)

    assert all(isinstance(v, DeviceArray) for v in trainer.params.values())
    assert len(trainer.history) == 2
    for got, expected in zip(trainer.history, cpu.history, strict=True):
        for key, value in expected.items():
            if key == "seconds":
                continue
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, got["epoch"])
    for key, expected in cpu.params.items():
        got = device.to_numpy(trainer.params[key])
        assert got.dtype == np.float32, key
        if name not in DIVERGES:  # (those: test_device_weights_drift_from_the_cpu below)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())

    run_dir = tmp_path / "device"
    for figure in FIGURES:
        assert (run_dir / figure).stat().st_size > 0, figure
    drawn = render_run(run_dir, out=tmp_path / "drawn")  # from the device run's checkpoint
    assert sorted(p.name for p in drawn) == sorted(FIGURES)

    model = load_run(run_dir, backend=device)
    codes = model.encode(images[:20])
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float32
    reference = cpu.model.encode(images[:20])
    if name not in DIVERGES:  # (the same drift as the weights')
        np.testing.assert_allclose(codes, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


# -- the guard itself -------------------------------------------------------------------------

DEVICE = simulated_backend()
TRANSFER_KINDS = {
    ".get()": lambda a: a.get(),
    "float()": float,
    "int()": int,
    "bool()": bool,
    ".item()": lambda a: a.item(),
    ".tolist()": lambda a: a.tolist(),
    "xp.asnumpy()": xp.asnumpy,
    "to_numpy": DEVICE.to_numpy,  # (a .get())
    "repr()": repr,
    "boolean-mask indexing": lambda a: a[a > 0],
    "xp.flatnonzero": xp.flatnonzero,
}


#: Which shapes each kind applies to (a scalar conversion needs one element, a mask an axis).
SHAPES = {"float()": [()], "int()": [()], "bool()": [()], ".item()": [()]}
SHAPES.update({"boolean-mask indexing": [(3,)], "xp.flatnonzero": [(3,)]})


@pytest.mark.parametrize(
    ("kind", "shape"),
    [(kind, shape) for kind in TRANSFER_KINDS for shape in SHAPES.get(kind, [(), (3,)])],
)
def test_every_host_transfer_inside_a_step_raises_and_names_itself(kind, shape):
    a = xp.asarray(np.full(shape, 1.5, dtype=np.float32))
    name = ".get()" if kind == "to_numpy" else kind
    with DEVICE.step_scope(), pytest.raises(HostTransferError, match=re.escape(f"step: {name}")):
        TRANSFER_KINDS[kind](a)
    TRANSFER_KINDS[kind](a)  # outside a step it is allowed, as on CuPy


@pytest.mark.parametrize(
    "misuse",
    [
        pytest.param(np.asarray, id="np.asarray"),
        pytest.param(lambda a: np.array(a), id="np.array"),
        pytest.param(np.sum, id="np.sum"),
        pytest.param(np.exp, id="np.exp"),
        pytest.param(lambda a: np.add(a, a), id="np.add"),
        pytest.param(lambda a: a + np.ones(3, np.float32), id="plus-host-array"),
        pytest.param(lambda a: np.ones(3, np.float32) * a, id="host-array-times"),
        pytest.param(lambda a: xp.add(a, np.ones(3, np.float32)), id="xp-with-host-array"),
        pytest.param(lambda a: a[np.array([0, 1])], id="host-index"),
        pytest.param(lambda a: a.__setitem__(0, np.ones(1, np.float32)), id="host-value"),
    ],
)
def test_cpu_code_on_a_device_array_raises_inside_and_outside_a_step(misuse):
    a = xp.asarray(np.arange(3, dtype=np.float32))
    with pytest.raises(DeviceMisuseError):
        misuse(a)


def test_device_results_stay_on_the_device_and_scalars_mix_as_on_cupy():
    a = xp.asarray(np.arange(1, 4, dtype=np.float32))
    with DEVICE.step_scope():
        for result in (xp.vdot(a, a), a.sum(), a[0], a.max(), np.float32(2) * a, 2.0 * a, a / 3):
            assert isinstance(result, DeviceArray)
            assert result.dtype == np.float32
        assert xp.vdot(a, a).shape == ()
        b = a.copy()
        b += np.float32(1)
        xp.add.at(b, xp.asarray(np.array([0, 0])), 1.0)  # scatter-add, as cupyx does
        DEVICE.synchronize()  # xp.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(b.get(), [4, 3, 4])
    assert float(xp.vdot(a, a)) == 14.0


def test_the_device_backend_is_declared_a_gpu_and_numpy_scopes_are_no_ops():
    assert DEVICE.is_gpu and not get_backend().is_gpu
    with get_backend().step_scope():  # nothing refused on the CPU
        assert float(np.float32(1.5)) == 1.5
    with pytest.raises(AttributeError, match="fft"):
        xp.fft  # noqa: B018 - only what sparsekit uses is simulated


def test_cpu_only_code_is_refused_inside_a_device_step(cpu_only_code_refused):
    from sparsekit.backend import threads

    calls = []
    threads.split_run(lambda lo, hi: calls.append((lo, hi)), 4)  # outside a step: runs
    with DEVICE.step_scope(), pytest.raises(DeviceMisuseError, match="threads.split_run"):
        threads.split_run(lambda lo, hi: calls.append((lo, hi)), 4)
    assert calls == [(0, 4)]


class HostPenalty(Plain):
    """A code penalty that reads its value back to the host in the step (a sync on a GPU)."""

    name = "host-penalty"

    def code_penalty(self, xp, code):
        return 0.0 * float(code.mean()), xp.zeros_like(code)


class NumpySigmoid(Sigmoid):
    def value(self, xp, z):
        return 1 / (1 + np.exp(-z))


class NumpyActivation(Plain):
    """A CPU-only activation (NumPy instead of xp)."""

    name = "numpy-activation"
    hidden_activation = NumpySigmoid()


@pytest.mark.parametrize(
    ("cls", "error", "message"),
    [
        (HostPenalty, HostTransferError, r"float\(\)"),
        (NumpyActivation, DeviceMisuseError, "np.exp"),
    ],
)
def test_a_method_that_leaves_the_device_fails_in_training(cls, error, message):
    x = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    config = resolve_config(cls, hidden=6, epochs=1, batch_size=20)
    Trainer(cls(), x, config).fit()  # fine on the CPU
    with pytest.raises(error, match=message):
        Trainer(cls(), x, config, backend=simulated_backend()).fit()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=r))
        for n, r in DIVERGES.items()
    ],
)
def test_device_weights_drift_from_the_cpu(name, images, tmp_path):
    """The weights of the methods in DIVERGES, device against CPU (a known gap: strict xfail)."""
    device = simulated_backend()
    trainer = _epoch_checkpoint_resume(name, device, tmp_path / "device", images, False)
    cpu = _epoch_checkpoint_resume(name, get_backend(), tmp_path / "cpu", images, False)
    for key, expected in cpu.params.items():
        got = device.to_numpy(trainer.params[key])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
