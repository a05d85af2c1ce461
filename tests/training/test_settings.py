"""The training settings are declared once: every interface exposes exactly the declared
ones, and a bad value reads the same wherever it is given."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner

import sparsekit
from sparsekit.cli import compare_cmd, train_cmd
from sparsekit.cli.main import app, main
from sparsekit.errors import ParameterError
from sparsekit.studies.compare import compare
from sparsekit.studies.settings import (
    COMPARE_DEFAULTS,
    DATA_KEYS,
    PER_METHOD_SETTINGS,
    SHARED_SETTINGS,
    TRAIN_KEYS,
    CompareSettings,
)
from sparsekit.training.settings import (
    GROUPS,
    NON_NEGATIVE_INT,
    PER_METHOD,
    RUN_SETTINGS,
    SETTINGS,
    SHARED,
    TRAIN_CONFIG_SETTINGS,
    Setting,
    TrainConfig,
    check_settings,
    parse_number,
    parse_setting,
    resolve_config,
)

NAMES = [s.name for s in SETTINGS]

#: One impossible value per setting, and the message it gets everywhere.
BAD = {
    "dataset": ("", "--dataset must be a path, got ''"),
    "data": ("", "--data must be a path, got ''"),
    "download": ("yes", "--download must be true or false, got 'yes'"),
    "subset": (0, "--subset must be a positive integer, got 0"),
    "test_fraction": (1.0, "--test-fraction must be a number in [0, 1), got 1.0"),
    "stream_memory": (0, "--stream-memory must be a positive integer, got 0"),
    "stats_rows": (-5, "--stats-rows must be a positive integer, got -5"),
    "norm_scale": ("on", "--norm-scale must be true or false, got 'on'"),
    "remove_mean": (1, "--remove-mean must be true or false, got 1"),
    "zca": ("no", "--zca must be true or false, got 'no'"),
    "epochs": (0, "--epochs must be a positive integer, got 0"),
    "hidden": (0, "--hidden must be a positive integer, got 0"),
    "batch_size": (-3, "--batch-size must be a positive integer, got -3"),
    "lr": (-1.0, "--lr must be a finite number > 0, got -1.0"),
    "optimizer": ("rmsprop", "--optimizer must be one of sgd, momentum, adam, got 'rmsprop'"),
    "momentum": (1.5, "--momentum must be a number in [0, 1), got 1.5"),
    "tied": ("maybe", "--tied must be true or false, got 'maybe'"),
    "center": (2, "--center must be true or false, got 2"),
    "seed": (-1, "--seed must be an integer >= 0, got -1"),
    "dtype": ("float16", "--dtype must be float32 or float64, got 'float16'"),
    "gpu": ("cuda", "--gpu must be true or false, got 'cuda'"),
    "matmul_precision": ("bf16", "--matmul-precision must be float32 or tf32, got 'bf16'"),
    "out": ("", "--out must be a path, got ''"),
    "snapshot_every": (0, "--snapshot-every must be a positive integer, got 0"),
    "checkpoint_every": (-1, "--checkpoint-every must be a positive integer, got -1"),
    "gif_frames": (1, "--gif-frames must be an integer >= 2, got 1"),
}
#: Values the command line can carry (a flag cannot be anything but true or false, and Typer
#: reads an empty path as ".").
CLI_BAD = {s.name: BAD[s.name] for s in RUN_SETTINGS if s.type not in (bool, Path) and s.name != "dataset"}


def _keywords(func) -> dict[str, inspect.Parameter]:
    return {
        p.name: p
        for p in inspect.signature(func).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


# -- the declaration -------------------------------------------------------------------------


def test_every_setting_is_fully_declared():
    assert len(set(NAMES)) == len(NAMES)
    assert set(BAD) == set(NAMES)  # a new setting needs its bad value here too
    for s in SETTINGS:
        assert s.group in GROUPS, s.name
        assert s.help.endswith((".", "]")), s.name
        assert s.where <= {"config", "run", "compare"} and s.where, s.name
        if not s.unset:
            s.check(s.default)  # every default passes its own check
    assert {s.name for s in PER_METHOD} <= {s.name for s in TRAIN_CONFIG_SETTINGS} - {s.name for s in SHARED}


@pytest.mark.parametrize("name", NAMES)
def test_one_message_for_a_bad_value(name):
    value, message = BAD[name]
    with pytest.raises(ParameterError) as caught:
        check_settings({name: value})
    assert str(caught.value) == message


def test_numbers_are_finite_and_strings_are_parsed_as_declared():
    for text in ("inf", "-inf", "nan", "1e999", "many"):
        with pytest.raises(ParameterError, match="must be a finite number"):
            parse_number(text, "--lr")
    assert parse_number("1e-3") == 1e-3
    assert parse_setting("lr", "0.05") == 0.05
    assert parse_setting("tied", "untied") is False
    assert parse_setting("center", "yes") is True
    assert parse_setting("optimizer", "sgd") == "sgd"
    with pytest.raises(ParameterError, match=r"^--lr must be a finite number > 0, got 'inf'$"):
        parse_setting("lr", "inf")
    with pytest.raises(ParameterError, match=r"^--tied must be true or false, got 'maybe'$"):
        parse_setting("tied", "maybe")
    with pytest.raises(ParameterError, match="unknown training setting 'nope'"):
        check_settings({"nope": 1})


# -- every interface exposes exactly the declared settings ----------------------------------


def test_train_config_holds_the_config_settings_with_their_defaults():
    got = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert got == {s.name: s.default for s in TRAIN_CONFIG_SETTINGS}


def test_sparsekit_train_takes_the_config_settings():
    keywords = _keywords(sparsekit.train)
    # Where and how it runs (a backend, the ranks of a data-parallel job) is not a setting.
    how = ("callbacks", "registry", "backend", "distributed", "check_replicas")
    settings = {k: p for k, p in keywords.items() if k not in how}
    assert list(settings) == [s.name for s in TRAIN_CONFIG_SETTINGS]
    assert all(p.default is None for p in settings.values())  # None: the method's value


@pytest.mark.parametrize("func", [sparsekit.start_run, sparsekit.train_run])
def test_start_run_and_train_run_take_the_run_settings(func):
    keywords = _keywords(func)
    how = ("callbacks", "progress", "registry", "distributed", "check_replicas", "shard_latents")
    settings = {k: p for k, p in keywords.items() if k not in how}
    positional = inspect.signature(func).parameters["dataset"]
    assert positional.default == "mnist"
    assert ["dataset", *settings] == [s.name for s in RUN_SETTINGS]
    for s in RUN_SETTINGS[1:]:
        assert settings[s.name].default == (None if s.tunable else s.default), s.name


def _options(command) -> dict[str, object]:
    return {p.name: p for p in command.params if p.name not in ("method", "methods")}


def test_the_train_command_has_an_option_per_run_setting_with_its_help():
    command = get_command(app).commands["train"]
    options = _options(command)
    own = ("resume", "distributed", "shard_latents", "check_replicas", "show_help")
    assert [n for n in options if n not in own] == [s.name for s in RUN_SETTINGS]
    for s in RUN_SETTINGS:
        option = options[s.name]
        assert option.help == s.help
        assert s.option in option.opts
        if s.flag:
            assert option.opts + option.secondary_opts == s.flag.split("/")
        expected = None if s.tunable or s.cli_unset else s.default
        assert option.default == expected, s.name
    text = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["train", "--help"]).output
    for s in RUN_SETTINGS:
        assert s.option in text and s.help in text, s.name


def test_the_compare_command_has_an_option_per_shared_setting():
    command = get_command(app).commands["compare"]
    options = _options(command)
    assert {s.name for s in SHARED} <= set(options)
    for s in SHARED:
        assert options[s.name].help.startswith(s.help.rstrip(".")), s.name
        assert options[s.name].rich_help_panel == f"{s.group.capitalize()} settings"


def test_scikit_learn_parameters_are_the_declared_ones():
    from sparsekit.interop.sklearn import SparseCoding

    declared = [s.name for s in TRAIN_CONFIG_SETTINGS if s.name not in ("seed", "gpu", "matmul_precision")]
    own = [n for n in inspect.signature(SparseCoding.__init__).parameters if n != "self"]
    assert own[0] == "method" and own[-2:] == ["random_state", "method_params"]
    assert sorted(own[1:-2]) == sorted(declared)
    for s in TRAIN_CONFIG_SETTINGS:
        if s.name in declared:
            default = inspect.signature(SparseCoding.__init__).parameters[s.name].default
            assert default == (None if s.tunable else s.default), s.name
    params = SparseCoding("plain").get_params()
    assert set(params) == {"method", *declared, "random_state"}  # plain has no parameters


def test_compare_settings_and_sweep_keys_are_the_shared_settings():
    fields = {f.name: f.default for f in dataclasses.fields(CompareSettings)}
    assert list(fields) == [s.name for s in SHARED]
    for s in SHARED:
        assert fields[s.name] == (False if s.name == "download" else s.default), s.name
    assert (*DATA_KEYS, *TRAIN_KEYS) == tuple(s.name for s in SHARED)
    assert set(PER_METHOD_SETTINGS) == {s.name for s in PER_METHOD}
    assert set(SHARED_SETTINGS) == {s.name for s in TRAIN_CONFIG_SETTINGS} - set(PER_METHOD_SETTINGS)
    assert COMPARE_DEFAULTS == {"hidden": 196, "epochs": 10, "batch_size": 128}


# -- one message through every interface ----------------------------------------------------


@pytest.mark.parametrize("name", [s.name for s in TRAIN_CONFIG_SETTINGS])
def test_sparsekit_train_refuses_a_bad_setting(name):
    value, message = BAD[name]
    with pytest.raises(ParameterError) as caught:
        sparsekit.train("plain", np.zeros((10, 4)), **{name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize("name", [s.name for s in RUN_SETTINGS])
def test_train_run_refuses_a_bad_setting(name, tmp_path):
    value, message = BAD[name]
    settings = {"out": tmp_path / "runs", "download": False, name: value}
    dataset = settings.pop("dataset", "mnist")
    with pytest.raises(ParameterError) as caught:
        sparsekit.train_run("plain", dataset, **settings)
    assert str(caught.value) == message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", list(CLI_BAD))
def test_the_train_command_refuses_a_bad_setting(name, tmp_path, capsys):
    value, message = CLI_BAD[name]
    args = ["train", "plain", f"--{name.replace('_', '-')}", str(value)]
    with pytest.raises(SystemExit) as caught:
        main([*args, "--out", str(tmp_path / "runs"), "--no-download"])
    assert caught.value.code == ParameterError.exit_code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"sparsekit: error: {message}"]


@pytest.mark.parametrize("name", [s.name for s in SHARED] + [s.name for s in PER_METHOD])
def test_compare_refuses_a_bad_setting(name, tmp_path):
    value, message = BAD[name]
    if name in PER_METHOD_SETTINGS:
        call = {"params": {"plain": {name: value}}}
    else:
        call = {name: value}
    with pytest.raises(ParameterError) as caught:
        compare(["plain"], out=tmp_path, report=False, **call)
    assert str(caught.value) == message
    assert not any(tmp_path.iterdir())


def test_a_per_method_setting_given_as_text_reads_the_same(tmp_path):
    with pytest.raises(ParameterError, match=r"^--momentum must be a number in \[0, 1\), got 1.5$"):
        compare(["plain"], out=tmp_path, params=["plain.momentum=1.5"])


def test_resolve_config_stores_numpy_integers_as_ints():
    config = resolve_config(sparsekit.make_method("plain"), hidden=np.int64(8), seed=np.int32(2))
    assert type(config.hidden) is int and type(config.seed) is int


# -- adding a setting ------------------------------------------------------------------------


def test_a_new_setting_appears_in_the_train_command(monkeypatch):
    warmup = Setting(
        "warmup_epochs",
        int,
        0,
        "Epochs at a rising learning rate.",
        "optimiser",
        NON_NEGATIVE_INT,
        frozenset({"run"}),
    )
    signature = train_cmd.train_signature((*RUN_SETTINGS, warmup))
    monkeypatch.setattr(train_cmd.train, "__signature__", signature)
    command = get_command(app).commands["train"]
    option = _options(command)["warmup_epochs"]
    assert option.opts == ["--warmup-epochs"] and option.default == 0
    assert option.help == "Epochs at a rising learning rate."
    text = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["train", "--help"]).output
    assert "--warmup-epochs" in text and "Epochs at a rising learning rate." in text


def test_a_setting_checks_its_values_with_its_rule():
    s = Setting("warmup_epochs", int, 0, "Warm-up.", "optimiser", NON_NEGATIVE_INT, frozenset())
    s.check(3)
    with pytest.raises(ParameterError, match=r"^--warmup-epochs must be an integer >= 0, got -2$"):
        s.check(-2)
    assert math.isclose(parse_setting("momentum", "0.5"), 0.5)
    assert compare_cmd.compare.__signature__ is not None
