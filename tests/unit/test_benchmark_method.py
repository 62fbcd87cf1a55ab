"""How benchmarks/train_throughput.py turns interleaved runs into ratios."""

from __future__ import annotations

import pytest
from benchmarks.train_throughput import HAND, bracketed_ratios, busy_before_last


def test_each_way_is_compared_with_the_hand_loop_runs_just_before_and_after_it():
    sequence = [
        (HAND, 100.0),
        ("plain Lightning", 99.0),
        (HAND, 120.0),
        ("Ray Train, 1 worker(s)", 110.0),
        (HAND, 100.0),
    ]
    ratios = dict(bracketed_ratios(sequence))
    assert ratios == {
        "plain Lightning": pytest.approx(99 / 110),
        "Ray Train, 1 worker(s)": pytest.approx(110 / 110),
    }


def test_ratios_are_per_worker():
    sequence = [(HAND, 100.0), ("hand-written, 2 processes", 120.0), (HAND, 100.0)]
    assert bracketed_ratios(sequence, {"hand-written, 2 processes": 2}) == [
        ("hand-written, 2 processes", pytest.approx(0.6))
    ]


def test_a_drift_of_the_machine_during_a_round_cancels_out():
    # The machine slows steadily by 2% per run; a way as fast as the hand loop stays at 1.0
    # (against the round's first hand-loop run it would read 0.98 and 0.94).
    speed = [100.0 * (1 - 0.02 * i) for i in range(5)]
    sequence = [
        (HAND, speed[0]),
        ("plain Lightning", speed[1]),
        (HAND, speed[2]),
        ("Ray Train, 1 worker(s)", speed[3]),
        (HAND, speed[4]),
    ]
    assert [r for _, r in bracketed_ratios(sequence)] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_a_way_without_a_hand_loop_after_it_uses_the_one_before():
    assert bracketed_ratios([(HAND, 100.0), ("plain Lightning", 90.0)]) == [
        ("plain Lightning", pytest.approx(0.9))
    ]


def test_gpu_busy_is_averaged_over_the_steady_epochs_before_the_last_busy_sample():
    # (seconds, percent): start-up idle, a blip (CUDA set-up), idle, the training, tear-down.
    samples = [(0.0, 0), (1.0, 5), (2.0, 0), (3.0, 40), (4.0, 60), (5.0, 80), (6.0, 0), (7.0, 0)]
    assert busy_before_last(samples, 1.0) == pytest.approx((60 + 80) / 2)  # t in [4, 5]
    assert busy_before_last(samples, 2.0) == pytest.approx((40 + 60 + 80) / 3)
    assert busy_before_last([(0.0, 0), (1.0, 0)], 1.0) == 0.0
    assert busy_before_last([], 1.0) == 0.0
