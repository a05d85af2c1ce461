"""--matmul-precision: exact float32 by default, TF32 only where a GPU step can honour it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from sparsekit.backend import MATMUL_PRECISIONS, get_backend
from sparsekit.backend.simulated import simulated_backend
from sparsekit.errors import ParameterError
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer, make_method


def test_the_default_is_exact_float32_everywhere():
    assert MATMUL_PRECISIONS[0] == "float32"
    assert get_backend().matmul_precision == "float32"
    assert simulated_backend().matmul_precision == "float32"
    assert resolve_config(make_method("plain")).matmul_precision == "float32"


@pytest.mark.parametrize(
    ("gpu", "dtype"), [(False, "float32"), (True, "float64")], ids=["cpu", "float64"]
)
def test_tf32_is_refused_where_no_gpu_float32_step_can_use_it(gpu, dtype):
    with pytest.raises(ParameterError, match="tf32 needs --gpu and --dtype float32"):
        resolve_config(make_method("plain"), gpu=gpu, dtype=dtype, matmul_precision="tf32")
    if not gpu:
        with pytest.raises(ParameterError, match="tf32 needs --gpu"):
            get_backend(False, dtype, "tf32")


def test_an_unknown_precision_is_one_line():
    with pytest.raises(ParameterError, match="must be float32 or tf32, got 'bf16'"):
        simulated_backend(matmul_precision="bf16")


def test_a_tf32_run_on_the_simulated_device_records_it_and_trains():
    rng = np.random.default_rng(0)
    x = rng.random((64, 16), dtype=np.float32)
    cfg = resolve_config(
        make_method("plain"), hidden=8, epochs=1, batch_size=32, gpu=True, matmul_precision="tf32"
    )
    trainer = Trainer(make_method("plain"), x, cfg, backend=simulated_backend("float32", "tf32"))
    trainer.fit()
    assert trainer.config.to_dict()["matmul_precision"] == "tf32"
    assert np.isfinite(trainer.history[-1]["loss"])


def test_a_backend_of_another_precision_than_the_config_is_refused():
    cfg = resolve_config(make_method("plain"), hidden=8, gpu=True, matmul_precision="tf32")
    x = np.ones((8, 4), dtype=np.float32)
    with pytest.raises(ParameterError, match="matmul precision is float32, the config's tf32"):
        Trainer(make_method("plain"), x, cfg, backend=simulated_backend())


def test_the_cli_refuses_tf32_without_a_gpu_in_one_line():
    result = run_cli("train", "plain", "--dataset", "synthetic", "--matmul-precision", "tf32")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "sparsekit: error: --matmul-precision tf32 needs --gpu and --dtype float32 (TF32 is the "
        "GPU tensor cores' format for float32 products)"
    ]
