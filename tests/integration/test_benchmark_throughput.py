"""The training-throughput benchmark runs end to end and prints every way it compares
(one short round, so this checks the benchmark works, not how fast anything is)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_the_benchmark_prints_each_way_with_its_ratio_to_the_hand_loop():
    done = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--rounds=1", "--epochs=2", "--workers=1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("\nway ") :].strip().splitlines()
    assert re.split(r"\s{2,}", table[0]) == [
        "way", "samples/s", "per worker vs hand loop", "vs hand, same N", "fixed overhead"
    ]  # fmt: skip
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in table[1:4])}
    assert set(rows) == {"hand-written loop", "plain Lightning", "Ray Train, 1 worker(s)"}
    for way, (samples_per_second, ratio, _, overhead) in rows.items():
        assert int(samples_per_second.replace(",", "")) > 1000, way
        if way == "hand-written loop":
            assert ratio == "1"
        else:  # loose bounds: a ratio far outside them means a way trained different work
            assert 0.3 < float(ratio.rstrip("x")) < 2, ratio
        assert (overhead != "-") == way.startswith("Ray"), overhead
    assert re.fullmatch(r"\d+\.\d s", rows["Ray Train, 1 worker(s)"][3])
    assert "ray.init (local instance)" in done.stdout
