"""docs/plugins.md stays complete: every hook with its signature, every part of the contract."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest

import sparsekit.methods
import sparsekit.methods.hookspecs as hookspecs
from sparsekit import BaseMethod, Method, ObjectiveMethod, UpdateMethod
from sparsekit.core.contract import RETIRED
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


# -- the method types ------------------------------------------------------------------------

TYPES = {
    "BaseMethod": BaseMethod,
    "Method": Method,
    "UpdateMethod": UpdateMethod,
    "ObjectiveMethod": ObjectiveMethod,
}


def type_section(type_name: str) -> str:
    """The text of the ``### ... `TYPE` ...`` section, up to the next heading."""
    match = re.search(
        rf"^### [^\n]*`{type_name}`[^\n]*\n(.*?)(?=^##)", doc_text(), flags=re.S | re.M
    )
    assert match, f"docs/plugins.md has no ### section for `{type_name}`"
    return match.group(1)


def own_members(type_name: str) -> list[tuple[str, str]]:
    """``(type, member)`` for each public member a type defines itself (all of BaseMethod's)."""
    kind = TYPES[type_name]
    names = dir(kind) if kind is BaseMethod else list(vars(kind))
    return [(type_name, n) for n in sorted(names) if not n.startswith("_")]


@pytest.mark.parametrize(
    ("type_name", "member"), [case for name in TYPES for case in own_members(name)]
)
def test_every_member_is_documented_in_its_types_section(type_name, member):
    assert f"`{member}" in type_section(type_name), (
        f"docs/plugins.md: the `{type_name}` section does not describe {type_name}.{member}"
    )


@pytest.mark.parametrize("retired", sorted(RETIRED))
def test_the_retired_members_are_documented_as_refused(retired):
    refusal = re.search(r"^## What is refused, and where\n(.*?)(?=^## )", doc_text(), re.S | re.M)
    assert refusal and f"`{retired}()`" in refusal.group(1)
    assert not hasattr(Method, retired)


@pytest.mark.parametrize("path", ["sparsekit.methods.base", "sparsekit.activations", "sparsekit.gradcheck", "sparsekit.saelens"])  # fmt: skip
def test_every_deprecated_import_path_is_documented(path):
    assert f"`{path}`" in doc_text()


def test_the_doc_names_the_one_import_module_and_the_check():
    text = doc_text()
    assert "from sparsekit.methods import" in text and "`check_method_class" in text
    for name in TYPES:
        assert name in sparsekit.methods.__all__


def test_the_python_examples_import_only_from_sparsekit_methods():
    for block in re.findall(r"```python\n(.*?)```", doc_text(), flags=re.S):
        for line in block.splitlines():
            names_sparsekit = re.match(r"(from|import) sparsekit\b(?!_)", line)
            if names_sparsekit and "sparsekit.testing" not in line:
                assert line.startswith("from sparsekit.methods import"), line


def test_the_worked_example_warns_of_nothing():
    blocks = re.findall(r"```python\n(.*?)```", doc_text(), flags=re.S)
    example = next(b for b in blocks if "class ReluL1" in b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(example, "docs/plugins.md", "exec"), {})
