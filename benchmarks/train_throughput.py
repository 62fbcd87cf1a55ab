"""Training throughput: the same model on the same data, four ways, in one run.

    python benchmarks/train_throughput.py                 # CPU, Adult, 5 epochs
    python benchmarks/train_throughput.py --device cuda   # one GPU (the Ray path then uses use_gpu)

(a) a hand-written PyTorch loop (the practical limit), (b) a plain Lightning ``Trainer``,
(c) the Ray Train path of the train stage with 1 and 2 workers. Every way trains the
``TabularClassifier`` of params.yaml on the Adult training split (validate -> prepare ->
augment, as the pipeline does) with the same batch size, and every "epoch" is one pass over
the training rows plus one over the validation rows. Steady-state throughput is training
rows per second over the epochs after the first (the first pays for warm-up); the Ray path's
fixed start-up overhead is its wall time minus its epochs' time. On CPU every way uses one
thread per worker (Ray gives each worker one CPU), so "per worker" ratios compare like with like.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import BinaryAUROC

from fairtrain.config import load_params
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.io import read_json
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
    later = epoch_seconds[1:] or epoch_seconds
    return rows / statistics.median(later)


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


def ray_path(params, data, epochs: int, workers: int, device: str) -> dict:
    import ray

    from fairtrain.training.trainer import TrainingData, train_distributed

    train_params = params.train.model_copy(
        update={"num_workers": workers, "max_epochs": epochs, "early_stopping_patience": epochs + 1,
                "use_gpu": device == "cuda"}
    )  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        outcome = train_distributed(TrainingData(**data), train_params, Path(out))
    wall = time.perf_counter() - started
    rows = len(data["x_train"])
    times = [rows / r["samples_per_second"] for r in outcome.history]
    del ray
    return {
        "epoch_seconds": times,
        "samples_per_second": steady(times, rows),
        "wall_seconds": wall,
        "overhead_seconds": wall - sum(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--epochs", type=int, default=5)
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
        f"batch {params.train.batch_size}, {args.epochs} epochs, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    results = {"hand-written loop": hand_loop(params, data, args.epochs, args.device)}
    if args.device == "cpu":
        for workers in [w for w in args.workers if w > 1]:
            results[f"hand-written, {workers} processes"] = hand_loop_processes(
                params, data, args.epochs, workers
            )
    results["plain Lightning"] = plain_lightning(params, data, args.epochs, args.device)

    import ray

    started = time.perf_counter()
    # As the train stage starts it (training/ray_runtime.py): the dashboard serves the state API
    # Ray Train's cleanup polls; without it Ray logs warnings every few seconds.
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR")
    init_seconds = time.perf_counter() - started
    try:
        for workers in args.workers:
            results[f"Ray Train, {workers} worker(s)"] = ray_path(
                params, data, args.epochs, workers, args.device
            )
    finally:
        ray.shutdown()

    base = results["hand-written loop"]["samples_per_second"]
    header = ("way", "samples/s", "per worker", "vs hand loop", "vs hand, same N", "fixed overhead")
    print("\n{:28} {:>11} {:>11} {:>13} {:>16} {:>15}".format(*header))
    for name, r in results.items():
        workers = int(name.split(", ")[1].split()[0]) if ", " in name else 1
        per_worker = r["samples_per_second"] / workers
        same_n = results.get(f"hand-written, {workers} processes") if workers > 1 else None
        versus_same_n = f"{r['samples_per_second'] / same_n['samples_per_second']:.2f}x" if same_n else "-"
        overhead = f"{r['overhead_seconds']:.1f} s" if "overhead_seconds" in r else "-"
        print(
            f"{name:28} {r['samples_per_second']:>11,.0f} {per_worker:>11,.0f} "
            f"{per_worker / base:>12.2f}x {versus_same_n:>16} {overhead:>15}"
        )
    print(f"\nray.init (local instance): {init_seconds:.1f} s, paid once per stage run, not per training")


if __name__ == "__main__":
    main()
