"""Matching pursuit (sparsekit.coders.matching_pursuit) against a row-by-row loop."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.coders import Pursuit, matching_pursuit
from sparsekit.errors import ParameterError


def unit_rows(rng: np.random.Generator, hidden: int, dim: int) -> np.ndarray:
    d = rng.standard_normal((hidden, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def loop_pursuit(x: np.ndarray, d: np.ndarray, k: int, nonnegative: bool):
    """The textbook loop, one row at a time (SAELens' rule when nonnegative)."""
    idx = np.zeros((x.shape[0], k), dtype=np.int64)
    coef = np.zeros((x.shape[0], k))
    res = x.astype(np.float64).copy()
    for i in range(x.shape[0]):
        for t in range(k):
            corr = d @ res[i]
            if nonnegative:
                corr = np.maximum(corr, 0)
            j = int(np.argmax(corr))
            idx[i, t], coef[i, t] = j, corr[j]
            res[i] -= corr[j] * d[j]
    return idx, coef, res


@pytest.mark.parametrize("nonnegative", [True, False])
@pytest.mark.parametrize("gram", [True, False])
def test_matches_the_row_by_row_loop(nonnegative, gram):
    rng = np.random.default_rng(0)
    d = unit_rows(rng, 40, 12)
    x = rng.standard_normal((30, 12))
    got = matching_pursuit(x, d, 7, nonnegative=nonnegative, gram=gram)
    idx, coef, res = loop_pursuit(x, d, 7, nonnegative)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_allclose(got.coefficients, coef, atol=1e-12)
    np.testing.assert_allclose(got.residual, res, atol=1e-12)
    if nonnegative:
        assert (got.coefficients >= 0).all()


def test_the_signed_rule_takes_negative_coefficients_the_nonnegative_one_does_not():
    d = np.eye(3)
    x = np.array([[-1.0, -2.0, -0.5]])
    signed = matching_pursuit(x, d, 1, nonnegative=False)
    assert signed.indices.tolist() == [[2]] and signed.coefficients[0, 0] == -0.5


def test_code_reconstructs_and_residuals_shrink_and_dtype_is_kept():
    rng = np.random.default_rng(1)
    d = unit_rows(rng, 50, 16).astype(np.float32)
    x = rng.standard_normal((20, 16)).astype(np.float32)
    norms = [np.linalg.norm(x, axis=1)]
    for k in range(1, 6):
        norms.append(np.linalg.norm(matching_pursuit(x, d, k).residual, axis=1))
    assert all((b <= a + 1e-5).all() for a, b in zip(norms, norms[1:], strict=False))
    p = matching_pursuit(x, d, 5)
    assert p.residual.dtype == np.float32 and p.coefficients.dtype == np.float32
    z = p.code(50)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z @ d + p.residual, x, atol=1e-5)


def test_an_atom_chosen_twice_has_its_coefficients_summed():
    # Two atoms 60 degrees apart in the plane: pursuit of a vector between them alternates.
    d = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    x = np.array([[1.0, 1.0]])
    p = matching_pursuit(x, d, 6)
    assert len(set(p.indices[0].tolist())) < 6  # repeats
    z = p.code(2)
    for j in (0, 1):
        assert z[0, j] == pytest.approx(p.coefficients[0][p.indices[0] == j].sum())
    np.testing.assert_allclose(z @ d + p.residual, x, atol=1e-12)


def test_nothing_positive_picks_atom_zero_with_a_zero_coefficient():
    d = np.eye(3)
    x = np.array([[-1.0, -2.0, -0.5]])
    p = matching_pursuit(x, d, 2)
    assert p.indices.tolist() == [[0, 0]] and (p.coefficients == 0).all()
    np.testing.assert_array_equal(p.residual, x)


def test_given_selections_give_the_same_coefficients():
    rng = np.random.default_rng(2)
    d = unit_rows(rng, 30, 10)
    x = rng.standard_normal((15, 10))
    free = matching_pursuit(x, d, 4)
    fixed = matching_pursuit(x, d, 4, indices=free.indices)
    assert isinstance(fixed, Pursuit)
    np.testing.assert_allclose(fixed.coefficients, free.coefficients, atol=1e-12)
    np.testing.assert_allclose(fixed.residual, free.residual, atol=1e-12)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_a_bad_k_is_refused(k):
    with pytest.raises(ParameterError, match="k must be a positive integer"):
        matching_pursuit(np.zeros((2, 3)), np.eye(3), k)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ParameterError, match="expected B × D and H × D"):
        matching_pursuit(np.zeros((2, 3)), np.eye(4), 1)
