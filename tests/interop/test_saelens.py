"""SAELens files: export, import, the round trip, and SAELens' own conventions."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

safetensors_numpy = pytest.importorskip("safetensors.numpy")

import sparsekit  # noqa: E402
from sparsekit.core.activations import IDENTITY, RELU  # noqa: E402
from sparsekit.core.contract import Method, TopK  # noqa: E402
from sparsekit.errors import DataError, ParameterError  # noqa: E402
from sparsekit.interop.saelens import SAELensArch  # noqa: E402
from sparsekit.methods.ksparse import top_k_indices  # noqa: E402
from sparsekit.methods.registry import MethodRegistry, load_registry  # noqa: E402
from sparsekit.testing import mnist_data_dir  # noqa: E402

DATA_DIR = mnist_data_dir()
HAS_RELU_L1 = "relu-l1" in load_registry()


def relu(z):
    return np.maximum(z, 0)


def saelens_encode(cfg: dict, t: dict, x: np.ndarray) -> np.ndarray:
    """SAELens' encode written out from its documented formulas (float64)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    sae_in = x - t["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ t["W_enc"] + t["b_enc"]
    if cfg["architecture"] == "standard":
        return relu(pre)
    if cfg.get("rescale_acts_by_decoder_norm"):
        pre = pre * np.linalg.norm(t["W_dec"], axis=1)
    keep = np.argsort(-pre, axis=1)[:, : cfg["k"]]
    out = np.zeros_like(pre)
    np.put_along_axis(out, keep, relu(np.take_along_axis(pre, keep, axis=1)), axis=1)
    return out


def saelens_decode(cfg: dict, t: dict, acts: np.ndarray) -> np.ndarray:
    w_dec = t["W_dec"].astype(np.float64)
    if cfg.get("rescale_acts_by_decoder_norm"):
        acts = acts / np.linalg.norm(w_dec, axis=1)
    return acts @ w_dec + t["b_dec"]


def write_saelens(folder: Path, cfg: dict, tensors: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((300, 20)).astype(np.float32)


def test_ksparse_round_trip_and_file_layout(x, tmp_path):
    model = sparsekit.train("ksparse", x, hidden=32, epochs=3, k=4, alpha=2.0, seed=1)
    cfg = sparsekit.export_saelens(model, tmp_path / "sae")
    assert cfg["architecture"] == "topk" and cfg["k"] == 8  # the encoding-time alpha*k
    tensors = safetensors_numpy.load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == {
        "W_enc": (20, 32), "b_enc": (32,), "W_dec": (32, 20), "b_dec": (20,),
    }  # fmt: skip
    assert all(v.dtype == np.float32 for v in tensors.values())
    on_disk = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert on_disk["d_in"] == 20 and on_disk["d_sae"] == 32 and on_disk["dtype"] == "float32"
    assert on_disk["apply_b_dec_to_input"] is False and on_disk["normalize_activations"] == "none"
    assert "ReLU" in on_disk["metadata"]["sparsekit_note"]  # how TopK differs from k-sparse

    back = sparsekit.load_saelens(tmp_path / "sae")
    assert back.method.name == "ksparse" and back.method.get_params() == model.method.get_params()
    assert back.tied
    np.testing.assert_allclose(back.encode(x), model.encode(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        back.reconstruct(x, training=False),
        model.reconstruct(x, training=False),
        rtol=1e-6,
        atol=1e-6,
    )
    # Where every kept value is positive, SAELens' TopK (ReLU after top-k) gives our codes.
    ref = saelens_encode(on_disk, tensors, x.astype(np.float64))
    codes = model.encode(x)
    np.testing.assert_allclose(
        saelens_decode(on_disk, tensors, codes), model.decode(codes), rtol=1e-4, atol=1e-4
    )
    positive = (codes >= 0).all(axis=1)
    assert positive.any()
    np.testing.assert_allclose(codes[positive], ref[positive], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAS_RELU_L1, reason="the relu-l1 plugin is not installed")
def test_relu_l1_is_saelens_standard_exactly(x, tmp_path):
    model = sparsekit.train("relu-l1", x, hidden=24, epochs=3, l1=0.01, seed=2)
    cfg = sparsekit.export_saelens(model, tmp_path / "std")
    assert cfg["architecture"] == "standard"
    tensors = safetensors_numpy.load_file(str(tmp_path / "std" / "sae_weights.safetensors"))
    ref = saelens_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.decode(model.encode(x)), saelens_decode(cfg, tensors, ref), rtol=1e-4, atol=1e-4
    )
    back = sparsekit.load_saelens(tmp_path / "std")
    assert back.method.name == "relu-l1" and not back.tied
    np.testing.assert_allclose(back.encode(x), model.encode(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_a_foreign_standard_sae_is_read_by_standard(x, tmp_path, apply_b_dec):
    rng = np.random.default_rng(3)
    tensors = {
        "W_enc": rng.standard_normal((20, 16)).astype(np.float32),
        "b_enc": rng.standard_normal(16).astype(np.float32),
        "W_dec": rng.standard_normal((16, 20)).astype(np.float32),
        "b_dec": rng.standard_normal(20).astype(np.float32),
    }
    cfg = {"architecture": "standard", "d_in": 20, "d_sae": 16, "dtype": "float32",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "metadata": {"hook_name": "blocks.0.hook_resid_post"}}  # fmt: skip
    folder = write_saelens(tmp_path / "foreign", cfg, tensors)
    model = sparsekit.load_saelens(folder)
    assert model.method.name == "standard"  # the built-in reader; relu-l1 declares reads=False
    ref = saelens_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        model.decode(model.encode(x)), saelens_decode(cfg, tensors, ref), rtol=1e-4, atol=1e-3
    )


def test_standard_round_trip_is_saelens_standard_exactly(x, tmp_path):
    model = sparsekit.train("standard", x, hidden=24, epochs=3, l1=0.01, batch_size=64, seed=2)
    cfg = sparsekit.export_saelens(model, tmp_path / "std")
    assert cfg["architecture"] == "standard" and cfg["apply_b_dec_to_input"] is True
    tensors = safetensors_numpy.load_file(str(tmp_path / "std" / "sae_weights.safetensors"))
    assert set(tensors) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    ref = saelens_encode(cfg, tensors, x.astype(np.float64))
    assert (ref > 0).any() and (ref == 0).any()
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.decode(model.encode(x)), saelens_decode(cfg, tensors, ref), rtol=1e-4, atol=1e-4
    )
    back = sparsekit.load_saelens(tmp_path / "std")
    assert back.method.name == "standard" and back.method.get_params() == model.method.get_params()
    np.testing.assert_allclose(back.encode(x), model.encode(x), rtol=1e-6, atol=1e-6)


def saelens_matching_pursuit(cfg: dict, t: dict, x: np.ndarray) -> np.ndarray:
    """SAELens' _encode_matching_pursuit written out for max_iterations steps, no early stop:
    argmax of ReLU(r·W_decᵀ), the ReLU'd value scatter-added, r −= value·W_dec[j]."""
    w_dec = t["W_dec"].astype(np.float64)
    r = x - t["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x.copy()
    acts = np.zeros((x.shape[0], w_dec.shape[0]))
    rows = np.arange(x.shape[0])
    for _ in range(cfg["max_iterations"]):
        corr = np.maximum(r @ w_dec.T, 0)
        j = corr.argmax(axis=1)
        value = corr[rows, j]
        np.add.at(acts, (rows, j), value)
        r = r - value[:, None] * w_dec[j]
    return acts


def test_mp_sae_is_saelens_matching_pursuit_both_ways(x, tmp_path):
    model = sparsekit.train("mp-sae", x, hidden=24, epochs=2, k=5, batch_size=64, seed=2)
    cfg = sparsekit.export_saelens(model, tmp_path / "mp")
    assert cfg["architecture"] == "matching_pursuit" and cfg["max_iterations"] == 5
    assert cfg["stop_on_duplicate_support"] is False and cfg["residual_threshold"] == 0
    tensors = safetensors_numpy.load_file(str(tmp_path / "mp" / "sae_weights.safetensors"))
    assert set(tensors) == {"W_dec", "b_dec"}  # SAELens' W_enc is W_decᵀ; no b_enc
    ref = saelens_matching_pursuit(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.decode(model.encode(x)), ref @ tensors["W_dec"] + tensors["b_dec"], atol=1e-4
    )
    back = sparsekit.load_saelens(tmp_path / "mp")
    assert back.method.name == "mp-sae" and back.method.k == 5 and back.tied
    np.testing.assert_allclose(back.encode(x), model.encode(x), rtol=1e-6, atol=1e-6)

    foreign = dict(cfg, metadata={})  # read by the declared reader, k from max_iterations
    write_saelens(tmp_path / "foreign", foreign, tensors)
    again = sparsekit.load_saelens(tmp_path / "foreign")
    assert again.method.name == "mp-sae" and again.method.k == 5
    np.testing.assert_allclose(again.encode(x), ref, rtol=1e-4, atol=1e-5)


def test_a_matching_pursuit_file_that_stops_early_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {"W_dec": rng.standard_normal((8, 20)).astype(np.float32),
               "b_dec": np.zeros(20, dtype=np.float32)}  # fmt: skip
    cfg = {"architecture": "matching_pursuit", "d_in": 20, "d_sae": 8, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "residual_threshold": 0.01, "max_iterations": None,
           "stop_on_duplicate_support": True, "metadata": {}}  # fmt: skip
    write_saelens(tmp_path / "mp", cfg, tensors)
    with pytest.raises(DataError, match="exactly k steps"):
        sparsekit.load_saelens(tmp_path / "mp")


class ReluTopK(Method):
    """What SAELens' TopK computes: the k largest pre-activations, then a ReLU."""

    name = "relu-topk-test"
    saelens = SAELensArch("topk", cfg=lambda m: {"k": 3}, params=lambda cfg: {})
    tied = False

    hidden_activation = RELU
    output_activation = IDENTITY

    def mask(self, xp, z, a, training):
        return TopK(top_k_indices(xp, z, 3))


def test_a_declared_reader_folds_rescale_acts_by_decoder_norm(x, tmp_path):
    registry = MethodRegistry()
    registry.add(ReluTopK)
    rng = np.random.default_rng(4)
    tensors = {
        "W_enc": rng.standard_normal((20, 12)).astype(np.float32),
        "b_enc": rng.standard_normal(12).astype(np.float32),
        "W_dec": (rng.standard_normal((12, 20)) * rng.uniform(0.5, 2, (12, 1))).astype(np.float32),
        "b_dec": rng.standard_normal(20).astype(np.float32),
    }
    cfg = {"architecture": "topk", "d_in": 20, "d_sae": 12, "k": 3,
           "apply_b_dec_to_input": True, "rescale_acts_by_decoder_norm": True}  # fmt: skip
    folder = write_saelens(tmp_path / "topk", cfg, tensors)
    model = sparsekit.load_saelens(folder, registry=registry)
    ref = saelens_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        model.decode(model.encode(x)), saelens_decode(cfg, tensors, ref), rtol=1e-4, atol=1e-3
    )
    # The installed reader of topk files is the topk SAE (k-sparse exports to topk but keeps
    # negative values, so it does not read them).
    topk = sparsekit.load_saelens(folder)
    assert topk.method.name == "topk" and topk.method.k == 3
    np.testing.assert_allclose(topk.encode(x), ref, rtol=1e-4, atol=1e-4)
    blocked = MethodRegistry()
    blocked.add(load_registry().get("ksparse"))
    with pytest.raises(ParameterError, match="no installed method reads SAELens architecture"):
        sparsekit.load_saelens(folder, registry=blocked)


def test_topk_sae_is_saelens_topk_with_b_dec_subtracted(x, tmp_path):
    model = sparsekit.train("topk", x, hidden=32, epochs=2, k=4, k_aux=4, batch_size=64, seed=3)
    cfg = sparsekit.export_saelens(model, tmp_path / "topk")
    assert cfg["architecture"] == "topk" and cfg["k"] == 4
    assert cfg["apply_b_dec_to_input"] is True  # its pre-encoder bias, as SAELens does it
    tensors = safetensors_numpy.load_file(str(tmp_path / "topk" / "sae_weights.safetensors"))
    assert np.abs(tensors["b_dec"]).max() > 0  # so the convention is really tested
    ref = saelens_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(model.encode(x), ref, rtol=1e-4, atol=1e-4)
    back = sparsekit.load_saelens(tmp_path / "topk")
    assert back.method.name == "topk"
    np.testing.assert_allclose(back.encode(x), model.encode(x), rtol=1e-5, atol=1e-5)


class LogThresholdTest(Method):
    """A stand-in for a JumpReLU that learns log θ: only its SAELens declaration matters."""

    name = "log-threshold-test"
    tied = False
    saelens = SAELensArch(
        "jumprelu",
        export_tensors=lambda m, p: {"threshold": np.exp(p["log_threshold"])},
        import_tensors=lambda cfg, t: {"log_threshold": np.log(t["threshold"])},
    )


def test_declared_tensor_conversions_both_ways(tmp_path):
    from sparsekit.backend import get_backend
    from sparsekit.training.model import Model

    registry = MethodRegistry()
    registry.add(LogThresholdTest)
    rng = np.random.default_rng(5)
    params = {
        "W_enc": rng.standard_normal((6, 4)), "b_enc": rng.standard_normal(6),
        "W_dec": rng.standard_normal((6, 4)), "b_dec": rng.standard_normal(4),
        "log_threshold": rng.standard_normal(6),
    }  # fmt: skip
    backend = get_backend(False, "float64")
    model = Model(LogThresholdTest(), {k: backend.asarray(v) for k, v in params.items()}, backend)
    cfg = sparsekit.export_saelens(model, tmp_path / "jr")
    assert cfg["architecture"] == "jumprelu" and cfg["dtype"] == "float64"
    tensors = safetensors_numpy.load_file(str(tmp_path / "jr" / "sae_weights.safetensors"))
    np.testing.assert_allclose(tensors["threshold"], np.exp(params["log_threshold"]))
    back = sparsekit.load_saelens(tmp_path / "jr", registry=registry)
    for name, value in params.items():
        np.testing.assert_allclose(back.params[name], value, rtol=1e-12, err_msg=name)


def test_bad_files_and_methods_without_a_counterpart(x, tmp_path):
    model = sparsekit.train("l2", x, hidden=8, epochs=1)
    with pytest.raises(ParameterError, match="method 'l2' has no SAELens counterpart"):
        sparsekit.export_saelens(model, tmp_path / "l2")
    with pytest.raises(DataError, match="no cfg.json"):
        sparsekit.load_saelens(tmp_path)
    good = sparsekit.train("ksparse", x, hidden=8, epochs=1, k=2)
    sparsekit.export_saelens(good, tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "cfg.json").read_text())
    (tmp_path / "ok" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 9}))
    with pytest.raises(DataError, match=r"tensor 'W_enc' has shape \(20, 8\), expected \(20, 9\)"):
        sparsekit.load_saelens(tmp_path / "ok")
    (tmp_path / "ok" / "cfg.json").write_text(
        json.dumps({**cfg, "normalize_activations": "layer_norm"})
    )
    with pytest.raises(DataError, match="normalize_activations 'layer_norm'"):
        sparsekit.load_saelens(tmp_path / "ok")
    (tmp_path / "ok" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "ok" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="not a readable safetensors file"):
        sparsekit.load_saelens(tmp_path / "ok")


sk = partial(run_cli, env={"COLUMNS": "120"})


@pytest.mark.slow
def test_cli_export_import_encode_eval(tmp_path):
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(f"MNIST not found in {DATA_DIR}/mnist: set SPARSEKIT_TEST_DATA")
    result = sk("train", "ksparse", "--data", str(DATA_DIR), "--subset", "500", "--epochs", "2",
                "--hidden", "16", "--k", "4", "--out", str(tmp_path), "--no-download")  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    result = sk("export", str(run), "--format", "saelens", "--out", str(tmp_path / "sae"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "cfg.json", "sae_weights.safetensors",
    ]  # fmt: skip
    result = sk("import-saelens", str(tmp_path / "sae"), "--out", str(tmp_path / "imported"))
    assert result.returncode == 0, result.stderr
    codes = {}
    for name, where in (("orig", run), ("back", tmp_path / "imported")):
        out = tmp_path / f"{name}.npy"
        result = sk("encode", str(where), "mnist", str(out), "--data", str(DATA_DIR),
                    "--split", "test", "--subset", "100")  # fmt: skip
        assert result.returncode == 0, result.stderr
        codes[name] = np.load(out)
    np.testing.assert_allclose(codes["back"], codes["orig"], rtol=1e-5, atol=1e-5)
    result = sk("eval", str(tmp_path / "imported"), "--subset", "300", "--test-subset", "100",
                "--data", str(DATA_DIR))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "imported" / "eval.json").exists()
    result = sk("export", str(tmp_path / "imported"), "--format", "saelens",
                "--out", str(tmp_path / "again"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert again["architecture"] == "topk" and again["k"] == 12
    # One-line errors: a method without a SAELens counterpart, an unknown format.
    result = sk("train", "l2", "--data", str(DATA_DIR), "--subset", "200", "--epochs", "1",
                "--hidden", "8", "--out", str(tmp_path), "--no-download")  # fmt: skip
    l2_run = Path(result.stdout.strip().splitlines()[-1])
    for args, text in (
        (("export", str(l2_run), "--format", "saelens"), "has no SAELens counterpart"),
        (("export", str(run), "--format", "onnx"), "unknown export format 'onnx'"),
        (("import-saelens", str(tmp_path / "nothing")), "no such SAELens directory"),
    ):
        result = sk(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and text in lines[0], result.stderr


def saelens_jumprelu_encode(cfg: dict, t: dict, x: np.ndarray) -> np.ndarray:
    """SAELens' JumpReLU encode: ReLU(pre) ⊙ 1[pre > θ] (float64)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    sae_in = x - t["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ t["W_enc"] + t["b_enc"]
    return relu(pre) * (pre > t["threshold"])


@pytest.mark.parametrize("pre_bias", [False, True])
def test_jumprelu_is_saelens_jumprelu(x, tmp_path, pre_bias):
    model = sparsekit.train(
        "jumprelu", x, hidden=32, epochs=2, batch_size=64, seed=1, pre_bias=pre_bias,
        threshold_init=0.05, bandwidth=0.05, l0_coef=0.01,
    )  # fmt: skip
    cfg = sparsekit.export_saelens(model, tmp_path / "jr")
    assert cfg["architecture"] == "jumprelu" and cfg["apply_b_dec_to_input"] is pre_bias
    tensors = safetensors_numpy.load_file(str(tmp_path / "jr" / "sae_weights.safetensors"))
    np.testing.assert_allclose(tensors["threshold"], np.exp(model.params["log_threshold"]))
    codes = model.encode(x)
    assert 0 < (codes != 0).mean() < 1  # some units jump, some do not: the threshold matters
    ref = saelens_jumprelu_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(codes, ref, rtol=1e-4, atol=1e-4)
    back = sparsekit.load_saelens(tmp_path / "jr")
    assert back.method.name == "jumprelu"
    np.testing.assert_allclose(back.encode(x), codes, rtol=1e-5, atol=1e-5)


def test_batchtopk_exports_its_threshold_as_saelens_does(x, tmp_path):
    model = sparsekit.train("batchtopk", x, hidden=32, epochs=2, k=4, k_aux=4, batch_size=64)
    theta = model.method.threshold
    assert theta is not None and theta > 0
    cfg = sparsekit.export_saelens(model, tmp_path / "btk")
    assert cfg["architecture"] == "jumprelu" and cfg["apply_b_dec_to_input"] is True
    tensors = safetensors_numpy.load_file(str(tmp_path / "btk" / "sae_weights.safetensors"))
    np.testing.assert_allclose(tensors["threshold"], np.full(32, theta))
    codes = model.encode(x)  # inference: Z ⊙ 1[Z > θ], no batch dependence
    ref = saelens_jumprelu_encode(cfg, tensors, x.astype(np.float64))
    np.testing.assert_allclose(codes, ref, rtol=1e-4, atol=1e-4)
    back = sparsekit.load_saelens(tmp_path / "btk")
    assert back.method.name == "batchtopk" and back.method.threshold == pytest.approx(theta)
    np.testing.assert_allclose(back.encode(x), codes, rtol=1e-5, atol=1e-5)


def test_an_untrained_batchtopk_has_no_threshold_to_export(x, tmp_path):
    from sparsekit.backend import get_backend
    from sparsekit.training.model import Model

    method = load_registry().create("batchtopk", k=4)
    rng = np.random.default_rng(0)
    params = {
        "W_enc": rng.standard_normal((8, 20)), "b_enc": np.zeros(8),
        "W_dec": rng.standard_normal((8, 20)), "b_dec": np.zeros(20),
    }  # fmt: skip
    backend = get_backend(False, "float64")
    model = Model(method, {k: backend.asarray(v) for k, v in params.items()}, backend)
    with pytest.raises(ParameterError, match="no inference threshold"):
        sparsekit.export_saelens(model, tmp_path / "none")
