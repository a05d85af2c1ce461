"""The command line end to end, as a user runs it (real subprocesses, real MNIST)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

run = run_cli


def test_train_writes_a_run_directory(data_dir, tmp_path):
    result = run(
        "train",
        "ksparse",
        "--data",
        str(data_dir),
        "--subset",
        "1000",
        "--epochs",
        "2",
        "--hidden",
        "36",
        "--k",
        "10",
        "--out",
        str(tmp_path),
        "--no-download",
    )
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and run_dir.name.startswith("ksparse-")

    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "ksparse" and config["method_params"]["k"] == 10
    assert config["train"]["hidden"] == 36 and config["train"]["epochs"] == 2
    assert config["data"]["n"] == 1000

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["loss"] > 0 and r["seconds"] > 0 for r in rows)

    with Image.open(run_dir / "filters.png") as image:
        image.verify()
    with Image.open(run_dir / "filters.png") as image:
        # 36 filters: a 6×6 grid of 28×28 tiles with 1-pixel borders around every tile.
        assert image.size == (6 * 28 + 7, 6 * 28 + 7)


def test_data_directory_from_the_environment(data_dir, tmp_path):
    result = run(
        "train",
        "plain",
        "--subset",
        "200",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--out",
        str(tmp_path),
        "--no-download",
        env={"SPARSEKIT_DATA": str(data_dir)},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["train", "ksparse", "--k", "0"], 2, "ksparse: --k must be between 1 and the hidden"),
        (["train", "ksparse", "--hidden", "10", "--k", "11"], 2, "--k must be between 1"),
        (["train", "kl", "--rho", "1.5"], 2, "--rho must be strictly between 0 and 1"),
        (["train", "kl", "--lr", "-1"], 2, "--lr must be a finite number > 0"),
        (["train", "kl", "--batch-size", "0"], 2, "--batch-size must be a positive integer"),
        (["train", "kl", "--hidden", "0"], 2, "hidden must be a positive integer"),
        (["train", "ksparse", "--kk", "3"], 2, "unknown option --kk for method 'ksparse'"),
        (["train", "ksparse", "--kk", "3"], 2, "(did you mean --k? its options: --k, --alpha"),
        (["train", "ksparse", "--epoch", "2"], 2, "'ksparse' (did you mean --epochs?"),
        (["train", "ksparse", "--no-donwload"], 2, "(did you mean --no-download?"),
        (["train", "ksparse", "--k", "many"], 2, "--k: expected int, got 'many'"),
        (["train", "jumprelu", "--pre-bias", "maybe"], 2, "--pre-bias: expected true or false"),
        (["train", "jumprelu", "--pre_bias", "maybe"], 2, "--pre-bias: expected true or false"),
        (
            ["train", "topk", "--resample-every", "2", "--dead-after", "0"],
            2,
            "topk: --resample-every needs --dead-after > 0",
        ),
        (["train", "arora", "--untied"], 2, "needs tied weights"),
        (["train", "nope"], 5, "unknown method 'nope'"),
        (["train", "ksparse", "--gpu"], 4, "--gpu"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(args, code, words, tmp_path):
    result = run(*args, "--out", str(tmp_path / "runs"), "--no-download", "--data", str(tmp_path))
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # not even an empty line before it
    assert words in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


def test_missing_data_says_where_it_looked_and_what_it_needs(tmp_path):
    result = run("train", "ksparse", "--data", str(tmp_path), "--no-download")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(tmp_path / "mnist") in lines[0] and "train-images-idx3-ubyte" in lines[0]


def test_list_shows_every_method_with_origin_and_parameters():
    result = run("list", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for name in ("plain", "l2", "kl", "arora", "ksparse"):
        assert name in result.stdout
    assert "builtin" in result.stdout and "--k (25)" in result.stdout
    assert "--rho (0.1)" in result.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_train_help_lists_the_methods_own_options(flag):
    result = run("train", "ksparse", flag)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--epochs" in out and "--center" in out  # the command's own options
    assert "Options of ksparse" in out
    for option, default in (("--k ", "25"), ("--alpha", "3.0"), ("--k-start", "100")):
        line = next(line for line in out.splitlines() if line.strip().startswith(option))
        assert default in line, line
    assert "units kept per sample during training" in out
    assert "--center" in out.split("Options of ksparse")[1]  # its recommended settings


def test_train_help_without_a_method_and_for_an_unknown_one():
    result = run("train", "--help")
    assert result.returncode == 0 and "Name a METHOD before --help" in result.stdout
    unknown = run("train", "nope", "--help")
    assert unknown.returncode != 0 and "unknown method 'nope'" in unknown.stderr
