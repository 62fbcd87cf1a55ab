"""Training throughput: the same model on the same data, four ways, in one run.

    python benchmarks/train_throughput.py                 # CPU, Adult, 3 rounds of 20 epochs
    python benchmarks/train_throughput.py --rounds 1      # quicker, noisier
    python benchmarks/train_throughput.py --device cuda   # one GPU (the Ray path then uses use_gpu)

(a) a hand-written PyTorch loop (the practical limit), (b) the same loop as N gloo processes
(the practical limit for N workers on this machine), (c) a plain Lightning ``Trainer``, (d)
the Ray Train path of the train stage with 1 and N workers. Every way trains the
``TabularClassifier`` of params.yaml on the Adult training split (validate -> prepare ->
augment, as the pipeline does) with the same batch size, and every "epoch" is one pass over
the training rows plus one over the validation rows. Steady-state throughput is training
rows per second, the median over the second half of the epochs: an epoch of Adult takes
about 0.2 s, so the first ones cover little more than warm-up (first allocations and calls,
and for the Ray path the first seconds of its processes). The Ray path's fixed start-up overhead
is its wall time minus its epochs' time. On CPU every way uses one thread per worker (Ray
gives each worker one CPU), so "per worker" ratios compare like with like.

Every way runs ``--rounds`` times, interleaved, with a hand-loop run before and after each
(see ``bracketed_ratios``), all while the local Ray instance is up; the table gives medians
over the rounds and the range of the ratios.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import BinaryAUROC

from fairtrain.config import load_params
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.io import read_json
from fairtrain.lightning import pl
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.validate_stage import validate_stage
from fairtrain.training.sharding import ShardBatches, shard_indices
from fairtrain.training.strategy import average_gradients
from fairtrain.training.worker import VALIDATION_BATCH_ROWS, build_module, loader

ROOT = Path(__file__).resolve().parents[1]


def load_data(params, folder: Path) -> dict[str, np.ndarray]:
    validate_stage(params, ROOT / params.dataset.path, folder / "validated.parquet", folder / "v.json")
    prepare_stage(params, folder / "validated.parquet", folder / "prepared", folder / "p.json")
    augment_stage(params, folder / "prepared/train.parquet", folder / "train.parquet", folder / "a.json")
    pre = Preprocessor.from_dict(read_json(folder / "prepared/preprocessor.json"))
    train, val = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "prepared/val.parquet")
    return {
        "x_train": pre.transform(train),
        "y_train": target_vector(train, params.dataset),
        "x_val": pre.transform(val),
        "y_val": target_vector(val, params.dataset),
    }


def module_config(params, data, epochs: int) -> dict:
    # max_epochs sizes the one-cycle schedule; every way runs `epochs` epochs.
    return {**params.train.model_dump(), "n_features": int(data["x_train"].shape[1]), "max_epochs": epochs}


def steady(epoch_seconds: list[float], rows: int) -> float:
    """Rows per second over the second half of the epochs: the first half is warm-up (see
    the module's docstring)."""
    return rows / statistics.median(epoch_seconds[len(epoch_seconds) // 2 :])


class GpuBusy:
    """Samples the GPU's utilisation (NVML: the share of the last sample period in which a
    kernel ran, what ``nvidia-smi`` shows) every ``interval`` seconds in a thread.
    ``measure(fn)`` runs one training and adds the mean utilisation over its steady-state
    epochs: the window of their summed duration that ends at the last busy sample (the end
    of the last epoch), which leaves out the start-up before the training (Ray's processes,
    CUDA and NCCL set-up) and the tear-down after it."""

    def __init__(self, interval: float = 0.05) -> None:
        import pynvml  # nvidia-ml-py: the `gpu` extra

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        self._interval = interval
        self._samples: list[tuple[float, int]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            # This training's list, held across the NVML call: measure() may end meanwhile.
            samples = self._samples
            if samples is not None:
                busy = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
                samples.append((time.perf_counter(), busy))

    def measure(self, fn: Callable[[], dict]) -> dict:
        if not self._thread.is_alive():
            raise RuntimeError("the GPU sampler thread died; GPU busy figures would read 0")
        self._samples = []
        try:
            outcome = fn()
        finally:
            samples, self._samples = self._samples, None
        epochs = outcome["epoch_seconds"]
        window = sum(epochs[len(epochs) // 2 :])
        return {**outcome, "gpu_busy_percent": busy_before_last(samples, window)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()


def busy_before_last(samples: list[tuple[float, int]], seconds: float) -> float:
    """Mean utilisation of the (time, percent) ``samples`` in the ``seconds`` up to the last
    non-zero one (0 when the GPU never got busy)."""
    busy = [t for t, value in samples if value > 0]
    if not busy:
        return 0.0
    window = [value for t, value in samples if busy[-1] - seconds <= t <= busy[-1]]
    return statistics.fmean(window)


def hand_loop(params, data, epochs: int, device: str, rank: int = 0, world: int = 1) -> dict:
    """The loop a person would write for the same training: index batches, forward, loss,
    backward, (average gradients over the processes,) (clip,) step, step the learning-rate
    schedule; then the validation loss and AUROC each epoch, which the other ways also
    compute. With ``world`` > 1 it is one of ``world`` gloo processes, each reading its
    shard of the rows (its own validation rows too) and all-reducing one flat gradient per
    step, as the Ray path's strategy does."""
    pl.seed_everything(params.train.seed, verbose=False)
    config = module_config(params, data, epochs)
    rows, batch_size = len(data["x_train"]), params.train.batch_size
    steps = math.ceil(math.ceil(rows / world) / batch_size)
    module = build_module(config, steps_per_epoch=steps).to(device)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    per_step = params.train.lr_schedule == "onecycle"
    clip = params.train.gradient_clip_val
    weights = list(module.parameters())
    auroc = BinaryAUROC().to(device)
    x, y = torch.from_numpy(data["x_train"]).to(device), torch.from_numpy(data["y_train"]).to(device)
    xv, yv = torch.from_numpy(data["x_val"]).to(device), torch.from_numpy(data["y_val"]).to(device)
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        module.train()
        order = shard_indices(rows, world, rank, params.train.seed, epoch, shuffle=True).to(device)
        for batch in order.split(batch_size):
            loss = F.binary_cross_entropy_with_logits(module(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                average_gradients(weights, world)  # what the Ray path's strategy does
            if clip:
                torch.nn.utils.clip_grad_norm_(weights, clip)
            optimizer.step()
            if per_step:
                scheduler.step()
        module.eval()
        with torch.no_grad():
            losses = []
            val_rows = shard_indices(len(xv), world, rank, 0, 0, shuffle=False).to(device)
            for batch in val_rows.split(max(batch_size, VALIDATION_BATCH_ROWS)):
                logits = module(xv[batch])
                losses.append(F.binary_cross_entropy_with_logits(logits, yv[batch]))
                auroc.update(torch.sigmoid(logits), yv[batch].long())
            val_loss = torch.stack(losses).mean()
            if world > 1:
                torch.distributed.all_reduce(val_loss)
            auroc.compute()
            auroc.reset()
        if scheduler is not None and not per_step:
            scheduler.step(*([val_loss] if params.train.lr_schedule == "plateau" else []))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"epoch_seconds": times, "samples_per_second": steady(times, rows)}


def _hand_loop_process(rank: int, world: int, port: int, params, data, epochs: int, results) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        outcome = hand_loop(params, data, epochs, "cpu", rank, world)
        if rank == 0:
            results.put(outcome)
    finally:
        torch.distributed.destroy_process_group()


def hand_loop_processes(params, data, epochs: int, world: int) -> dict:
    """``hand_loop`` as ``world`` processes on this machine (CPU, gloo over loopback): the
    practical limit for ``world`` workers here, communication and CPU sharing included."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(
        _hand_loop_process,
        args=(world, port, params, data, epochs, results),
        nprocs=world,
        start_method="spawn",
    )
    return results.get()


class _Timer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after validation, as in the hand loop
        self.times.append(time.perf_counter() - self._started)


def plain_lightning(params, data, epochs: int, device: str) -> dict:
    pl.seed_everything(params.train.seed, verbose=False)
    train = TensorDataset(torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"]))
    val = TensorDataset(torch.from_numpy(data["x_val"]), torch.from_numpy(data["y_val"]))
    batch = params.train.batch_size
    steps = math.ceil(len(train) / batch)
    module: TabularClassifier = build_module(module_config(params, data, epochs), steps_per_epoch=steps)
    timer = _Timer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        module,
        loader(
            train, ShardBatches(len(train), batch * params.train.steps_per_execution, 1, 0, params.train.seed)
        ),
        loader(val, ShardBatches(len(val), max(batch, VALIDATION_BATCH_ROWS), 1, 0, 0, shuffle=False)),
    )
    return {"epoch_seconds": timer.times, "samples_per_second": steady(timer.times, len(train))}


def ray_path(params, data, epochs: int, workers: int, device: str, deterministic: bool = True) -> dict:
    from fairtrain.training.trainer import TrainingData, train_distributed

    train_params = params.train.model_copy(
        update={"num_workers": workers, "max_epochs": epochs, "early_stopping_patience": epochs + 1,
                "use_gpu": device == "cuda", "deterministic": deterministic}
    )  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        outcome = train_distributed(TrainingData(**data), train_params, Path(out))
    wall = time.perf_counter() - started
    rows = len(data["x_train"])
    times = [rows / r["samples_per_second"] for r in outcome.history]
    return {
        "epoch_seconds": times,
        "samples_per_second": steady(times, rows),
        "wall_seconds": wall,
        "overhead_seconds": wall - sum(times),
    }


HAND = "hand-written loop"


def bracketed_ratios(
    sequence: list[tuple[str, float]], workers: Mapping[str, int] | None = None
) -> list[tuple[str, float]]:
    """Per-worker throughput of every way in one round over the hand loop's, where the hand
    loop's figure is the mean of its runs just before and just after that way.

    ``sequence`` is the round's (way, samples/s) in the order they ran; a hand-loop run
    comes first and after every other way. ``workers``: each way's worker (process) count,
    1 where absent. This machine's speed drifts by several per cent
    over tens of seconds (other tenants of the host), so a ratio to a hand loop measured a
    minute earlier mixes the drift into the comparison; bracketing each way with hand-loop
    runs cancels drift that is linear over the way's own run.
    """
    ratios = []
    for i, (way, value) in enumerate(sequence):
        if way == HAND:
            continue
        before = next(v for w, v in reversed(sequence[:i]) if w == HAND)
        after = next((v for w, v in sequence[i + 1 :] if w == HAND), before)
        ratios.append((way, value / (workers or {}).get(way, 1) / ((before + after) / 2)))
    return ratios


def _spread(values: list[float], fmt: str) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, fmt)
    return f"{format(median, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--epochs", type=int, default=20, help="per training (the first half is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="times every way runs, interleaved")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, help="override train.batch_size (per worker)")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.batch_size:
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"batch_size": args.batch_size})}
        )
    if args.device == "cpu":
        torch.set_num_threads(1)  # what each Ray worker gets (one CPU)
    with tempfile.TemporaryDirectory() as folder:
        data = load_data(params, Path(folder))
    print(
        f"Adult training split: {len(data['x_train']):,} rows x {data['x_train'].shape[1]} features, "
        f"batch {params.train.batch_size}, {args.epochs} epochs, {args.rounds} round(s), "
        f"device {args.device}, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    import ray

    started = time.perf_counter()
    # As the train stage starts it (training/ray_runtime.py): the dashboard serves the state API
    # Ray Train's cleanup polls; without it Ray logs warnings every few seconds.
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR")
    init_seconds = time.perf_counter() - started

    hand = functools.partial(hand_loop, params, data, args.epochs, args.device)
    ways: dict[str, Callable[[], dict]] = {
        "plain Lightning": functools.partial(plain_lightning, params, data, args.epochs, args.device)
    }
    workers_of: dict[str, int] = {}  # ways with more than one worker (process)
    same_n: dict[str, str] = {}  # a Ray way -> the hand-written way with its process count
    for workers in args.workers:
        ray_way = f"Ray Train, {workers} worker(s)"
        if args.device == "cpu" and workers > 1:
            same_n[ray_way] = f"hand-written, {workers} processes"
            ways[same_n[ray_way]] = functools.partial(hand_loop_processes, params, data, args.epochs, workers)
            workers_of[same_n[ray_way]] = workers
        ways[ray_way] = functools.partial(ray_path, params, data, args.epochs, workers, args.device)
        workers_of[ray_way] = workers
        if args.device == "cuda":
            # What Lightning's deterministic mode (train.deterministic) costs on the GPU; the
            # hand loop and plain Lightning run without it.
            loose = f"{ray_way}, deterministic off"
            ways[loose] = functools.partial(
                ray_path, params, data, args.epochs, workers, args.device, deterministic=False
            )
            workers_of[loose] = workers
    gpu = GpuBusy() if args.device == "cuda" else None
    results: dict[str, list[dict]] = {HAND: [], **{way: [] for way in ways}}
    ratios: dict[str, list[float]] = {way: [] for way in ways}
    versus_same_n: dict[str, list[float]] = {}
    try:
        for round_ in range(args.rounds):
            # hand loop, way, hand loop, way, ..., hand loop: see bracketed_ratios.
            order = [HAND, *(step for way in ways for step in (way, HAND))]
            sequence: list[tuple[str, float]] = []
            for way in order:
                run = hand if way == HAND else ways[way]
                outcome = gpu.measure(run) if gpu else run()
                results[way].append(outcome)
                sequence.append((way, outcome["samples_per_second"]))
            for way, ratio in bracketed_ratios(sequence, workers_of):
                ratios[way].append(ratio)
            round_figures = dict(sequence)
            for way, reference in same_n.items():
                versus_same_n.setdefault(way, []).append(round_figures[way] / round_figures[reference])
            print(
                f"round {round_ + 1}: " + ", ".join(f"{way} {value:,.0f}" for way, value in sequence),
                flush=True,
            )
    finally:
        ray.shutdown()
        if gpu:
            gpu.close()

    header = ("way", "samples/s", "per worker vs hand loop", "vs hand, same N", "fixed overhead")
    # Two spaces between columns at least, so the table splits on them (tests do).
    row = "{:40}  {:>10}  {:>25}  {:>21}  {:>18}" + ("  {:>14}" if gpu else "")
    print("\n" + row.format(*header, *(["GPU busy"] if gpu else [])))
    for way, outcomes in results.items():
        throughput = statistics.median(o["samples_per_second"] for o in outcomes)
        ratio = _spread(ratios[way], ".3f") + "x" if way in ratios else "1"
        versus = _spread(versus_same_n[way], ".3f") + "x" if way in versus_same_n else "-"
        overheads = [o["overhead_seconds"] for o in outcomes if "overhead_seconds" in o]
        overhead = _spread(overheads, ".1f") + " s" if overheads else "-"
        busy = [_spread([o["gpu_busy_percent"] for o in outcomes], ".0f") + "%"] if gpu else []
        print(row.format(way, f"{throughput:,.0f}", ratio, versus, overhead, *busy))
    print(
        f"\nsamples/s: median over rounds; ratios: median (range) over rounds, each way against "
        f"the hand loop run just before and after it; ray.init (local instance): "
        f"{init_seconds:.1f} s, paid once per stage run, not per training"
        + (
            "; GPU busy: NVML utilisation (share of time a kernel ran), mean over each "
            "training's steady-state epochs"
            if gpu
            else ""
        )
    )


if __name__ == "__main__":
    main()
