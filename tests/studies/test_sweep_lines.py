"""What sweep and compare say along the way, without a cluster (fast): a lost worker's
line, the bokeh hint as printed, and the extra that provides bokeh."""

from __future__ import annotations

import queue
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from rich.progress import Progress, TextColumn

from sparsekit.cli.compare_cmd import ComparisonDisplay
from sparsekit.cli.sweep_cmd import SweepDisplay
from sparsekit.studies import executor

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _drained(messages: list[dict]) -> list[tuple[str, str, dict]]:
    """The events ``executor._drain`` passes on for ``messages`` sent by workers."""
    events: queue.Queue = queue.Queue()
    for message in messages:
        events.put((0.0, message))
    out: list[tuple[str, str, dict]] = []
    executor._drain(events, {}, lambda *event: out.append(event), {}, 0.0)
    return out


def _message(kind: str, worker: str, **data) -> dict:
    return {"kind": kind, "key": "t1", "worker": worker, "data": data}


def test_a_trial_taken_over_by_another_worker_is_announced():
    out = _drained(
        [
            _message("status", "tcp://a:1", text="loading data"),
            _message("started", "tcp://a:1", epochs=4, epoch=0),
            _message("epoch", "tcp://a:1", metrics={"epoch": 1}),
            _message("status", "tcp://b:2", text="loading data"),
            _message("started", "tcp://b:2", epochs=4, epoch=2),
        ]
    )
    kinds = [kind for kind, _, _ in out]
    assert kinds == ["status", "started", "epoch", "status", "resumed", "started"]
    assert out[4][2] == {"lost": "tcp://a:1", "worker": "tcp://b:2", "epoch": 2}


def test_a_worker_restarted_at_the_same_address_is_announced_too():
    out = _drained(
        [
            _message("started", "tcp://a:1", epochs=4, epoch=0),
            _message("started", "tcp://a:1", epochs=4, epoch=1),
        ]
    )
    assert [kind for kind, _, _ in out] == ["started", "resumed", "started"]


def test_an_uneventful_trial_says_nothing_more():
    out = _drained(
        [
            _message("status", "tcp://a:1", text="loading data"),
            _message("started", "tcp://a:1", epochs=2, epoch=0),
            _message("epoch", "tcp://a:1", metrics={"epoch": 1}),
        ]
    )
    assert "resumed" not in [kind for kind, _, _ in out]


def _progress() -> tuple[Progress, Console]:
    console = Console(record=True, width=200, force_terminal=False)
    return Progress(TextColumn("{task.description}"), console=console), console


def test_the_sweep_prints_one_line_when_a_worker_is_lost():
    progress, console = _progress()
    display = SweepDisplay(progress)
    data = {"lost": "tcp://a:1", "worker": "tcp://b:2", "epoch": 2}
    display(SimpleNamespace(kind="resumed", trial="ksparse-k10", data=data))
    text = console.export_text()
    assert (
        "ksparse-k10: worker tcp://a:1 lost; resuming on tcp://b:2 from its checkpoint at "
        "epoch 2" in text
    )


def test_compare_prints_one_line_when_a_worker_is_lost():
    progress, console = _progress()
    display = ComparisonDisplay(progress)
    display(SimpleNamespace(kind="queued", method="kl", data={"epochs": 3}))
    data = {"lost": "tcp://a:1", "worker": "tcp://b:2", "epoch": 0}
    display(SimpleNamespace(kind="resumed", method="kl", data=data))
    assert "kl: worker tcp://a:1 lost; resuming on tcp://b:2 from the start" in (
        console.export_text()
    )


def test_the_bokeh_hint_names_the_extra():
    progress, console = _progress()
    display = SweepDisplay(progress)
    cluster = {"dashboard": None, "scheduler": "tcp://x:1", "workers": 1, "threads": 1}
    display(SimpleNamespace(kind="cluster", trial="", data=cluster))
    assert "pip install 'sparsekit[distributed]'" in console.export_text()


def test_the_dev_extra_serves_the_dashboard_too():
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("bokeh") for dep in extras["distributed"])
    assert any(dep.startswith("bokeh") for dep in extras["dev"])
