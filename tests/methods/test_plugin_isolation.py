"""Broken plugins are listed with their error and never break the other methods.

Each test installs fake distributions (a ``*.dist-info`` folder with an ``entry_points.txt``
in the ``sparsekit`` group, plus the module it names) on ``sys.path``: in this process for
the registry, in a subprocess for the command line. Also the environment switches
SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD, SPARSEKIT_BLOCK_PLUGINS and SPARSEKIT_TRACE_HOOKS.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from sparsekit import PluginError, load_registry, make_plugin_manager

_counter = itertools.count()

GOOD = """
from sparsekit import Method, hookimpl

class Extra(Method):
    name = "{method}"
    description = "A method from a well-behaved fake plugin."

@hookimpl
def sparsekit_register_methods(register):
    register.add(Extra)
"""
IMPORT_FAILS = "raise ImportError('needs the package frobnicate, which is not installed')\n"
REGISTER_FAILS = """
from sparsekit import hookimpl

@hookimpl
def sparsekit_register_methods(register):
    raise RuntimeError('cannot register: bad configuration')
"""
ADDS_A_NON_METHOD = """
from sparsekit import hookimpl

@hookimpl
def sparsekit_register_methods(register):
    register.add(dict)
"""
MISSPELT_HOOK = """
from sparsekit import hookimpl

@hookimpl
def sparsekit_register_method(register):
    raise AssertionError('never called')
"""
DUPLICATE = """
from sparsekit import Method, hookimpl

class Impostor(Method):
    name = "plain"
    description = "Claims a built-in name."

@hookimpl
def sparsekit_register_methods(register):
    register.add(Impostor)
"""


class FakeSite:
    """A folder on sys.path holding fake distributions with ``sparsekit`` entry points."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []
        self.tag = f"{os.getpid()}_{next(_counter)}"

    def add(self, entry_point: str, source: str, method: str | None = None) -> str:
        """A distribution whose entry point ``entry_point`` names a new module; its name."""
        module = f"fake_sk_{entry_point.replace('-', '_')}_{self.tag}"
        (self.root / f"{module}.py").write_text(source.format(method=method or ""))
        info = self.root / f"fake_sk_{entry_point.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fake-sk-{entry_point}\nVersion: 0.1\n"
        )
        (info / "entry_points.txt").write_text(f"[sparsekit]\n{entry_point} = {module}\n")
        self.modules.append(module)
        return module


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    fake = FakeSite(root)
    monkeypatch.syspath_prepend(str(root))
    for var in ("SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD", "SPARSEKIT_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


def failures_by_plugin(registry) -> dict[str, str]:
    """``{entry-point name: error}``: load failures read "NAME (module)", hook failures
    "plugin NAME (module)"."""
    return {f.plugin.removeprefix("plugin ").split(" ")[0]: f.error for f in registry.failures}


def test_broken_plugins_are_recorded_and_the_others_load(site):
    site.add("good-one", GOOD, method="fake-extra")
    site.add("import-fails", IMPORT_FAILS)
    site.add("register-fails", REGISTER_FAILS)
    site.add("adds-non-method", ADDS_A_NON_METHOD)
    site.add("misspelt", MISSPELT_HOOK)
    registry = load_registry(make_plugin_manager())
    assert {"plain", "l2", "kl", "arora", "ksparse", "fake-extra"} <= set(registry.methods)
    assert registry.methods["fake-extra"].origin.startswith("plugin good-one")
    failed = failures_by_plugin(registry)
    assert "ImportError: needs the package frobnicate" in failed["import-fails"]
    assert "RuntimeError: cannot register: bad configuration" in failed["register-fails"]
    assert "expects a Method subclass" in failed["adds-non-method"]
    assert "unknown hook 'sparsekit_register_method'" in failed["misspelt"]
    assert "sparsekit_register_methods" in failed["misspelt"]  # names the right one
    assert "good-one" not in failed


def test_a_duplicate_name_from_a_plugin_is_an_error_naming_both(site):
    site.add("impostor", DUPLICATE)
    with pytest.raises(PluginError, match="'plain' is registered twice.*impostor"):
        load_registry(make_plugin_manager())


def test_disable_autoload_skips_entry_points(site, monkeypatch):
    site.add("good-one", GOOD, method="fake-extra")
    site.add("import-fails", IMPORT_FAILS)
    monkeypatch.setenv("SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_registry(make_plugin_manager())
    assert "fake-extra" not in registry and not registry.failures
    assert "ksparse" in registry
    # An explicit request still loads them.
    assert "fake-extra" in load_registry(make_plugin_manager(entry_points=True))


def test_block_plugins_skips_entry_points_and_builtins(site, monkeypatch):
    site.add("good-one", GOOD, method="fake-extra")
    site.add("import-fails", IMPORT_FAILS)
    monkeypatch.setenv("SPARSEKIT_BLOCK_PLUGINS", "import-fails, sparsekit.methods.ksparse")
    registry = load_registry(make_plugin_manager())
    assert "ksparse" not in registry
    assert {"plain", "fake-extra"} <= set(registry.methods)
    assert not registry.failures  # the broken one was never imported
    assert not any(m in sys.modules for m in site.modules if "import_fails" in m)


def test_trace_hooks_prints_every_hook_call(site, monkeypatch, capfd):
    site.add("good-one", GOOD, method="fake-extra")
    monkeypatch.setenv("SPARSEKIT_TRACE_HOOKS", "1")
    registry = load_registry(make_plugin_manager())
    assert "fake-extra" in registry
    err = capfd.readouterr().err
    assert err.count("sparsekit_register_methods") >= 6  # five built-ins and the plugin
    monkeypatch.delenv("SPARSEKIT_TRACE_HOOKS")
    load_registry(make_plugin_manager())
    assert "sparsekit_register_methods" not in capfd.readouterr().err


def _cli(site: FakeSite, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The command line with the fake site on its path and none of our SPARSEKIT_* switches."""
    path = os.pathsep.join(filter(None, [str(site.root), os.environ.get("PYTHONPATH")]))
    return run_cli(
        *args, env={"PYTHONPATH": path, "COLUMNS": "250", **env}, autoload=True, clean=True,
        timeout=120,
    )  # fmt: skip


def test_sparsekit_list_shows_broken_plugins_and_still_works(site):
    site.add("good-one", GOOD, method="fake-extra")
    site.add("import-fails", IMPORT_FAILS)
    site.add("register-fails", REGISTER_FAILS)
    result = _cli(site, "list")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("plain", "l2", "kl", "arora", "ksparse", "fake-extra"):
        assert name in out
    assert "plugin good-one" in out and "builtin (sparsekit.methods.ksparse)" in out
    assert "failed plugin import-fails" in out and "frobnicate" in out
    assert "failed plugin" in out and "cannot register: bad configuration" in out
    # Other commands still work with the broken plugins installed.
    result = _cli(site, "gradcheck", "plain", "--tied")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plain (tied): gradients match" in result.stdout


def test_sparsekit_list_with_switches(site):
    site.add("import-fails", IMPORT_FAILS)
    result = _cli(site, "list", SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0 and "failed plugin" not in result.stdout
    assert "relu-l1" not in result.stdout  # installed plugins are not loaded either
    result = _cli(site, "list", SPARSEKIT_BLOCK_PLUGINS="sparsekit.methods.arora,import-fails")
    assert result.returncode == 0 and "failed plugin" not in result.stdout
    assert "arora" not in result.stdout and "ksparse" in result.stdout
    result = _cli(site, "list", SPARSEKIT_TRACE_HOOKS="1")
    assert result.returncode == 0 and "sparsekit_register_methods" in result.stderr
