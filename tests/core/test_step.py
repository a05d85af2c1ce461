"""The step the trainer runs against the reference step, the formula table line by line.

:func:`sparsekit.core.step.reference_loss_and_grads` computes the table of the module's
docstring on dense arrays; :func:`~sparsekit.core.step.loss_and_grads` arranges the same
formulas for speed (fused activation products, a shared penalty row, top-k sparse products,
weight decay folded in). With dense supports they agree bit for bit: with the fused loops
on and off, every gradient is the same array. With a top-k support the sparse products
add each row's k kept terms in another order: equal to 1e-12 (float64) / 1e-5 (float32).
The loss agrees to rounding when a fused pass sums squares in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsekit
from sparsekit.backend import fused
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import TopK

REGISTRY = sparsekit.load_registry()
#: Every registered method trained by the generic step (own objectives are their own step).
GENERIC = [info.name for info in REGISTRY if not REGISTRY.get(info.name).own_objective]
PARAMS = {"ksparse": {"k": 4, "k_start": 4}, "arora": {"tau": 0.3}}


def _cases():
    for name in GENERIC:
        cls = REGISTRY.get(name)
        for tied in (True, False):
            if cls.allows_tied if tied else cls.allows_untied:
                yield name, tied


CASES = list(_cases())


def _problem(name: str, tied: bool, dtype: str):
    method = REGISTRY.create(name, **PARAMS.get(name, {}))
    backend = sparsekit.get_backend(False, dtype)
    rng = np.random.default_rng(0)
    dim, hidden, batch = 30, 20, 48
    x = rng.uniform(0, 1, size=(batch, dim)).astype(dtype)
    params = method.init_params(np.random.default_rng(1), dim, hidden, tied, x)
    params = {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
    params["b_enc"] = params["b_enc"] + (0.1 * rng.standard_normal(hidden)).astype(dtype)
    params["b_dec"] = params["b_dec"] + (0.1 * rng.standard_normal(dim)).astype(dtype)
    return method, backend, params, x


def test_every_generic_built_in_is_covered():
    assert {"plain", "l2", "kl", "arora", "ksparse", "relu-l1"} <= set(GENERIC)


@pytest.mark.parametrize("jit", ["fused", "reference-ops"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "tied"), CASES, ids=[f"{m}-{'tied' if t else 'untied'}" for m, t in CASES]
)
def test_step_equals_the_reference(name, tied, dtype, jit, monkeypatch):
    if jit == "reference-ops":
        monkeypatch.setitem(fused._state, "numba", None)
    method, backend, params, x = _problem(name, tied, dtype)
    copy = {k: v.copy() for k, v in params.items()}
    loss, grads, fwd, rec = autoencoder.loss_and_grads(method, backend, copy, x)
    ref_loss, ref_grads, ref_rec = autoencoder.reference_loss_and_grads(method, backend, params, x)
    assert set(grads) == set(ref_grads) == set(params)
    for k, v in copy.items():  # the step reads its parameters, never writes them
        assert np.array_equal(v, params[k])
    topk = isinstance(fwd.support, TopK)
    for k in grads:
        assert grads[k].dtype == np.dtype(dtype), k
        if topk:
            rtol = 1e-12 if dtype == "float64" else 1e-5
            scale = float(np.max(np.abs(ref_grads[k]))) or 1.0
            np.testing.assert_allclose(grads[k], ref_grads[k], rtol=rtol, atol=rtol * scale)
        else:
            assert np.array_equal(grads[k], ref_grads[k]), (
                f"{k}: max |Δ| = {np.max(np.abs(grads[k] - ref_grads[k]))}"
            )
    rel = 1e-6 if dtype == "float32" else 1e-13
    assert float(rec) == pytest.approx(float(ref_rec), rel=rel)
    assert float(loss) == pytest.approx(float(ref_loss), rel=rel)
    if jit == "reference-ops" and not topk:  # the same operations: the same loss bits
        assert float(loss) == float(ref_loss)


def test_a_sigmoid_method_takes_the_fused_products(monkeypatch):
    """Declared sigmoids go through the fused backward products (and it is still the
    reference's result, above); a declared identity does not."""
    pytest.importorskip("numba")
    ran = []
    real = fused.Op.__call__

    def spy(op, *args, **kwargs):
        ran.append(op.__name__)
        return real(op, *args, **kwargs)

    monkeypatch.setattr(fused.Op, "__call__", spy)
    method, backend, params, x = _problem("kl", False, "float32")
    autoencoder.loss_and_grads(method, backend, params, x)
    assert {"sigmoid_output_delta", "sigmoid_hidden_delta", "kl_penalty"} <= set(ran)
    ran.clear()
    method, backend, params, x = _problem("relu-l1", False, "float32")
    autoencoder.loss_and_grads(method, backend, params, x)
    assert not {"sigmoid_output_delta", "sigmoid_hidden_delta"} & set(ran)
