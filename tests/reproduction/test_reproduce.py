"""experiments.reproduce: a finished seed is kept, an interrupted k-sparse run resumes exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from experiments import reproduce as rep
from sparsekit.training.checkpoint import load_checkpoint

DATA = os.environ.get("SPARSEKIT_TEST_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA, "mnist").is_dir(), reason="needs MNIST (SPARSEKIT_TEST_DATA)"
)


def tiny_plan(out: Path) -> rep.Plan:
    ks = rep.KSparseSettings(
        hidden=24, k=4, k_start=8, epochs=4, subset=600, test_subset=200, validation=100,
        C_grid=(0.01, 0.1), variant_alphas=(1.0,), checkpoint_every=2,
    )  # fmt: skip
    return rep.Plan(data=DATA, out=out, seeds=(0, 1), ksparse=ks)


class Interrupt(Exception):
    pass


def test_interrupted_seed_resumes_and_done_seeds_are_kept(tmp_path, monkeypatch):
    # the reference: seed 0 never interrupted
    rep.run(tiny_plan(tmp_path / "ref"), parts=("ksparse",))
    reference = load_checkpoint(tmp_path / "ref/ksparse/seed-0.ckpt.npz")["state"]["params"]

    # the same, killed after epoch 3 (the checkpoint of epoch 2 is on disk)
    original = rep.Progress.on_epoch_end

    def dying(self, trainer, metrics):
        original(self, trainer, metrics)
        if metrics["epoch"] == 3:
            raise Interrupt

    monkeypatch.setattr(rep.Progress, "on_epoch_end", dying)
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        rep.run(tiny_plan(out), parts=("ksparse",))
    assert not (out / "ksparse/seed-0.json").exists()
    assert load_checkpoint(out / "ksparse/seed-0.ckpt.npz")["meta"]["epoch"] == 2
    monkeypatch.setattr(rep.Progress, "on_epoch_end", original)

    summary = rep.run(tiny_plan(out), parts=("ksparse",))
    resumed = load_checkpoint(out / "ksparse/seed-0.ckpt.npz")["state"]["params"]
    for name, value in reference.items():
        np.testing.assert_array_equal(resumed[name], value)  # bit for bit, CPU
    record = json.loads((out / "ksparse/seed-0.json").read_text())
    assert record["done"] and len(record["history"]) == 4
    assert summary["ksparse"]["seeds"] == [0, 1]
    assert summary["ksparse"]["error"]["n"] == 2

    # finished seeds are not computed again; the variants read the saved models
    def fail(*args, **kwargs):
        raise AssertionError("a finished seed was recomputed")

    monkeypatch.setattr(rep, "ksparse_seed", fail)
    summary = rep.run(tiny_plan(out), parts=("ksparse", "ksparse-variants"))
    variant = summary["ksparse-variants"]["alpha_k=4"]
    assert variant["seeds"] == [0, 1] and 0 <= variant["error"]["mean"] <= 1


def test_mean_std_is_the_sample_standard_deviation():
    got = rep.mean_std([0.0131, 0.0154, 0.0140])
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(0.0141666, rel=1e-4)
    assert got["std"] == pytest.approx(np.std([0.0131, 0.0154, 0.0140], ddof=1))
    assert rep.mean_std([0.5])["std"] is None
