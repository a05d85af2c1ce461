"""`sparsekit new-plugin`: the generated package installs, passes its own tests and trains.

The generated package is pip-installed (editable, offline: --no-deps --no-build-isolation)
into the current environment for the duration of this module and uninstalled afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsekit.errors import ParameterError, SparsekitError
from sparsekit.testing.skeleton import plugin_names, write_plugin_skeleton

BIN = Path(sys.executable).parent
NAME = f"skel-test-{os.getpid()}"
NAMES = plugin_names(NAME)


def run(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The generated package, installed in editable mode; uninstalled after the module."""
    parent = tmp_path_factory.mktemp("plugins")
    result = run(str(BIN / "sparsekit"), "new-plugin", NAME, "--dir", str(parent))
    assert result.returncode == 0, result.stderr
    root = parent / NAMES["dist"]
    try:
        result = run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-e",
            str(root),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield root
    finally:
        run(sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", NAMES["dist"])


def test_the_skeleton_has_the_expected_files(tmp_path):
    root = write_plugin_skeleton("my-method", tmp_path)
    assert root == tmp_path / "sparsekit-my-method"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "sparsekit_my_method/__init__.py",
        "tests/test_sparsekit_my_method.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.sparsekit]\nmy-method = "sparsekit_my_method"' in pyproject
    assert "class MyMethod(Method)" in (root / "sparsekit_my_method/__init__.py").read_text()
    assert (
        "method_contract_tests(MyMethod)"
        in (root / "tests/test_sparsekit_my_method.py").read_text()
    )


def test_the_generated_tests_pass_without_installing(tmp_path):
    root = write_plugin_skeleton("uninstalled-demo", tmp_path)
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 skipped" in result.stdout  # only the installed-entry-point test


@pytest.mark.parametrize(
    ("name", "message"),
    [("My_Method", "lower-case"), ("-x", "lower-case"), ("plain", "already registered")],
)
def test_bad_names_are_refused(tmp_path, name, message):
    with pytest.raises(ParameterError, match=message):
        write_plugin_skeleton(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path):
    write_plugin_skeleton("twice", tmp_path)
    with pytest.raises(SparsekitError, match="already exists"):
        write_plugin_skeleton("twice", tmp_path)


def test_cli_reports_bad_names(capsys):
    from sparsekit.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["new-plugin", "Bad Name"])
    assert info.value.code == ParameterError.exit_code
    assert "lower-case" in capsys.readouterr().err


def test_installed_plugin_passes_its_own_tests(installed):
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=installed)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "skipped" not in result.stdout  # entry point found


def test_installed_plugin_is_listed_with_its_origin(installed):
    result = run(str(BIN / "sparsekit"), "list")
    assert result.returncode == 0, result.stderr
    assert NAME in result.stdout
    assert f"plugin {NAME}" in result.stdout


def test_installed_plugin_gradchecks(installed):
    result = run(str(BIN / "sparsekit"), "gradcheck", NAME, "--l1", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "code penalty: ∂Ω_H/∂Hc" in result.stdout
    assert f"{NAME} (tied): gradients match" in result.stdout
    assert f"{NAME} (untied): gradients match" in result.stdout


def test_installed_plugin_trains_from_the_cli(installed, data_dir, tmp_path):
    result = run(
        str(BIN / "sparsekit"),
        "train",
        NAME,
        "--data",
        str(data_dir),
        "--subset",
        "300",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--l1",
        "0.01",
        "--out",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "runs"
    assert "epoch   1" in result.stderr
