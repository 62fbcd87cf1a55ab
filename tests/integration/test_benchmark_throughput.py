"""The training-throughput benchmark runs end to end and prints every way it compares
(one short round, so this checks the benchmark works, not how fast anything is: no figure is
compared with a speed, only with the other figures the benchmark printed)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from fairtrain.config import load_params
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow

HAND, LIGHTNING, RAY = "hand-written loop", "plain Lightning", "Ray Train, 1 worker(s)"
EPOCHS = 2


def _figure(text: str) -> int:
    value = int(text.replace(",", ""))
    assert value > 0, text
    return value


def _ratio_bounds(way: int, before: int, after: int) -> tuple[float, float]:
    """The range ``way / mean(before, after)`` can have when each figure was printed rounded
    to a whole number (and the ratio to three decimals)."""
    low = (way - 0.5) / ((before + after) / 2 + 0.5)
    high = (way + 0.5) / ((before + after) / 2 - 0.5)
    return low - 0.0005, high + 0.0005


def test_the_benchmark_prints_each_way_with_its_ratio_to_the_hand_loop(tmp_path):
    # Run from elsewhere, with no cluster or store of the caller's: the benchmark finds its
    # params and data beside itself and starts its own local Ray.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks/train_throughput.py"),
            "--rounds=1",
            f"--epochs={EPOCHS}",
            "--workers=1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    # Every way trains the same work: the rows, batch and epochs stated once for all of them.
    batch = load_params(PROJECT_ROOT / "params.yaml").train.batch_size
    setup = re.search(
        rf"Adult training split: [1-9][\d,]* rows x [1-9]\d* features, batch {batch}, {EPOCHS} epochs, "
        r"1 round\(s\), device cpu, torch threads 1\n",
        out,
    )
    assert setup, out[:2000]

    # The round ran hand loop, way, hand loop, way, hand loop (see bracketed_ratios).
    round_line = next(line for line in out.splitlines() if line.startswith("round 1: "))
    ran = re.findall(rf"({re.escape(HAND)}|{re.escape(LIGHTNING)}|{re.escape(RAY)}) ([\d,]+)", round_line)
    assert [way for way, _ in ran] == [HAND, LIGHTNING, HAND, RAY, HAND], round_line
    figures = [_figure(value) for _, value in ran]

    table = out[out.index("\nway ") :].strip().splitlines()
    assert re.split(r"\s{2,}", table[0]) == [
        "way", "samples/s", "per worker vs hand loop", "vs hand, same N", "fixed overhead"
    ]  # fmt: skip
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in table[1:4])}
    assert set(rows) == {HAND, LIGHTNING, RAY}
    for way, (_, _, same_n, overhead) in rows.items():
        assert same_n == "-", "no hand-written way with the same process count at 1 worker"
        assert (overhead != "-") == (way == RAY), overhead

    # The table's figures are the round's: the hand loop's is the median of its three runs.
    assert _figure(rows[HAND][0]) == sorted(figures[0::2])[1]
    assert _figure(rows[LIGHTNING][0]) == figures[1]
    assert _figure(rows[RAY][0]) == figures[3]
    # Each way's ratio is to the hand-loop runs just before and after it.
    assert rows[HAND][1] == "1"
    for way, (before, value, after) in ((LIGHTNING, figures[0:3]), (RAY, figures[2:5])):
        ratio = rows[way][1]
        assert re.fullmatch(r"\d+\.\d{3}x", ratio), ratio
        low, high = _ratio_bounds(value, before, after)
        assert low <= float(ratio.removesuffix("x")) <= high, (way, ratio, before, value, after)

    overhead = re.fullmatch(r"(\d+\.\d) s", rows[RAY][3])
    assert overhead and math.isfinite(float(overhead[1])), rows[RAY][3]
    assert re.search(r"ray\.init \(local instance\): \d+\.\d s, paid once per stage run", out)
    assert not any(tmp_path.iterdir()), "the benchmark writes nothing where it runs"
