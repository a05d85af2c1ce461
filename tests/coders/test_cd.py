"""Coordinate descent for the L1 problem: against LARS, its two paths, its stated rules.

The CPU twin (active sets, rows on threads) and the reference (full sweeps over the batch,
NumPy or the simulated device) stop by the same rule, not after the same moves: they are
compared at a tight tolerance by objective (1e-9 relative in float64) and support. Against
scikit-learn's ``lasso_lars`` the check is the L1 coders' (objective 1e-5, same supports).
"""

from __future__ import annotations

import numpy as np
import pytest
from lasso_problems import PROBLEMS, lars, support

from sparsekit.backend import fused
from sparsekit.backend.simulated import xp as device
from sparsekit.coders import coordinate_descent, l1_objective
from sparsekit.coders.cd import cd_sweeps
from sparsekit.errors import ParameterError


@pytest.fixture
def reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fused loops: cd_sweeps runs its reference."""
    monkeypatch.setitem(fused._state, "numba", None)


def _kkt_violation(x, dictionary, codes, alpha) -> np.ndarray:
    """Each row's largest violation of the lasso's optimality conditions."""
    r = x @ dictionary.T - codes @ (dictionary @ dictionary.T)
    on = np.abs(r - alpha * np.sign(codes))
    off = np.maximum(np.abs(r) - alpha, 0)
    return np.where(codes != 0, on, off).max(axis=1)


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("positive", [False, True])
def test_matches_lasso_lars(request, problem, positive) -> None:
    x, dictionary, alpha = request.getfixturevalue(problem)
    reference = lars(x, dictionary, alpha, positive)
    result = coordinate_descent(x, dictionary, alpha, tol=1e-10, positive=positive)
    assert result.converged
    if positive:
        assert (result.codes >= 0).all()
    np.testing.assert_allclose(
        l1_objective(x, dictionary, result.codes, alpha),
        l1_objective(x, dictionary, reference, alpha),
        rtol=1e-5,
    )
    assert (support(result.codes) == support(reference)).all()


@pytest.mark.parametrize("problem", PROBLEMS)
def test_twin_and_reference_reach_the_same_codes(request, monkeypatch, problem) -> None:
    pytest.importorskip("numba")
    x, dictionary, alpha = request.getfixturevalue(problem)
    twin = coordinate_descent(x, dictionary, alpha, tol=1e-11)
    monkeypatch.setitem(fused._state, "numba", None)
    reference = coordinate_descent(x, dictionary, alpha, tol=1e-11)
    np.testing.assert_allclose(
        l1_objective(x, dictionary, twin.codes, alpha),
        l1_objective(x, dictionary, reference.codes, alpha),
        rtol=1e-9,
    )
    assert (support(twin.codes) == support(reference.codes)).all()
    np.testing.assert_allclose(twin.codes, reference.codes, atol=1e-7)
    # The twin sweeps the whole dictionary far less often: the point of its active sets.
    assert twin.iterations < reference.iterations


def test_float32_codes_stay_float32_and_reach_lars(mnist_problem) -> None:
    x, dictionary, alpha = mnist_problem
    x32, d32 = x.astype(np.float32), dictionary.astype(np.float32)
    result = coordinate_descent(x32, d32, alpha)
    assert result.codes.dtype == np.float32
    ours = l1_objective(x, dictionary, result.codes.astype(np.float64), alpha).sum()
    theirs = l1_objective(x, dictionary, lars(x, dictionary, alpha), alpha).sum()
    assert abs(ours / theirs - 1) < 1e-5


@pytest.mark.parametrize("path", ["fused", "reference"])
def test_stopping_rule_bounds_the_kkt_violation(request, random_problem, path) -> None:
    """At tol, every row ends within a few times tol·(α + max|xDᵀ|) of its optimality
    conditions; a cap too low to meet the tolerance says so row by row."""
    if path == "reference":
        request.getfixturevalue("reference_path")
    x, dictionary, alpha = random_problem
    scale = alpha + np.abs(x @ dictionary.T).max(axis=1)
    for tol in (1e-2, 1e-4):
        result = coordinate_descent(x, dictionary, alpha, tol=tol)
        assert result.converged
        violation = _kkt_violation(x, dictionary, result.codes, alpha)
        assert (violation <= 5 * tol * scale).all()
        assert violation.max() > 0  # a tolerance, not an exact solve
    capped = coordinate_descent(x, dictionary, alpha, tol=1e-12, max_iter=1)
    assert not capped.converged and capped.iterations == 1
    assert (np.asarray(capped.row_iterations) == 1).all()


def test_warm_start_from_the_solution_takes_one_sweep(random_problem) -> None:
    x, dictionary, alpha = random_problem
    solution = coordinate_descent(x, dictionary, alpha, tol=1e-12).codes
    again = coordinate_descent(x, dictionary, alpha, tol=1e-6, init=solution)
    assert again.iterations == 1
    np.testing.assert_allclose(again.codes, solution, atol=1e-9)


def test_polish_certifies_loose_codes(mnist_problem) -> None:
    x, dictionary, alpha = mnist_problem
    loose = coordinate_descent(x, dictionary, alpha, tol=1e-2)
    polished = coordinate_descent(x, dictionary, alpha, tol=1e-2, polish=True)
    exact = l1_objective(x, dictionary, lars(x, dictionary, alpha), alpha).sum()
    assert polished.polished == x.shape[0]
    assert abs(l1_objective(x, dictionary, polished.codes, alpha).sum() / exact - 1) < 1e-9
    assert l1_objective(x, dictionary, loose.codes, alpha).sum() / exact - 1 > 1e-7


def test_a_zero_atom_is_never_used(random_problem) -> None:
    x, dictionary, alpha = random_problem
    with_zero = dictionary.copy()
    with_zero[5] = 0
    for positive in (False, True):
        codes = coordinate_descent(x, with_zero, alpha, positive=positive).codes
        assert np.isfinite(codes).all() and (codes[:, 5] == 0).all()


def test_simulated_device_runs_the_reference(reference_path, random_problem) -> None:
    x, dictionary, alpha = random_problem
    host = coordinate_descent(x, dictionary, alpha, tol=1e-8)
    result = coordinate_descent(device.asarray(x), device.asarray(dictionary), alpha, tol=1e-8)
    np.testing.assert_allclose(result.codes.get(), host.codes, atol=1e-12)
    assert result.iterations == host.iterations


def test_op_refuses_what_the_loop_cannot_take(random_problem) -> None:
    """Fortran-ordered or mixed-dtype arrays go to the reference, with its result."""
    x, dictionary, alpha = random_problem
    gram = dictionary @ dictionary.T
    corr = x @ dictionary.T
    out = []
    for g in (gram, np.asfortranarray(gram)):
        codes = np.zeros_like(corr)
        residual = corr.copy()
        cd_sweeps(np, g, corr, codes, residual, alpha, 1e-10, 1000, False)
        out.append(codes)
    np.testing.assert_allclose(out[0], out[1], atol=1e-7)


def test_bad_input_is_refused(random_problem) -> None:
    x, dictionary, alpha = random_problem
    with pytest.raises(ParameterError, match="alpha"):
        coordinate_descent(x, dictionary, -1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        coordinate_descent(x, dictionary, alpha, max_iter=0)
    with pytest.raises(ParameterError, match="tol"):
        coordinate_descent(x, dictionary, alpha, tol=float("nan"))
    with pytest.raises(ParameterError, match="init"):
        coordinate_descent(x, dictionary, alpha, init=np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="features"):
        coordinate_descent(x[:, :5], dictionary, alpha)
    with pytest.raises(ParameterError, match="dtype"):
        coordinate_descent(x.astype(np.float32), dictionary, alpha)
