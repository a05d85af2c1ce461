"""docs/plugins.md stays complete: every hook with its signature, every part of the contract."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import sparsekit.methods.hookspecs as hookspecs
from sparsekit import Method
from sparsekit.methods.hookspecs import PROJECT_NAME
from sparsekit.testing import CHECKS, check_method

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def normalise(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("'", "").replace('"', ""))


def hookspecs_in_module() -> list[tuple[str, str]]:
    """``(name, "name(args) -> ret")`` for every hook specification."""
    specs = []
    for name, obj in vars(hookspecs).items():
        if callable(obj) and hasattr(obj, f"{PROJECT_NAME}_spec"):
            specs.append((name, f"{name}{inspect.signature(obj)}"))
    return specs


def test_there_are_hookspecs_to_check():
    assert [name for name, _ in hookspecs_in_module()] == ["sparsekit_register_methods"]


@pytest.mark.parametrize(("name", "signature"), hookspecs_in_module())
def test_every_hookspec_is_documented_with_its_signature(name, signature):
    text = normalise(doc_text())
    assert normalise(signature) in text, (
        f"docs/plugins.md must document the hook {signature} (with this exact signature)"
    )


def test_the_signature_check_would_catch_a_changed_hook():
    def sparsekit_register_methods(register, extra):  # a spec that grew an argument
        pass

    signature = f"sparsekit_register_methods{inspect.signature(sparsekit_register_methods)}"
    assert normalise(signature) not in normalise(doc_text())


@pytest.mark.parametrize("attribute", [n for n in dir(Method) if not n.startswith("_")])
def test_every_method_attribute_is_documented(attribute):
    assert f"`{attribute}" in doc_text(), f"docs/plugins.md does not describe Method.{attribute}"


@pytest.mark.parametrize("check", list(CHECKS))
def test_every_kit_check_is_documented(check):
    assert check in doc_text()


@pytest.mark.parametrize(
    "variable",
    ["SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD", "SPARSEKIT_BLOCK_PLUGINS", "SPARSEKIT_TRACE_HOOKS"],
)
def test_every_switch_is_documented(variable):
    assert variable in doc_text()


def test_the_worked_example_runs_and_passes_the_kit():
    blocks = re.findall(r"```python\n(.*?)```", doc_text(), flags=re.S)
    example = next(b for b in blocks if "class ReluL1" in b)
    namespace: dict = {}
    exec(compile(example, "docs/plugins.md", "exec"), namespace)
    check_method(namespace["ReluL1"], l1=0.5)
