"""The sparse coders against scikit-learn's ``sparse_encode``, and their stated rules.

ISTA and FISTA solve ½‖x − zD‖² + α‖z‖₁ per row, which ``sparse_encode`` with
``lasso_lars`` (exact: LARS follows the solution path) solves at the same α; OMP picks the
same k atoms as ``algorithm="omp"``; the thresholding coder is ``algorithm="threshold"``.
Each comparison is in float64, on random data and on MNIST rows, with supports and
objectives compared (objective to 1e-5 relative). With the exact active-set finish (the
polish, on by default) FISTA at a loose tolerance reaches LARS's objective to 1e-6 and its
supports; a row the polish cannot certify keeps its iterate. The simulated device gives the
NumPy results (same formulas, another namespace).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lasso_problems import PROBLEMS, lars, support, unit_rows
from sklearn.decomposition import sparse_encode

from sparsekit.backend.simulated import xp as device
from sparsekit.coders import fista, ista, l1_objective, lipschitz, omp, threshold
from sparsekit.errors import ParameterError


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("coder", [ista, fista])
def test_l1_coders_match_lasso_lars(request, problem, coder) -> None:
    x, dictionary, alpha = request.getfixturevalue(problem)
    reference = lars(x, dictionary, alpha)
    result = coder(x, dictionary, alpha, tol=1e-9, max_iter=200_000)
    assert result.converged
    ours = l1_objective(x, dictionary, result.codes, alpha)
    theirs = l1_objective(x, dictionary, reference, alpha)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert (support(result.codes) == support(reference)).all()


def test_alpha_is_scikit_learns_sparse_encode_alpha(random_problem) -> None:
    """sparse_encode's lasso_cd divides α by the features for Lasso: the same problem."""
    x, dictionary, alpha = random_problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cd = sparse_encode(x, dictionary, algorithm="lasso_cd", alpha=alpha, max_iter=100_000)
    ours = fista(x, dictionary, alpha, tol=1e-9, max_iter=200_000).codes
    np.testing.assert_allclose(
        l1_objective(x, dictionary, ours, alpha).sum(),
        l1_objective(x, dictionary, cd, alpha).sum(),
        rtol=1e-5,
    )
    assert (support(ours) == support(cd)).mean() > 0.99


@pytest.mark.parametrize("problem", PROBLEMS)
def test_omp_matches_scikit_learn(request, problem) -> None:
    x, dictionary, _ = request.getfixturevalue(problem)
    k = 7
    reference = sparse_encode(x, dictionary, algorithm="omp", n_nonzero_coefs=k)
    codes = omp(x, dictionary, k)
    assert ((codes != 0).sum(axis=1) == k).all()
    assert ((codes != 0) == (reference != 0)).all()
    np.testing.assert_allclose(
        l1_objective(x, dictionary, codes, 0.0),
        l1_objective(x, dictionary, reference, 0.0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(codes, reference, atol=1e-8)


def test_omp_never_picks_an_atom_twice() -> None:
    """A signal in the span of two atoms still gets exactly k distinct atoms."""
    rng = np.random.default_rng(3)
    dictionary = unit_rows(rng.standard_normal((20, 10)))
    x = (2 * dictionary[3] - dictionary[11])[None, :]
    codes = omp(x, dictionary, 5)
    assert (codes != 0).sum() + (codes == 0).sum() == 20
    np.testing.assert_allclose(codes @ dictionary, x, atol=1e-10)
    assert abs(codes[0, 3] - 2) < 1e-10 and abs(codes[0, 11] + 1) < 1e-10


def test_threshold_is_scikit_learns(random_problem) -> None:
    x, dictionary, alpha = random_problem
    reference = sparse_encode(x, dictionary, algorithm="threshold", alpha=alpha)
    np.testing.assert_allclose(threshold(x, dictionary, alpha), reference, atol=1e-12)
    assert (threshold(x, dictionary, alpha, positive=True) >= 0).all()


def test_fista_needs_fewer_iterations_than_ista(mnist_problem) -> None:
    x, dictionary, alpha = mnist_problem
    for tol in (1e-4, 1e-6):
        slow = ista(x, dictionary, alpha, tol=tol, max_iter=100_000)
        fast = fista(x, dictionary, alpha, tol=tol, max_iter=100_000)
        assert fast.iterations <= slow.iterations
        assert (np.asarray(fast.row_iterations) <= np.asarray(slow.row_iterations)).mean() > 0.9


def test_stopping_rule_is_honoured(random_problem) -> None:
    """Each row stops at the first check where its relative change is ≤ tol, or at the cap."""
    x, dictionary, alpha = random_problem
    capped = fista(x, dictionary, alpha, tol=1e-12, max_iter=7, polish=False)
    assert capped.iterations == 7 and not capped.converged
    assert (capped.row_iterations == 7).all()
    exact = fista(x, dictionary, alpha, tol=0, max_iter=7)  # tol=0: exactly the cap
    np.testing.assert_array_equal(exact.codes, capped.codes)

    tol = 1e-3
    result = ista(x, dictionary, alpha, tol=tol, max_iter=5000, polish=False)
    assert result.converged and result.polished == 0
    lip = lipschitz(dictionary)
    for row in (0, 7, 19):
        n = int(result.row_iterations[row])
        before = ista(
            x[row : row + 1], dictionary, alpha, tol=0, max_iter=n - 1, lipschitz_constant=lip
        )
        at = ista(x[row : row + 1], dictionary, alpha, tol=0, max_iter=n, lipschitz_constant=lip)
        change = np.linalg.norm(at.codes - before.codes)
        assert change <= tol * np.linalg.norm(at.codes)
        np.testing.assert_allclose(at.codes[0], result.codes[row], rtol=1e-9, atol=1e-12)
        if n > 1:
            earlier = ista(
                x[row : row + 1], dictionary, alpha, tol=0, max_iter=n - 2, lipschitz_constant=lip
            )
            assert np.linalg.norm(before.codes - earlier.codes) > tol * np.linalg.norm(before.codes)

    every = ista(x, dictionary, alpha, tol=tol, max_iter=5000, check_every=10)
    assert (every.row_iterations % 10 == 0).all()


def test_check_every_and_cap_validated(random_problem) -> None:
    x, dictionary, alpha = random_problem
    for bad in ({"max_iter": 0}, {"tol": -1.0}, {"check_every": 0}):
        with pytest.raises(ParameterError):
            ista(x, dictionary, alpha, **bad)
    with pytest.raises(ParameterError, match="features"):
        fista(x[:, :5], dictionary, alpha)
    with pytest.raises(ParameterError, match="k must be"):
        omp(x, dictionary, 49)


def test_float32_stays_float32(random_problem) -> None:
    x, dictionary, alpha = (
        a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in random_problem
    )
    assert fista(x, dictionary, alpha).codes.dtype == np.float32
    assert ista(x, dictionary, alpha).codes.dtype == np.float32
    assert omp(x, dictionary, 3).dtype == np.float32
    assert threshold(x, dictionary, alpha).dtype == np.float32


def test_lipschitz_is_the_largest_eigenvalue(random_problem) -> None:
    _, dictionary, _ = random_problem
    exact = np.linalg.eigvalsh(dictionary @ dictionary.T).max()
    assert exact <= float(lipschitz(dictionary)) <= 1.02 * exact


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simulated_device_gives_the_numpy_codes(random_problem, dtype) -> None:
    x, dictionary, alpha = random_problem
    x, dictionary = x.astype(dtype), dictionary.astype(dtype)
    dx, dd = device.asarray(x), device.asarray(dictionary)
    for coder in (ista, fista):
        host = coder(x, dictionary, alpha, tol=1e-4)
        dev = coder(dx, dd, alpha, tol=1e-4)
        assert dev.iterations == host.iterations
        assert dev.polished == host.polished > 0
        np.testing.assert_allclose(dev.codes.get(), host.codes, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(omp(dx, dd, 5).get(), omp(x, dictionary, 5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        threshold(dx, dd, alpha).get(), threshold(x, dictionary, alpha), rtol=1e-5, atol=1e-6
    )


def _objectives(x, dictionary, codes, alpha) -> np.ndarray:
    return l1_objective(x, dictionary, codes, alpha)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_polish_makes_a_loose_fista_exact(request, problem) -> None:
    """At tol=1e-2 the iterate is far from optimal; the polish gives LARS's objective to
    1e-6 (relative, per row) and LARS's supports."""
    x, dictionary, alpha = request.getfixturevalue(problem)
    reference = lars(x, dictionary, alpha)
    loose = fista(x, dictionary, alpha, tol=1e-2, polish=False)
    result = fista(x, dictionary, alpha, tol=1e-2)
    assert result.polished == x.shape[0] and loose.polished == 0
    np.testing.assert_array_equal(result.row_iterations, loose.row_iterations)
    theirs = _objectives(x, dictionary, reference, alpha)
    np.testing.assert_allclose(_objectives(x, dictionary, result.codes, alpha), theirs, rtol=1e-6)
    assert not np.allclose(_objectives(x, dictionary, loose.codes, alpha), theirs, rtol=1e-6)
    assert (support(result.codes) == support(reference)).all()
    np.testing.assert_allclose(result.codes, reference, atol=1e-6)


def test_a_row_the_polish_cannot_certify_keeps_its_iterate(mnist_problem, monkeypatch) -> None:
    """Five FISTA steps, no correction round and no retry: the first support is wrong for
    most rows. Those keep the unpolished iterate exactly; the certified ones are no worse.
    With the correction rounds and the retries (the defaults) every row is certified."""
    from sparsekit.coders import l1

    x, dictionary, alpha = mnist_problem
    monkeypatch.setattr(l1, "POLISH_ROUNDS", 0)
    monkeypatch.setattr(l1, "POLISH_RETRIES", 0)
    plain = fista(x, dictionary, alpha, tol=1e-2, max_iter=5, polish=False)
    result = fista(x, dictionary, alpha, tol=1e-2, max_iter=5)
    kept = (result.codes == plain.codes).all(axis=1)
    assert result.polished < x.shape[0]
    assert kept.sum() == x.shape[0] - result.polished
    before = _objectives(x, dictionary, plain.codes, alpha)
    after = _objectives(x, dictionary, result.codes, alpha)
    assert (after <= before * (1 + 1e-12)).all()
    assert (after[~kept] < before[~kept]).all()

    monkeypatch.undo()
    full = fista(x, dictionary, alpha, tol=1e-2, max_iter=5)
    assert full.polished == x.shape[0] > result.polished
    np.testing.assert_allclose(
        _objectives(x, dictionary, full.codes, alpha),
        _objectives(x, dictionary, lars(x, dictionary, alpha), alpha),
        rtol=1e-6,
    )


def test_polish_survives_singular_systems(random_problem) -> None:
    """A duplicated atom makes G[S,S] exactly singular; α near 0 gives iterates with more
    atoms than features (|S| > D). Neither raises, and no row gets worse."""
    x, dictionary, _ = random_problem
    doubled = np.vstack([dictionary, dictionary[:5]])
    for d, alpha in ((doubled, 0.5), (dictionary, 1e-3)):
        plain = fista(x, d, alpha, tol=1e-2, max_iter=30, polish=False)
        result = fista(x, d, alpha, tol=1e-2, max_iter=30)
        before = _objectives(x, d, plain.codes, alpha)
        after = _objectives(x, d, result.codes, alpha)
        assert np.isfinite(result.codes).all()
        assert (after <= before * (1 + 1e-9)).all()
    assert ((plain.codes != 0).sum(axis=1) > x.shape[1]).any()  # some |S| > D rows were seen


@pytest.mark.parametrize("problem", PROBLEMS)
def test_polish_with_positive_codes(request, problem) -> None:
    x, dictionary, alpha = request.getfixturevalue(problem)
    exact = fista(x, dictionary, alpha, tol=1e-10, max_iter=200_000, positive=True, polish=False)
    result = fista(x, dictionary, alpha, tol=1e-2, positive=True)
    assert result.polished == x.shape[0]
    assert (result.codes >= 0).all()
    np.testing.assert_allclose(
        _objectives(x, dictionary, result.codes, alpha),
        _objectives(x, dictionary, exact.codes, alpha),
        rtol=1e-6,
    )
    assert (support(result.codes) == support(exact.codes)).all()


def test_polish_in_float32(mnist_problem) -> None:
    x64, d64, alpha = mnist_problem
    x, dictionary = x64.astype(np.float32), d64.astype(np.float32)
    reference = _objectives(x64, d64, lars(x64, d64, alpha), alpha)
    for coder in (fista, ista):
        result = coder(x, dictionary, alpha, tol=1e-2)
        assert result.codes.dtype == np.float32
        assert result.polished >= 0.9 * x.shape[0]
        ours = _objectives(x64, d64, result.codes.astype(np.float64), alpha)
        assert ours.sum() <= reference.sum() * (1 + 1e-5)
