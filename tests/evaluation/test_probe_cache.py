"""The probe cache (issue 27): the raw-pixel baseline is fitted once per data set and settings,
kept in the user cache directory, and the encoding code's L0 is measured beside the training
code's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import sparsekit
from sparsekit.evaluation.measures import PROBE_SAMPLES, code_mean_active, evaluate
from sparsekit.evaluation.probe_cache import cached_probe_error, probe_cache_dir, probe_key


def _arrays(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return rng.random((20, 4)), rng.integers(0, 3, 20), rng.random((5, 4)), rng.integers(0, 3, 5)


def test_probe_cache_lives_in_the_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert probe_cache_dir().is_relative_to(tmp_path)
    assert not probe_cache_dir().is_relative_to(Path(sparsekit.__file__).parent)


def test_probe_key_changes_with_any_byte_or_setting():
    arrays = _arrays()
    key = probe_key(arrays, {"C": 0.01})
    assert key == probe_key(_arrays(), {"C": 0.01})
    changed = (arrays[0].copy(), *arrays[1:])
    changed[0][3, 2] += 1e-9
    assert probe_key(changed, {"C": 0.01}) != key
    assert probe_key(arrays, {"C": 0.1}) != key
    assert probe_key(_arrays(1), {"C": 0.01}) != key


def test_cached_probe_error_fits_once(tmp_path):
    calls: list[int] = []

    def fit() -> float:
        calls.append(1)
        return 0.25

    assert cached_probe_error("k", fit, tmp_path) == (0.25, False)
    assert cached_probe_error("k", fit, tmp_path) == (0.25, True)
    assert len(calls) == 1
    (tmp_path / "k.json").write_text("not json")  # a corrupt entry is refitted
    assert cached_probe_error("k", fit, tmp_path) == (0.25, False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_cache_only_costs_the_fit(tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert cached_probe_error("k", lambda: 0.5, tmp_path / "sub") == (0.5, False)
    finally:
        tmp_path.chmod(0o700)


def test_code_mean_active_tells_the_two_codes_apart():
    rng = np.random.default_rng(0)
    x = rng.random((64, 12)).astype(np.float32)
    model = sparsekit.train("ksparse", x, hidden=10, k=2, k_start=2, alpha=3, epochs=1, seed=0)
    assert code_mean_active(model, x) == pytest.approx(6.0)  # encoding code: alpha*k
    assert code_mean_active(model, x, training=True) == pytest.approx(2.0)
    assert evaluate(model, x)["mean_active"] == pytest.approx(2.0)


def test_probe_samples_default_is_a_stated_subsample():
    assert 0 < PROBE_SAMPLES < 60000


def test_probe_fits_with_capped_blas_threads(monkeypatch):
    # The probe's thin products gain nothing from BLAS threads that spin (issue 27's timing).
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    from sparsekit.evaluation.measures import linear_probe

    seen: list[list[int]] = []
    fit = LogisticRegression.fit

    def spy(self, *args, **kwargs):
        seen.append(
            [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        )
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    x, y, xt, yt = _arrays()
    assert linear_probe(x, y, xt, yt, one_blas_thread=True) == linear_probe(
        x, y, xt, yt, one_blas_thread=False
    )
    assert all(n == 1 for n in seen[0])
