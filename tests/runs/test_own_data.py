"""A user's own data (issue 27): the held-out share, sparse codes, model input checks and
the SAE defaults on data of their size."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.data import load_dataset
from sparsekit.errors import DataError
from sparsekit.runs.api import evaluate_run, start_run, train_run


def _acts(tmp_path, n=60, dim=8):
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
    return path


def test_test_fraction_sets_the_share_a_file_holds_out(tmp_path):
    path = _acts(tmp_path)
    assert len(load_dataset(path, split="train", test_fraction=0.25)) == 45
    assert len(load_dataset(path, split="train", test_fraction=0)) == 60
    with pytest.raises(DataError, match="no held-out split"):
        load_dataset(path, split="test", test_fraction=0)


def test_train_run_test_fraction_zero_trains_on_every_row(tmp_path):
    path = _acts(tmp_path)
    trainer, run = start_run("topk", path, out=tmp_path / "runs", hidden=16, epochs=1, k=2,
                             test_fraction=0)
    assert len(trainer.dataset) == 60
    trainer.fit()
    with pytest.raises(DataError, match="no held-out split"):
        evaluate_run(run)


def test_train_run_test_fraction_reaches_eval(tmp_path):
    path = _acts(tmp_path)
    run = train_run("topk", path, out=tmp_path / "runs", hidden=16, epochs=1, k=2,
                    test_fraction=0.5)
    result = evaluate_run(run)
    assert (result["n_train"], result["n_test"]) == (30, 30)
