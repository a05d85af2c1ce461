"""Gradient checks go through the same refusal as registering and training: a first-contract
class (activation() / output() overrides, an own_objective flag) is refused by
check_gradients, by the kit and by `sparsekit gradcheck` (one line, non-zero exit)."""

from __future__ import annotations

import re

import pytest
from old_contract import OldLinearOutput, OldReLU

import sparsekit
from sparsekit import Method, hookimpl
from sparsekit.cli import plugin_cmd
from sparsekit.cli.main import main
from sparsekit.errors import EXIT_PLUGIN, PluginError
from sparsekit.testing import ContractError, check_method
from sparsekit.testing.gradcheck import check_gradients


class FlaggedObjective(Method):
    name = "flagged-objective"
    description = "own_objective = True on a generic Method (first contract)."
    own_objective = True

    def forward(self, backend, params, x, training):
        raise AssertionError("never called")

    def loss_and_grads(self, backend, params, x, state, term=None):
        raise AssertionError("never called")


CASES = [
    (OldReLU, r"defines activation\(\).*declare hidden_activation"),
    (OldLinearOutput, r"defines output\(\).*declare output_activation"),
    (FlaggedObjective, "sets own_objective.*subclass sparsekit.methods.ObjectiveMethod"),
]
IDS = [cls.name for cls, _ in CASES]


@pytest.mark.parametrize(("cls", "message"), CASES, ids=IDS)
@pytest.mark.parametrize("tied", [True, False])
def test_check_gradients_refuses_them(cls, message, tied):
    with pytest.raises(PluginError, match=message):
        check_gradients(cls(), tied=tied, terms=True)


@pytest.mark.parametrize(("cls", "message"), CASES, ids=IDS)
def test_the_kit_reports_the_refusal_under_class_attributes(cls, message):
    with pytest.raises(ContractError) as info:
        check_method(cls)
    lines = [line for line in str(info.value).splitlines() if "[class_attributes]" in line]
    assert len(lines) == 1 and "refused when it registers" in lines[0]
    assert re.search(message, lines[0])


@pytest.mark.parametrize(("cls", "message"), CASES, ids=IDS)
def test_sparsekit_gradcheck_refuses_them_in_one_line(cls, message, monkeypatch, capsys):
    class Plugin:
        @hookimpl
        def sparsekit_register_methods(self, register):
            register.add(cls)

    registry = sparsekit.load_registry(
        sparsekit.make_plugin_manager([Plugin()], entry_points=False)
    )
    monkeypatch.setattr(plugin_cmd, "load_registry", lambda: registry)
    with pytest.raises(SystemExit) as info:
        main(["gradcheck", cls.name])
    assert info.value.code == EXIT_PLUGIN
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"unknown method {cls.name!r}" in lines[0] and cls.__qualname__ in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert "gradients match" not in captured.out
