"""The plugin registry: a method defined here registers and trains through the same path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import sparsekit
from sparsekit import Method, Param, PluginError, UnknownMethodError, hookimpl
from sparsekit.core.activations import IDENTITY, RELU
from sparsekit.core.contract import positive


class ReluL1(Method):
    """A method that is not built in: ReLU code, linear output, L1 penalty on the code."""

    name = "test-relu-l1"
    description = "ReLU autoencoder with an L1 code penalty (test plugin)."
    params = (Param("l1", float, 1e-3, "L1 weight", positive),)
    training_defaults = {"optimizer": "adam", "lr": 1e-3}

    hidden_activation = RELU
    output_activation = IDENTITY
    uses_code_penalty = True

    def code_penalty(self, xp, code):
        batch = code.shape[0]
        return self.l1 * xp.abs(code).sum() / batch, self.l1 * xp.sign(code) / batch


class TestPlugin:
    @hookimpl
    def sparsekit_register_methods(self, register):
        register.add(ReluL1)


def fresh_registry(*plugins):
    return sparsekit.load_registry(sparsekit.make_plugin_manager(plugins, entry_points=False))


def test_a_plugin_method_registers_and_trains_through_the_same_path(mnist_2000):
    registry = fresh_registry(TestPlugin())
    assert "test-relu-l1" in registry
    assert registry.methods["test-relu-l1"].origin.startswith("plugin")
    assert registry.methods["ksparse"].origin.startswith("builtin")
    losses = []

    class Record(sparsekit.Callback):
        def on_epoch_end(self, trainer, metrics):
            losses.append(metrics["loss"])

    model = sparsekit.train(
        "test-relu-l1", mnist_2000, hidden=32, epochs=3, registry=registry, callbacks=[Record()]
    )
    assert losses[-1] < losses[0]
    assert model.encode(mnist_2000[:5]).min() >= 0


def test_plugin_gradients_pass_the_same_check():
    from sparsekit.testing.gradcheck import check_gradients

    assert check_gradients(ReluL1(l1=0.1), tied=False).ok


def test_managers_are_independent():
    with_plugin = fresh_registry(TestPlugin())
    without = fresh_registry()
    assert "test-relu-l1" in with_plugin and "test-relu-l1" not in without


def test_duplicate_method_name_names_both_origins():
    class Impostor(Method):
        name = "ksparse"

    class ImpostorPlugin:
        @hookimpl
        def sparsekit_register_methods(self, register):
            register.add(Impostor)

    with pytest.raises(PluginError) as info:
        fresh_registry(ImpostorPlugin())
    message = str(info.value)
    assert "sparsekit.methods.ksparse" in message and "Impostor" in message


def test_a_plugin_that_raises_is_recorded_and_the_others_still_load():
    class Broken:
        @hookimpl
        def sparsekit_register_methods(self, register):
            raise RuntimeError("boom")

    registry = fresh_registry(Broken())
    assert "ksparse" in registry
    assert len(registry.failures) == 1 and "boom" in registry.failures[0].error


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(UnknownMethodError, match="available: arora, batchtopk, gated, jumprelu"):
        fresh_registry().get("nope")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("ksparse", {"k": 0}, "k must be between 1 and the hidden size"),
        ("ksparse", {"k": 65}, "k must be between 1 and the hidden size"),
        ("kl", {"rho": 1.5}, "rho must be strictly between 0 and 1"),
        ("kl", {"beta": -1.0}, "beta must be >= 0"),
        ("l2", {"weight_decay": float("nan")}, "weight_decay must be >= 0"),
        ("arora", {"init": "zeros"}, "init must be one of"),
    ],
)
def test_parameters_are_validated_with_clear_errors(method, params, message):
    with pytest.raises(sparsekit.ParameterError, match=message):
        sparsekit.train(method, np.zeros((10, 16), np.float32), hidden=64, epochs=1, **params)


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(sparsekit.ParameterError, match=r"no parameter 'kk' \(its parameters: k,"):
        fresh_registry().create("ksparse", kk=3)


def test_import_creates_no_plugin_manager_and_needs_no_cupy():
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] == 'cupy': raise ImportError('no cupy here')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import sparsekit, gc, pluggy\n"
        "assert not [o for o in gc.get_objects() if isinstance(o, pluggy.PluginManager)]\n"
        "assert 'cupy' not in sys.modules\n"
        "try:\n"
        "    sparsekit.get_backend(gpu=True)\n"
        "except sparsekit.BackendError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs CuPy, which is not installed" in out.stdout
