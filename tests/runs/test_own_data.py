"""A user's own data (issue 27): the held-out share, sparse codes, model input checks and
the SAE defaults on data of their size."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from sparsekit import load_run
from sparsekit.data import load_dataset
from sparsekit.errors import DataError, ParameterError
from sparsekit.runs.api import encode_run, evaluate_run, start_run, train_run


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


def _model(tmp_path):
    path = _acts(tmp_path)
    run = train_run("topk", path, out=tmp_path / "runs", hidden=16, epochs=1, k=2)
    return load_run(run)


def test_model_encode_refuses_nan_naming_the_row(tmp_path):
    model = _model(tmp_path)
    x = np.zeros((2000, 8), np.float32)
    x[1500, 3] = np.nan
    with pytest.raises(DataError, match=r"^input: row 1500 contains NaN or infinite values$"):
        model.encode(x)
    x[1500, 3] = np.inf
    with pytest.raises(DataError, match="row 1500"):
        model.reconstruct(x)


def test_model_decode_and_encode_name_the_expected_width(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(DataError, match=r"expects N × 16"):
        model.decode(np.zeros((3, 15), np.float32))
    with pytest.raises(DataError, match="the model expects 8"):
        model.encode(np.zeros((3, 7), np.float32))


def test_saelens_weights_have_the_mode_of_cfg_json(tmp_path):
    pytest.importorskip("safetensors")
    from sparsekit.interop.saelens import export_saelens

    model = _model(tmp_path)
    out = tmp_path / "sae"
    old = os.umask(0o022)
    try:
        export_saelens(model, out)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"cfg.json": 0o644, "sae_weights.safetensors": 0o644}


def test_encode_run_sparse_returns_and_writes_csr(tmp_path):
    import scipy.sparse

    path = _acts(tmp_path)
    run = train_run("topk", path, out=tmp_path / "runs", hidden=16, epochs=1, k=2)
    dense = encode_run(run, path)
    codes = encode_run(run, path, sparse=True, output=tmp_path / "codes.npz")
    assert scipy.sparse.isspmatrix_csr(codes)
    np.testing.assert_array_equal(codes.toarray(), dense)
    np.testing.assert_array_equal(scipy.sparse.load_npz(tmp_path / "codes.npz").toarray(), dense)
    with pytest.raises(ParameterError, match=r"codes.npy: sparse codes are written as .npz"):
        encode_run(run, path, sparse=True, output=tmp_path / "codes.npy")


def test_cli_encode_sparse(tmp_path):
    import scipy.sparse
    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    path = _acts(tmp_path)
    run = train_run("topk", path, out=tmp_path / "runs", hidden=16, epochs=1, k=2)
    out = tmp_path / "codes.npz"
    result = CliRunner().invoke(app, ["encode", str(run), str(path), str(out), "--sparse"])
    assert result.exit_code == 0, result.output
    assert scipy.sparse.load_npz(out).shape == (60, 16)
    result = CliRunner().invoke(app, ["encode", str(run), str(path), str(out)])
    assert isinstance(result.exception, ParameterError)  # main() prints it in one line


def test_topk_defaults_come_within_005_of_a_tuned_run_on_a_small_own_file(tmp_path):
    """The issue's check, narrower: 50,000 × 32 rows, 128 latents (440 steps, as there).

    Measured: defaults 0.916, best of lr 3e-4 … 3e-2 0.930 (lr 1e-2); the old 3e-4: 0.730.
    """
    x = load_dataset("synthetic-sae:features=256,dim=32,n=50000,seed=0,roots=2", split="train")
    path = tmp_path / "acts.npy"
    np.save(path, x.to_array(np.float32))

    def fve(**settings):
        run = train_run("topk", path, out=tmp_path / "runs", hidden=128, k=8, **settings)
        return evaluate_run(run)["test"]["fve"]

    default = fve()
    tuned = max(fve(lr=lr) for lr in (1e-2, 3e-2))  # the best of a wider grid
    assert default >= tuned - 0.05, (default, tuned)
