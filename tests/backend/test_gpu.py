"""Every built-in on CuPy gives NumPy's results (float64: tight; float32: float32 tolerance).

Skipped cleanly where CuPy or a CUDA device is missing; ``scripts/gpu-check`` runs these
tests and the GPU benchmark on a machine with one.
"""

from __future__ import annotations

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")


def _device_count() -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no runtime, no device
        return 0


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_device_count() < 1, reason="CuPy is installed but no CUDA device"),
]

from sparsekit import get_backend, load_registry, make_plugin_manager  # noqa: E402
from sparsekit.backend import sparse_code  # noqa: E402
from sparsekit.backend.selection import top_k_indices  # noqa: E402
from sparsekit.core import step as autoencoder  # noqa: E402
from sparsekit.training.optim import Adam  # noqa: E402
from sparsekit.training.settings import resolve_config  # noqa: E402
from sparsekit.training.trainer import Trainer  # noqa: E402

BUILTINS = ["plain", "l2", "kl", "arora", "ksparse"]
SETTINGS = {"ksparse": {"k": 5, "k_start": 5}}


def _method(name):
    method = load_registry(make_plugin_manager(entry_points=False)).create(
        name, **SETTINGS.get(name, {})
    )
    method.validate(40, 30)
    return method


def _layouts():
    registry = load_registry(make_plugin_manager(entry_points=False))
    for name in BUILTINS:
        cls = registry.get(name)
        for tied in (True, False):
            if (tied and cls.allows_tied) or (not tied and cls.allows_untied):
                yield pytest.param(name, tied, id=f"{name}-{'tied' if tied else 'untied'}")


def _problem(method, tied, seed=0, rows=64, dim=30, hidden=40):
    """Parameters and data (float64 NumPy) whose top-k supports are far from ties."""
    for attempt in range(50):
        rng = np.random.default_rng(seed * 1000 + attempt)
        params = method.init_params(rng, dim, hidden, tied, rng.random((50, dim)))
        params["b_enc"] = 0.1 * rng.standard_normal(hidden)
        params["b_dec"] = 0.1 * rng.standard_normal(dim)
        x = rng.random((rows, dim))
        z = x @ params["W_enc"].T + params["b_enc"]
        k = getattr(method, "k", None)
        if k is None:
            return params, x
        ordered = np.sort(z, axis=1)
        gap = ordered[:, -k] - ordered[:, -k - 1]
        if gap.min() > 1e-3 * np.abs(z).max():  # float32 rounding cannot swap units
            return params, x
    raise AssertionError("no well-separated problem found")


def _step(method, backend, params, x):
    """Loss, gradients (or the updated parameters) and the forward pass, as NumPy."""
    xp = backend.xp
    p = {k: backend.asarray(np.array(v)) for k, v in params.items()}  # a copy: updated in place
    xb = backend.asarray(x)
    if method.own_update:
        out = method.update(backend, p, xb, 0.05)
        result = {"loss": out.loss, **{f"param.{k}": v for k, v in p.items()}}
        fwd = out.forward
    else:
        loss, grads, fwd, _ = autoencoder.loss_and_grads(method, backend, p, xb)
        result = {"loss": loss, **{f"grad.{k}": g.copy() for k, g in grads.items()}}
        Adam(1e-3).step(xp, p, grads)
        result.update({f"param.{k}": v for k, v in p.items()})
    result["xhat"] = fwd.xhat
    return {k: backend.to_numpy(xp.asarray(v)) for k, v in result.items()}


@pytest.mark.parametrize(("name", "tied"), list(_layouts()))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_step_on_the_gpu_matches_numpy(name, tied, dtype):
    method = _method(name)
    params, x = _problem(method, tied)
    cpu = _step(method, get_backend(gpu=False, dtype=dtype), params, x)
    gpu = _step(method, get_backend(gpu=True, dtype=dtype), params, x)
    rtol, atol = (1e-9, 1e-12) if dtype == "float64" else (2e-4, 2e-5)
    assert set(cpu) == set(gpu)
    for key, expected in cpu.items():
        got = gpu[key]
        assert got.dtype == np.dtype(dtype), f"{key} came back as {got.dtype}"
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * scale, err_msg=key)


@pytest.mark.parametrize("name", BUILTINS)
def test_two_epochs_on_the_gpu_track_numpy(name):
    rng = np.random.default_rng(5)
    data = rng.random((600, 30)).astype(np.float32)
    histories = []
    for gpu in (False, True):
        method = _method(name)
        config = resolve_config(method, hidden=40, epochs=2, batch_size=100, gpu=gpu, seed=3)
        trainer = Trainer(method, data, config)
        trainer.fit()
        histories.append(trainer.history)
    for cpu_row, gpu_row in zip(*histories, strict=True):
        assert gpu_row["loss"] == pytest.approx(cpu_row["loss"], rel=1e-2, abs=1e-6)
        assert gpu_row["mse"] == pytest.approx(cpu_row["mse"], rel=1e-2, abs=1e-6)


def test_sparse_kernels_on_the_gpu_equal_numpy():
    rng = np.random.default_rng(1)
    gpu, cpu = get_backend(gpu=True, dtype="float64"), get_backend(dtype="float64")
    z = rng.standard_normal((33, 50))
    indices = top_k_indices(np, z, 7)
    values = rng.standard_normal((33, 7))
    w = rng.standard_normal((50, 21))
    x = rng.standard_normal((33, 21))
    ci, cv, cw, cx = (cupy.asarray(a) for a in (indices, values, w, x))
    pairs = [
        (sparse_code.code_times(gpu, ci, cv, cw), sparse_code.code_times(cpu, indices, values, w)),
        (
            sparse_code.code_transpose_times(gpu, ci, cv, cx, 50),
            sparse_code.code_transpose_times(cpu, indices, values, x, 50),
        ),
        (
            sparse_code.code_transpose_times(gpu, ci, (cv, cv), (cx, cx), 50),
            sparse_code.code_transpose_times(cpu, indices, (values, values), (x, x), 50),
        ),
        (sparse_code.gathered_dot(gpu, cx, cw, ci), sparse_code.gathered_dot(cpu, x, w, indices)),
        (
            sparse_code.column_sums(gpu, ci, cv, 50),
            sparse_code.column_sums(cpu, indices, values, 50),
        ),
    ]
    for got, expected in pairs:
        np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=1e-10, atol=1e-12)


def test_top_k_on_the_gpu_keeps_the_largest_by_signed_value():
    z = np.random.default_rng(2).standard_normal((20, 60)) - 0.5
    got = cupy.asnumpy(top_k_indices(cupy, cupy.asarray(z), 9))
    for row, kept in zip(z, got, strict=True):
        assert set(kept.tolist()) == set(np.argsort(row)[-9:].tolist())
