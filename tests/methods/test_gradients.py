"""Every hand-written gradient of every built-in against central finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit import get_backend, load_registry, make_plugin_manager  # noqa: E402
from sparsekit.core import step as autoencoder
from sparsekit.testing.gradcheck import check_gradients, random_problem

BUILTINS = [
    "plain", "l2", "kl", "arora", "ksparse", "topk", "batchtopk", "jumprelu", "gated", "matryoshka",
    "standard", "mp-sae",
    "dict-learning",
]  # fmt: skip
# Small problems; k below the hidden size so the top-k mask really drops units.
PARAMS = {
    "ksparse": {"k": 3, "k_start": 3},
    "kl": {"rho": 0.2, "beta": 3.0},
    "arora": {"tau": 0.4},
    "topk": {"k": 3, "k_aux": 2},
    "batchtopk": {"k": 3, "k_aux": 2},
    "matryoshka": {"k": 3, "k_aux": 2, "prefixes": "0.25,0.5,1"},
    "gated": {"l1_coef": 0.3},
    "standard": {"l1": 0.3},
    "mp-sae": {"k": 3},
}


def cases():
    registry = load_registry(make_plugin_manager(entry_points=False))
    for name in BUILTINS:
        cls = registry.get(name)
        for tied in (True, False):
            if (tied and cls.allows_tied) or (not tied and cls.allows_untied):
                yield pytest.param(cls, tied, id=f"{name}-{'tied' if tied else 'untied'}")


@pytest.mark.parametrize(("cls", "tied"), list(cases()))
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences(cls, tied, seed):
    method = cls(**PARAMS.get(cls.name, {}))
    report = check_gradients(method, tied=tied, seed=seed, tolerance=1e-6)
    expected = {"W_enc", "b_enc", "b_dec"} | (set() if tied else {"W_dec"})
    # Only an ObjectiveMethod has parameters beyond the four (its extra_params).
    assert set(report.errors) == expected | set(getattr(cls, "extra_params", {}))
    assert report.ok, f"{cls.name} tied={tied}: relative errors {report.errors}"


def test_the_check_catches_a_wrong_gradient():
    """A method whose activation derivative is off by a factor must fail the same check."""
    from sparsekit.core.activations import Activation, sigmoid
    from sparsekit.methods.plain import Plain

    class BrokenSigmoid(Activation):  # f′ off by 10%
        def value(self, xp, z):
            return sigmoid(xp, z)

        def derivative(self, xp, z, a):
            return 1.1 * a * (1 - a)

    class Broken(Plain):
        name = "broken"
        hidden_activation = BrokenSigmoid()

    report = check_gradients(Broken(), tied=False)
    assert not report.ok
    assert report.errors["W_enc"] > 1e-3


def test_every_built_in_is_covered():
    registry = load_registry(make_plugin_manager(entry_points=False))
    assert sorted(info.name for info in registry) == sorted(BUILTINS)


def test_topk_mask_really_drops_units_in_the_checked_problem():
    registry = load_registry(make_plugin_manager(entry_points=False))
    method = registry.create("ksparse", k=3, k_start=3)
    params, x = random_problem(method, tied=True)
    fwd = autoencoder.forward(method, get_backend(dtype="float64"), params, x)
    code = autoencoder.dense_code(get_backend(dtype="float64"), fwd)
    assert np.all((code != 0).sum(axis=1) == 3)
    assert code.shape[1] > 3
