"""``benchmarks/busy_cores.py``: its pure helpers, and that it never leaves its spinner behind.

Nothing here measures speed: the children are replaced by fakes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def busy_cores() -> ModuleType:
    """The script, imported by file path (it imports ``cases.common`` from its folder)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("busy_cores", BENCHMARKS / "busy_cores.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while they are created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _record(condition: str, round_: int, setting: str, median_s: float) -> dict[str, Any]:
    return {
        "condition": condition,
        "round": round_,
        "setting": setting,
        "workload": "w2_batch",
        "median_s": median_s,
        "runs": 5,
    }


LABELS = ["threads 1", "threads 2", "threads 2, PASSIVE"]
RECORDS = [
    _record("idle", 0, "threads 1", 1.0),
    _record("idle", 0, "threads 2", 0.5),
    _record("idle", 0, "threads 2, PASSIVE", 0.6),
    _record("idle", 1, "threads 1", 3.0),
    _record("idle", 1, "threads 2", 0.7),
    _record("idle", 1, "threads 2, PASSIVE", 0.4),
    _record("idle", 2, "threads 1", 2.0),
    _record("idle", 2, "threads 2", 0.9),
    _record("idle", 2, "threads 2, PASSIVE", 0.5),
    _record("busy", 0, "threads 1", 1.0),
    _record("busy", 0, "threads 2", 8.0),
    _record("busy", 0, "threads 2, PASSIVE", 0.5),
]


def test_summarise_takes_medians_over_rounds_and_ratios_to_one_thread(busy_cores) -> None:
    rows = busy_cores.summarise(RECORDS, LABELS)
    assert [(row["workload"], row["condition"]) for row in rows] == [
        ("w2_batch", "idle"),
        ("w2_batch", "busy"),
    ]
    idle, busy = rows
    assert idle["median_s"] == {"threads 1": 2.0, "threads 2": 0.7, "threads 2, PASSIVE": 0.5}
    assert idle["ratio"] == {"threads 1": 1.0, "threads 2": 0.35, "threads 2, PASSIVE": 0.25}
    assert busy["median_s"] == {"threads 1": 1.0, "threads 2": 8.0, "threads 2, PASSIVE": 0.5}
    assert busy["ratio"] == {"threads 1": 1.0, "threads 2": 8.0, "threads 2, PASSIVE": 0.5}


def test_markdown_page(busy_cores) -> None:
    rows = busy_cores.summarise(RECORDS, LABELS)
    conditions = {
        "idle": {"load_average_1min_start": 0.5, "load_average_1min_end": 0.75, "elapsed_s": 42},
        "busy": {"load_average_1min_start": 1.0, "load_average_1min_end": 1.9, "elapsed_s": 60},
    }
    labels = {"w2_batch": "W2 barycenter, 256 × (M=5, d=16)"}
    page = busy_cores.markdown(rows, LABELS, labels, conditions, {"cpu": "test"}, 3, False)
    lines = page.splitlines()
    assert lines[0] == "# Thread settings on shared cores"
    assert "3 rounds" in lines[2]
    assert "not a speed claim" not in page
    assert (
        "| workload | condition | threads 1 | threads 2 | threads 2, PASSIVE "
        "| threads 2 ÷ threads 1 | threads 2, PASSIVE ÷ threads 1 |"
    ) in lines
    assert (
        "| W2 barycenter, 256 × (M=5, d=16) | idle | 2 s | 700 ms | 500 ms | 0.35× | 0.25× |"
        in (lines)
    )
    assert "| W2 barycenter, 256 × (M=5, d=16) | busy | 1 s | 8 s | 500 ms | 8× | 0.5× |" in lines
    assert "- idle: 1-minute load average 0.50 at the start, 0.75 at the end (42 s)" in lines
    assert "- busy: 1-minute load average 1.00 at the start, 1.90 at the end (60 s)" in lines
    assert "| cpu | test |" in lines
    quick = busy_cores.markdown(rows, LABELS, labels, conditions, {}, 1, True)
    assert "1 round," in quick and "not a speed claim" in quick


def test_speedups_divide_the_peer_by_ours_in_the_same_condition_and_setting(busy_cores) -> None:
    pot = [
        {**record, "workload": "pot_batch", "median_s": 10 * record["median_s"] + 1.0}
        for record in RECORDS
        if record["condition"] == "busy"
    ]
    rows = busy_cores.summarise([*RECORDS, *pot], LABELS)
    # busy medians: ours 1, 8, 0.5 s; POT 11, 81, 6 s; idle has no POT row
    assert busy_cores.speedups(rows, LABELS, "w2_batch", "pot_batch") == [
        ["busy", "11×", "10.1×", "12×"]
    ]
    page = busy_cores.markdown(
        rows, LABELS, {"w2_batch": "W2", "pot_batch": "POT"}, {}, {}, 1, False
    )
    assert "| busy | 11× | 10.1× | 12× |" in page.splitlines()
    assert (
        busy_cores.speedups(busy_cores.summarise(RECORDS, LABELS), LABELS, "w2_batch", "pot_batch")
        == []
    )


def test_time_calls_warms_up_then_stops_at_max_runs_or_budget(busy_cores) -> None:
    calls: list[None] = []
    workload = busy_cores.Workload("w2_single", 1, max_runs=3, budget_s=1e9)
    assert busy_cores.time_calls(lambda: calls.append(None), workload)["runs"] == 3
    assert len(calls) == 4
    calls.clear()
    no_budget = busy_cores.Workload("w2_single", 1, max_runs=3, budget_s=0.0, warm_up=False)
    assert busy_cores.time_calls(lambda: calls.append(None), no_budget)["runs"] == 1
    assert len(calls) == 1


def test_rotated_puts_every_setting_in_every_position(busy_cores) -> None:
    settings = busy_cores.SETTINGS
    orders = [busy_cores.rotated(settings, round_) for round_ in range(3)]
    assert [order[0] for order in orders] == list(settings)
    assert [setting.label for setting in orders[1]] == [
        "threads 2",
        "threads 2, PASSIVE",
        "threads 1",
    ]


def test_spinner_is_killed_when_a_measurement_raises(busy_cores, monkeypatch) -> None:
    spinners: list[subprocess.Popen[bytes]] = []
    start_spinner = busy_cores.start_spinner

    def recording_start() -> subprocess.Popen[bytes]:
        spinners.append(start_spinner())
        return spinners[-1]

    def failing_child(setting: Any, quick: bool) -> dict[str, Any]:
        assert spinners[-1].poll() is None, "the spinner runs during the measurement"
        raise RuntimeError("child failed")

    monkeypatch.setattr(busy_cores, "start_spinner", recording_start)
    monkeypatch.setattr(busy_cores, "run_child", failing_child)
    with pytest.raises(RuntimeError, match="child failed"):
        busy_cores.measure_all(busy_cores.SETTINGS, 1, True, conditions=("busy",))
    assert len(spinners) == 1
    assert spinners[0].returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(spinners[0].pid, 0)
