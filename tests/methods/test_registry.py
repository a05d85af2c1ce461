"""The plugin registry: a method defined here registers and trains through the same path."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from old_contract import OldLinearOutput, OldReLU

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
    with pytest.raises(UnknownMethodError, match="available: arora, batchtopk, dict-learning, gated, jumprelu"):
        fresh_registry().get("nope")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("ksparse", {"k": 0}, ": --k must be between 1 and the hidden size"),
        ("ksparse", {"k": 65}, ": --k must be between 1 and the hidden size"),
        ("kl", {"rho": 1.5}, "--rho must be strictly between 0 and 1"),
        ("kl", {"beta": -1.0}, "--beta must be >= 0"),
        ("l2", {"weight_decay": float("nan")}, "--weight-decay must be >= 0"),
        ("arora", {"init": "zeros"}, "--init must be one of"),
    ],
)
def test_parameters_are_validated_with_clear_errors(method, params, message):
    with pytest.raises(sparsekit.ParameterError, match=message):
        sparsekit.train(method, np.zeros((10, 16), np.float32), hidden=64, epochs=1, **params)


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(sparsekit.ParameterError, match=r"no parameter --kk \(did you mean --k\? its parameters: --k,"):
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


# -- the method types at registration ---------------------------------------------------------


class OldStyleObjective(Method):
    name = "old-style-objective"
    description = "own_objective = True on a generic Method (first contract)."
    own_objective = True

    def forward(self, backend, params, x, training):
        raise AssertionError("never called")

    def loss_and_grads(self, backend, params, x, state, term=None):
        raise AssertionError("never called")


def _plugin_of(*classes):
    class Plugin:
        @hookimpl
        def sparsekit_register_methods(self, register):
            for cls in classes:
                register.add(cls)

    return Plugin()


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (OldReLU, r"defines activation\(\), which the step no longer reads: declare "
         "hidden_activation"),
        (OldLinearOutput, r"defines output\(\), which the step no longer reads: declare "
         "output_activation"),
        (OldStyleObjective, "sets own_objective, which is derived from its type: subclass "
         "sparsekit.methods.ObjectiveMethod instead"),
    ],
    ids=["activation", "output", "own_objective"],
)  # fmt: skip
def test_a_first_contract_class_is_refused_at_registration(cls, message):
    """Recorded as a broken plugin (one line naming the class and what to declare), never
    registered under its name; the other plugins load."""
    registry = fresh_registry(_plugin_of(cls))
    assert cls.name not in registry and "ksparse" in registry
    assert len(registry.failures) == 1
    error = registry.failures[0].error
    assert "\n" not in error and cls.__qualname__ in error
    assert re.search(message, error), error
    with pytest.raises(UnknownMethodError):
        registry.get(cls.name)


def test_one_refused_class_does_not_hide_the_plugins_other_methods_registered_before_it():
    registry = fresh_registry(_plugin_of(ReluL1, OldReLU))
    assert "test-relu-l1" in registry and OldReLU.name not in registry
    assert "PluginError" in registry.failures[0].error


def test_correct_plugins_of_each_type_register_and_train():
    from sparsekit import ObjectiveMethod, StepResult, UpdateMethod
    from sparsekit.core.step import loss_and_grads
    from sparsekit.methods.jumprelu import JumpReLUSAE

    class OwnUpdate(UpdateMethod):
        name = "test-own-update"
        description = "Gradient descent written as an own update (test plugin)."
        hidden_activation = RELU
        output_activation = IDENTITY
        training_defaults = {"lr": 0.05}

        def update(self, backend, params, x, lr):
            loss, grads, fwd, rec = loss_and_grads(self, backend, params, x)
            for name, grad in grads.items():
                params[name] -= lr * grad
            return StepResult(loss, rec, fwd)

    class OwnObjective(JumpReLUSAE):  # an ObjectiveMethod from a plugin, under its own name
        name = "test-own-objective"

    assert issubclass(OwnObjective, ObjectiveMethod)
    registry = fresh_registry(_plugin_of(ReluL1, OwnUpdate, OwnObjective))
    assert not registry.failures
    data = np.random.default_rng(0).uniform(0, 1, size=(96, 12))

    class Record(sparsekit.Callback):
        def __init__(self):
            self.losses = []

        def on_epoch_end(self, trainer, metrics):
            self.losses.append(metrics["loss"])

    for name in ("test-relu-l1", "test-own-update", "test-own-objective"):
        record = Record()
        sparsekit.train(
            name, data, hidden=8, epochs=3, batch_size=16, registry=registry, callbacks=[record]
        )
        assert record.losses[-1] < record.losses[0], name
