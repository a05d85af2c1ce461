"""The three method types and check_method_class: a class the step would train as something
else than it says is refused (one line, what to declare instead) wherever it enters."""

from __future__ import annotations

import numpy as np
import pytest
from old_contract import OldLinearOutput, OldReLU

import sparsekit
from sparsekit.core import contract
from sparsekit.core.contract import (
    BaseMethod,
    Method,
    ObjectiveMethod,
    UpdateMethod,
    check_method_class,
    method_type,
)
from sparsekit.core.step import loss_and_grads
from sparsekit.errors import PluginError
from sparsekit.methods import IDENTITY, RELU, Forward, StepResult, decoder_weights, pre_activation
from sparsekit.training.settings import resolve_config


def _data(rows: int = 64, dim: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(rows, dim))


# -- methods in the style of the first contract ---------------------------------------------------


class OldObjective(Method):
    """An own objective the first contract's way: a flag on a generic Method."""

    name = "old-objective"
    description = "own_objective = True on a Method (first contract)."
    own_objective = True

    def forward(self, backend, params, x, training):
        raise AssertionError("never called")

    def loss_and_grads(self, backend, params, x, state, term=None):
        raise AssertionError("never called")


class OldUpdate(Method):
    """An own update the first contract's way."""

    name = "old-update"
    description = "own_update = True on a Method (first contract)."
    own_update = True

    def update(self, backend, params, x, lr):
        raise AssertionError("never called")


# -- correct methods of each type -----------------------------------------------------------------


class NewReLU(Method):
    name = "new-relu"
    description = "ReLU code, linear output, declared."
    training_defaults = {"optimizer": "adam", "lr": 1e-2}
    hidden_activation = RELU
    output_activation = IDENTITY


class NewUpdate(UpdateMethod):
    """Linear tied autoencoder trained by plain gradient descent written as its own update."""

    name = "new-update"
    description = "Own update: gradient descent by hand."
    tied = True
    allows_untied = False
    training_defaults = {"lr": 0.05}
    hidden_activation = IDENTITY
    output_activation = IDENTITY

    def update(self, backend, params, x, lr):
        loss, grads, fwd, rec = loss_and_grads(self, backend, params, x)
        for name, grad in grads.items():
            params[name] -= lr * grad
        return StepResult(loss, rec, fwd)


class NewObjective(ObjectiveMethod):
    """A linear autoencoder computing its own forward pass, loss and gradients."""

    name = "new-objective"
    description = "Own objective: linear autoencoder."
    tied = False
    allows_tied = False
    training_defaults = {"optimizer": "adam", "lr": 1e-2}

    def forward(self, backend, params, x, training):
        z = pre_activation(backend.xp, params, x)
        y = z @ decoder_weights(params) + params["b_dec"]
        return Forward(z, z, None, z, None, y, y)

    def loss_and_grads(self, backend, params, x, state, term=None):
        fwd = self.forward(backend, params, x, True)
        g = (fwd.xhat - x) / x.shape[0]
        rec = 0.5 * backend.xp.vdot(fwd.xhat - x, fwd.xhat - x) / x.shape[0]
        d_z = g @ params["W_dec"].T
        grads = {
            "W_enc": d_z.T @ x,
            "b_enc": d_z.sum(axis=0),
            "W_dec": fwd.code.T @ g,
            "b_dec": g.sum(axis=0),
        }
        return rec, grads, fwd, rec


OLD_STYLE = [
    (OldReLU, "defines activation()", "declare hidden_activation"),
    (OldLinearOutput, "defines output()", "declare output_activation"),
    (OldObjective, "sets own_objective", "ObjectiveMethod"),
    (OldUpdate, "sets own_update", "UpdateMethod"),
]
OLD_IDS = [cls.name for cls, _, _ in OLD_STYLE]


@pytest.mark.parametrize(("cls", "what", "instead"), OLD_STYLE, ids=OLD_IDS)
def test_the_check_refuses_the_first_contracts_style_in_one_line(cls, what, instead):
    with pytest.raises(PluginError) as info:
        check_method_class(cls)
    message = str(info.value)
    assert "\n" not in message
    assert cls.__qualname__ in message and what in message and instead in message


@pytest.mark.parametrize("retired", sorted(contract.RETIRED))
def test_every_retired_member_is_refused_even_inherited_from_a_mixin(retired):
    class Mixin:  # the override comes from a helper class of the plugin, not the method
        pass

    setattr(Mixin, retired, lambda self, xp, *args: args[0])

    class Mixed(Mixin, Method):
        name = "mixed"

    with pytest.raises(PluginError, match=rf"defines {retired}\(\)"):
        check_method_class(Mixed)


@pytest.mark.parametrize(("cls", "what", "instead"), OLD_STYLE, ids=OLD_IDS)
def test_make_method_refuses_classes_and_instances(cls, what, instead):
    with pytest.raises(PluginError, match=what):
        sparsekit.make_method(cls)
    with pytest.raises(PluginError, match=what):
        sparsekit.make_method(cls())  # an instance, built without the registry


@pytest.mark.parametrize(("cls", "what", "instead"), OLD_STYLE, ids=OLD_IDS)
def test_training_refuses_them(cls, what, instead):
    with pytest.raises(PluginError, match=what):
        sparsekit.train(cls, _data(), hidden=4, epochs=1)
    config = resolve_config(cls, hidden=4, epochs=1, dtype="float64")
    with pytest.raises(PluginError, match=what):
        sparsekit.Trainer(cls(), _data(), config)  # the trainer itself, past make_method


def test_mixed_and_incomplete_types_are_refused():
    class Both(Method, ObjectiveMethod):
        name = "both"

    class Bare(BaseMethod):
        name = "bare"

    class MaskedObjective(NewObjective):
        def mask(self, xp, z, a, training):
            return None

    class GenericWithForward(NewReLU):
        def forward(self, backend, params, x, training):
            return None

    class UpdateOnGeneric(NewReLU):
        def update(self, backend, params, x, lr):
            return None

    class NoUpdate(UpdateMethod):
        name = "no-update"

    class NoForward(ObjectiveMethod):
        name = "no-forward"

        def loss_and_grads(self, backend, params, x, state, term=None):
            return None

    cases = {
        Both: "subclasses both Method and ObjectiveMethod",
        Bare: "subclasses BaseMethod directly",
        MaskedObjective: "defines mask, which only Method's step reads",
        GenericWithForward: "defines forward, which only ObjectiveMethod's step reads",
        UpdateOnGeneric: "defines update, which only UpdateMethod's step reads",
        NoUpdate: "is an UpdateMethod but does not define update()",
        NoForward: "is an ObjectiveMethod but does not define forward()",
    }
    for cls, message in cases.items():
        with pytest.raises(PluginError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_method_class(cls)
    with pytest.raises(PluginError, match="expected a subclass"):
        check_method_class(object)


@pytest.mark.parametrize("cls", [NewReLU, NewUpdate, NewObjective])
def test_a_correct_method_of_each_type_passes_and_trains(cls):
    check_method_class(cls)
    losses: list[float] = []

    class Record(sparsekit.Callback):
        def on_epoch_end(self, trainer, metrics):
            losses.append(metrics["loss"])

    model = sparsekit.train(
        cls, _data(), hidden=6, epochs=4, batch_size=16, dtype="float64", callbacks=[Record()]
    )
    assert losses[-1] < losses[0]
    assert model.decode(model.encode(_data(rows=3))).shape == (3, 10)


def test_the_types_dispatch_and_derive_the_first_contracts_flags():
    assert method_type(NewReLU) is Method
    assert method_type(NewUpdate) is UpdateMethod and issubclass(NewUpdate, Method)
    assert method_type(NewObjective) is ObjectiveMethod and not issubclass(NewObjective, Method)
    assert (NewReLU.own_update, NewReLU.own_objective) == (False, False)
    assert (NewUpdate.own_update, NewUpdate.own_objective) == (True, False)
    assert (NewObjective.own_update, NewObjective.own_objective) == (False, True)


def test_the_built_ins_have_the_types_their_steps_need():
    registry = sparsekit.load_registry(sparsekit.make_plugin_manager(entry_points=False))
    kinds = {info.name: method_type(info.cls).__name__ for info in registry}
    assert kinds["arora"] == "UpdateMethod"
    for name in ("plain", "l2", "kl", "ksparse"):
        assert kinds[name] == "Method"
    for name in ("topk", "batchtopk", "jumprelu", "gated", "matryoshka"):
        assert kinds[name] == "ObjectiveMethod"


def test_the_declared_member_lists_cover_each_types_own_members():
    """ONLY_READ_BY names the members each type adds (a new one must be listed), and the
    retired members are defined by no contract type any more."""
    for readers, members in contract.ONLY_READ_BY.items():
        for kind in readers if isinstance(readers, tuple) else (readers,):
            own = {name for name in vars(kind) if not name.startswith("_")}
            shared = {"output_activation", "own_update", "own_objective"}
            assert own - shared == set(members), kind.__name__
    for kind in contract.CONTRACT_TYPES:
        assert not set(contract.RETIRED) & set(vars(kind))
        assert not any(hasattr(kind, name) for name in contract.RETIRED)
