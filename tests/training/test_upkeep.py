"""The trainer's upkeep (sparsekit/training/upkeep.py) on tiny hand-made cases: unit-norm
decoder rows, b_dec from the data, dead-unit counting and resampling, and its checkpoint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sparsekit.backend import get_backend
from sparsekit.core.contract import TopK, Upkeep
from sparsekit.core.step import Forward
from sparsekit.methods._sae import PAPER_DEAD_AFTER
from sparsekit.methods.plain import Plain
from sparsekit.methods.topk import TopKSAE
from sparsekit.training.optim import Adam
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer
from sparsekit.training.upkeep import (
    RESAMPLE_ENCODER_SCALE,
    Upkeeper,
    dead_window,
    decoder_name,
    fired_units,
    geometric_median,
)

BACKEND = get_backend(dtype="float64")


def upkeeper(hidden: int = 4, seed: int = 0, **upkeep) -> Upkeeper:
    return Upkeeper(Upkeep(**upkeep), Plain(), BACKEND, hidden=hidden, seed=seed)


def dense_forward(code: np.ndarray, xhat: np.ndarray | None = None) -> Forward:
    """A forward pass with a dense code (what count_step and resample read)."""
    return Forward(z=code, a=code, support=None, code=code, code_values=None, y=xhat, xhat=xhat)


def params(hidden: int = 4, dim: int = 3, seed: int = 0, tied: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    out = {
        "W_enc": rng.standard_normal((hidden, dim)),
        "b_enc": rng.standard_normal(hidden),
        "b_dec": np.zeros(dim),
    }
    if not tied:
        out["W_dec"] = rng.standard_normal((hidden, dim)) * 3
    return out


# -- initialisation ----------------------------------------------------------------------------


def test_geometric_median_resists_an_outlier_the_mean_follows():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]])
    median = geometric_median(x)
    assert np.all((median > 0) & (median < 1)) and np.all(x.mean(axis=0) > 20)

    def total_distance(point: np.ndarray) -> float:
        return float(np.linalg.norm(x - point, axis=1).sum())

    # It minimises the sum of distances (no nearby point does better).
    for step in np.array([[1, 0], [0, 1], [1, 1], [1, -1]]) * 1e-3:
        assert total_distance(median) <= min(total_distance(median + s) for s in (step, -step))
    # Points on a line: the median is the middle point.
    np.testing.assert_allclose(geometric_median(np.array([[0.0], [1.0], [5.0]])), [1.0], atol=1e-3)


@pytest.mark.parametrize("how", ["mean", "geometric_median"])
def test_b_dec_from_the_data_sample(how):
    sample = np.random.default_rng(1).standard_normal((50, 3)) + 7
    got = upkeeper(b_dec_init=how).init_params(params(), sample)["b_dec"]
    want = sample.mean(axis=0) if how == "mean" else geometric_median(sample)
    np.testing.assert_allclose(got, want)


def test_no_b_dec_init_leaves_b_dec_alone():
    p = params()
    p["b_dec"] = np.full(3, 2.0)
    assert np.array_equal(upkeeper().init_params(p, np.ones((5, 3)))["b_dec"], np.full(3, 2.0))


@pytest.mark.parametrize("tied", [False, True])
def test_unit_norm_decoder_rows_at_initialisation(tied):
    p = upkeeper(unit_norm_decoder=True).init_params(params(tied=tied), np.ones((5, 3)))
    name = decoder_name(p)
    assert name == ("W_enc" if tied else "W_dec")
    np.testing.assert_allclose(np.linalg.norm(p[name], axis=1), 1.0)


# -- around each step --------------------------------------------------------------------------


def test_project_removes_the_radial_part_of_the_decoder_gradient():
    keeper = upkeeper(unit_norm_decoder=True)
    p = keeper.init_params(params(), np.ones((5, 3)))
    grad = np.random.default_rng(2).standard_normal(p["W_dec"].shape)
    tangent = grad.copy()
    keeper.project("W_dec", tangent, p)
    np.testing.assert_allclose((tangent * p["W_dec"]).sum(axis=1), 0.0, atol=1e-12)
    # What was removed is along each row.
    removed = grad - tangent
    np.testing.assert_allclose(np.cross(removed, p["W_dec"]), 0.0, atol=1e-12)
    other = grad.copy()
    keeper.project("W_enc", other, p)  # not the decoder: untouched
    assert np.array_equal(other, grad)


def test_renormalise_puts_rows_back_on_the_sphere_and_nothing_without_the_option():
    p = params()
    upkeeper(unit_norm_decoder=True).renormalise("W_dec", p)
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1.0)
    q = params()
    upkeeper().renormalise("W_dec", q)
    assert np.array_equal(q["W_dec"], params()["W_dec"])


def test_fired_units_for_dense_and_top_k_codes():
    code = np.array([[0.0, 2.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    assert fired_units(BACKEND, dense_forward(code), 4).tolist() == [False, True, False, True]
    support = TopK(indices=np.array([[0, 2], [2, 3]]))
    fwd = Forward(None, None, support, None, np.array([[1.0, 0.0], [-2.0, 0.0]]), None, None)
    assert fired_units(BACKEND, fwd, 4).tolist() == [True, False, False, False]


def test_dead_units_count_samples_since_they_last_fired():
    keeper = upkeeper(dead_after=10)
    assert keeper.step_state().dead.tolist() == [False] * 4
    x = np.zeros((4, 3))
    fires_0_and_1 = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    fires_0 = np.zeros((4, 4))
    fires_0[0, 0] = 1
    for code in (fires_0_and_1, fires_0, fires_0):
        assert keeper.count_step(x, dense_forward(code)) is False  # no resampling asked
    assert keeper.since_fired.tolist() == [0, 8, 12, 12]
    assert keeper.step_state().dead.tolist() == [False, False, True, True]
    assert keeper.steps == 3


def test_without_dead_after_nothing_is_counted():
    keeper = upkeeper()
    assert keeper.step_state().dead is None and not keeper.active
    assert keeper.count_step(np.zeros((2, 3)), dense_forward(np.zeros((2, 4)))) is False
    assert keeper.steps == 1


def test_resampling_reinitialises_dead_units_from_badly_reconstructed_rows():
    hidden, dim = 4, 3
    keeper = upkeeper(hidden, dead_after=2, resample_every=2)
    p = params(hidden, dim)
    before = {k: v.copy() for k, v in p.items()}
    x = np.array([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    xhat = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # only row 0 is badly reconstructed
    code = np.zeros((2, hidden))
    code[:, :2] = 1.0  # units 0 and 1 fire, 2 and 3 never do
    opt = Adam(0.01)
    opt.step(np, p, {k: np.ones_like(v) for k, v in p.items()})
    for k in before:
        before[k] = p[k].copy()
    assert keeper.count_step(x, dense_forward(code, xhat)) is False
    assert keeper.count_step(x, dense_forward(code, xhat)) is True  # every 2 steps
    assert keeper.resample(p, x, dense_forward(code, xhat), opt) == 2
    direction = (x[0] - p["b_dec"]) / np.linalg.norm(x[0] - p["b_dec"])
    live_norm = np.linalg.norm(before["W_enc"][:2], axis=1).mean()
    for j in (2, 3):
        np.testing.assert_allclose(p["W_dec"][j], direction)
        np.testing.assert_allclose(p["W_enc"][j], RESAMPLE_ENCODER_SCALE * live_norm * direction)
        assert p["b_enc"][j] == 0
        for state in (opt.m, opt.v):
            assert not state["W_enc"][j].any() and not state["W_dec"][j].any()
            assert state["b_enc"][j] == 0
    for k in ("W_enc", "W_dec", "b_enc"):  # live units untouched
        assert np.array_equal(p[k][:2], before[k][:2])
    assert keeper.since_fired.tolist() == [0, 0, 0, 0]
    assert keeper.resampled == 2
    assert keeper.resample(p, x, dense_forward(code, xhat), opt) == 0  # none dead any more


def test_state_dict_round_trip_restores_counters_and_the_generator():
    keeper = upkeeper(dead_after=5, resample_every=3, seed=4)
    keeper.count_step(np.zeros((2, 3)), dense_forward(np.zeros((2, 4))))
    keeper.rng.random()
    state = keeper.state_dict()
    restored = upkeeper(dead_after=5, resample_every=3, seed=99)
    restored.load_state_dict(state)
    assert restored.steps == 1 and restored.resampled == 0
    assert restored.since_fired.tolist() == [2, 2, 2, 2]
    assert restored.rng.random() == keeper.rng.random()
    empty = upkeeper(dead_after=5)
    empty.load_state_dict({})  # an old checkpoint without upkeep: nothing changes
    assert empty.steps == 0


def test_upkeep_settings_are_checked():
    from sparsekit.errors import ParameterError

    with pytest.raises(ParameterError, match="needs dead-unit tracking"):
        Upkeep(resample_every=10)
    with pytest.raises(ParameterError, match="b_dec_init must be"):
        Upkeep(b_dec_init="median")


# -- the dead-unit window on a run of the user's size (issue 27) ---------------------------------


def test_the_papers_default_window_becomes_a_tenth_of_a_short_run():
    keeper = Upkeeper(
        Upkeep(dead_after=PAPER_DEAD_AFTER), Plain(), BACKEND, hidden=4, seed=0,
        run_samples=225_000,
    )
    assert keeper.upkeep.dead_after == 22_500
    long_run = dead_window(Upkeep(dead_after=PAPER_DEAD_AFTER), "topk", 10**9)
    assert long_run.dead_after == PAPER_DEAD_AFTER  # the paper's runs keep the paper's window


def test_a_window_the_run_cannot_reach_is_kept_with_a_warning():
    with pytest.warns(UserWarning, match=r"^topk: --dead-after 500000 .* never run$"):
        kept = dead_window(Upkeep(dead_after=500_000), "topk", 225_000)
    assert kept.dead_after == 500_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dead_window(Upkeep(dead_after=1000), "topk", 225_000).dead_after == 1000
        assert dead_window(Upkeep(), "topk", 225_000).dead_after == 0


def test_topk_defaults_on_a_small_file_run_auxk():
    x = np.random.default_rng(0).normal(size=(200, 6))
    trainer = Trainer(TopKSAE(k=2), x, resolve_config(TopKSAE(k=2), hidden=8, epochs=5))
    assert trainer.upkeep.upkeep.dead_after == 100  # 5 epochs x 200 rows / 10
