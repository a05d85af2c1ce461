"""Messages about a method's parameters name them as options (``--pre-bias``), whichever way
the value came in: the Python API (``pre_bias="maybe"``) or the command line. An unknown one
gets a "did you mean". Each message is triggered here, not looked up in the source."""

from __future__ import annotations

import numpy as np
import pytest

import sparsekit
from sparsekit.core.contract import Method
from sparsekit.core.declarations import Param, did_you_mean, option_of, positive
from sparsekit.errors import ParameterError


class TwoParams(Method):
    """A method with a two-word parameter, to see how messages spell it."""

    name = "two-params"
    params = (
        Param("pre_bias", bool, False, "a switch"),
        Param("step_size", float, 0.5, "a positive number", positive),
    )


def test_option_of_writes_the_command_line_form():
    assert option_of("pre_bias") == "--pre-bias"
    assert TwoParams.params[0].option == "--pre-bias"


def test_did_you_mean_suggests_the_closest_option_only_when_close():
    assert did_you_mean("--epoch", ["--k", "--epochs"]) == "did you mean --epochs? "
    assert did_you_mean("--zzz", ["--k", "--epochs"]) == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pre_bias": "maybe"}, "--pre-bias: expected true or false, got 'maybe'"),
        ({"step_size": "big"}, "--step-size: expected float, got 'big'"),
        ({"step_size": [1]}, "--step-size: expected float, got list [1]"),
    ],
)
def test_conversion_errors_name_the_option(values, message):
    with pytest.raises(ParameterError) as info:
        TwoParams(**values)
    assert str(info.value) == message


def test_check_errors_name_the_method_and_the_option():
    with pytest.raises(ParameterError) as info:
        TwoParams(step_size=-1.0).validate(hidden=8)
    assert str(info.value) == "two-params: --step-size must be > 0, got -1.0"


def test_unknown_parameter_is_named_as_an_option_with_a_suggestion():
    with pytest.raises(ParameterError) as info:
        TwoParams(pre_bais=True)
    assert str(info.value) == (
        "method 'two-params' has no parameter --pre-bais "
        "(did you mean --pre-bias? its parameters: --pre-bias, --step-size)"
    )


def test_library_messages_about_builtin_parameters_use_option_names():
    x = np.zeros((10, 16), np.float32)
    with pytest.raises(ParameterError, match=r"^--pre-bias: expected true or false"):
        sparsekit.train("jumprelu", x, hidden=8, epochs=1, pre_bias="maybe")
    with pytest.raises(ParameterError, match=r"^topk: --resample-every needs --dead-after > 0$"):
        sparsekit.train("topk", x, hidden=8, epochs=1, k=2, dead_after=0, resample_every=2)
    with pytest.raises(ParameterError, match=r"^matryoshka: --prefixes must be comma-separated"):
        sparsekit.train("matryoshka", x, hidden=8, epochs=1, k=2, prefixes="a,1")


def test_none_for_a_parameter_with_a_value_is_refused_by_name():
    """None stands for a value only where the default is None: ``dead_after=None`` used to be
    accepted and fail later in a comparison with an int (a TypeError, no parameter named)."""
    with pytest.raises(ParameterError, match=r"^--step-size: expected float, got None$"):
        TwoParams(step_size=None)
    with pytest.raises(ParameterError, match=r"^--dead-after: expected int, got None$"):
        sparsekit.train("topk", np.zeros((10, 16), np.float32), hidden=8, k=2, dead_after=None)
