"""`sparsekit gradcheck`: a table per layout, exit status 1 on a wrong gradient."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from typer.testing import CliRunner

import sparsekit
from sparsekit import hookimpl
from sparsekit.cli import plugin_cmd
from sparsekit.cli.main import app
from sparsekit.core.contract import penalty_pair
from sparsekit.errors import ParameterError
from sparsekit.methods.l2 import L2
from sparsekit.testing.gradcheck import check_gradients


class WrongWeightPenalty(L2):
    name = "wrong-decay"
    description = "L2 decay whose gradient is off by a factor."

    def weight_penalty(self, xp, weights):
        value, grads = penalty_pair(super().weight_penalty(xp, weights))
        return value, {k: 1.5 * g for k, g in grads.items()}


class TestPlugin:
    @hookimpl
    def sparsekit_register_methods(self, register):
        register.add(WrongWeightPenalty)


@pytest.fixture
def cli(monkeypatch):
    registry = sparsekit.load_registry(
        sparsekit.make_plugin_manager([TestPlugin()], entry_points=False)
    )
    monkeypatch.setattr(plugin_cmd, "load_registry", lambda: registry)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    return invoke


def test_a_correct_method_passes_every_layout(cli):
    result = cli("gradcheck", "kl")
    assert result.exit_code == 0, result.output
    for text in (
        "kl (tied weights)",
        "kl (untied weights)",
        "loss: ∂L/∂W_dec",
        "activation: f′(Z)",
        "output: g′(Y)",
        "code penalty: ∂Ω_H/∂Hc",
        "weight penalty: ∂Ω_W/∂W_enc",
        "no code-weight penalty",
        "kl (tied): gradients match",
        "kl (untied): gradients match",
    ):
        assert text in result.output
    assert "FAIL" not in result.output


def test_a_wrong_gradient_fails_with_status_1_and_names_the_term(cli):
    result = cli("gradcheck", "wrong-decay", "--untied", "--weight-decay", "0.5")
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert "wrong-decay (untied): relative error above" in result.output
    assert "weight penalty: ∂Ω_W/∂W_dec" in result.output
    assert "(tied weights)" not in result.output  # only the layout asked for


def test_layout_options(cli):
    assert "(untied weights)" not in cli("gradcheck", "plain", "--tied").output
    both = cli("gradcheck", "plain", "--both").output
    assert "(tied weights)" in both and "(untied weights)" in both
    result = cli("gradcheck", "arora", "--untied", "--tau", "0.3")
    assert isinstance(result.exception, sparsekit.ParameterError)
    assert "does not support untied weights" in str(result.exception)


def test_own_update_methods_are_checked_on_their_model(cli):
    result = cli("gradcheck", "arora", "--tau", "0.3")
    assert result.exit_code == 0, result.output
    assert "arora trains with its own update" in result.output
    assert "not the gradient" in result.output


def test_parameters_that_do_not_fit_an_explicit_size_get_a_hint(cli):
    result = cli("gradcheck", "ksparse", "--hidden", "8")
    assert "pass smaller method parameters or a larger --hidden" in str(result.exception)
    assert cli("gradcheck", "ksparse", "--k", "3", "--k-start", "3").exit_code == 0
    assert cli("gradcheck", "ksparse", "--hidden", "30", "--tied").exit_code == 0


def _installed_methods() -> list[str]:
    from sparsekit.methods.registry import load_registry

    return sorted(info.name for info in load_registry())


@pytest.mark.parametrize("method", _installed_methods())
def test_every_installed_method_checks_with_no_options(method):
    result = run_cli("gradcheck", method, autoload=True)  # the installed plugins' methods too
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gradients match" in result.stdout or "not the gradient" in result.stdout


def test_the_problem_is_sized_from_the_method_parameters():
    from sparsekit.methods.registry import load_registry
    from sparsekit.testing.gradcheck import PROBLEM_HIDDEN, problem_hidden

    registry = load_registry()
    assert problem_hidden(registry.create("plain")) == PROBLEM_HIDDEN
    # k = 25 needs 25 units (32); twice that, so that the top k drops units.
    assert problem_hidden(registry.create("ksparse")) == 64
    assert problem_hidden(registry.create("ksparse", k=40)) == 128
    assert problem_hidden(registry.create("ksparse", k=3)) == PROBLEM_HIDDEN
    with pytest.raises(ParameterError):
        problem_hidden(registry.create("ksparse", k=5000))


def test_unknown_method_and_bad_options(cli):
    assert "unknown method 'nope'" in str(cli("gradcheck", "nope").exception)
    assert "unknown option --bogus" in str(cli("gradcheck", "plain", "--bogus", "1").exception)
    assert "--eps and --tolerance" in str(cli("gradcheck", "plain", "--eps", "0").exception)


def test_library_report_keeps_its_shape():
    report = check_gradients(WrongWeightPenalty(weight_decay=0.5), tied=True)
    assert set(report.errors) == {"W_enc", "b_enc", "b_dec"} and not report.terms
    assert not report.ok and report.worst == max(report.errors.values())
    full = check_gradients(WrongWeightPenalty(weight_decay=0.5), tied=True, terms=True)
    assert full.failures.keys() >= {"loss: ∂L/∂W_enc", "weight penalty: ∂Ω_W/∂W_enc"}
    assert full.errors == report.errors
    assert np.isfinite(full.worst)
