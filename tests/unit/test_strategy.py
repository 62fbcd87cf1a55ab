"""AllReduceStrategy on a real gloo process group: no collectives on a world of one (Ray forms
a group even for one worker), and the same synchronised metrics as before on a world of two."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import distributed
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_auroc

from fairtrain.lightning import SingleDeviceStrategy, pl
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.training.sharding import ShardBatches
from fairtrain.training.strategy import AllReduceStrategy
from tests.helpers import quiet_trainer
from tests.integration.servers import free_port

COLLECTIVES = ("barrier", "all_reduce", "all_gather", "broadcast", "broadcast_object_list")
ROWS = 240


class _Ranks(pl.plugins.environments.LightningEnvironment):
    """Fixed world size and rank, as Ray's RayLightningEnvironment reads them from Ray."""

    def __init__(self, world: int, rank: int) -> None:
        super().__init__()
        self._world, self._rank = world, rank

    def world_size(self) -> int:
        return self._world

    def global_rank(self) -> int:
        return self._rank

    def set_world_size(self, size: int) -> None:
        pass

    def set_global_rank(self, rank: int) -> None:
        pass


class _CpuAllReduce(AllReduceStrategy):
    """The strategy outside a Ray worker: Ray's strategy asks Ray Train for its device."""

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu")


def _data() -> tuple[TensorDataset, TensorDataset]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * ROWS, 6, generator=generator)
    y = (x[:, 0] - x[:, 2] + 0.5 * torch.randn(2 * ROWS, generator=generator) > 0).float()
    return TensorDataset(x[:ROWS], y[:ROWS]), TensorDataset(x[ROWS:], y[ROWS:])


def _fit(strategy, plugins: list, world: int = 1, rank: int = 0) -> tuple[TabularClassifier, dict]:
    """Two epochs of the module on this rank's shards; its weights and logged metrics."""
    train, val = _data()
    pl.seed_everything(3, verbose=False)
    module = TabularClassifier(6, [8], 0.0, 0.01, 0.0, max_epochs=2, steps_per_epoch=4, batch_size=32)
    trainer = quiet_trainer(
        max_epochs=2,
        strategy=strategy,
        plugins=plugins,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        module,
        DataLoader(train, sampler=ShardBatches(ROWS, 32, world, rank, seed=5), batch_size=None),
        DataLoader(val, sampler=ShardBatches(ROWS, 40, world, rank, seed=5, shuffle=False), batch_size=None),
    )
    return module, {k: float(v) for k, v in trainer.callback_metrics.items()}


def _count_collectives(replace=setattr) -> Counter:
    """Wrap torch.distributed's collectives so that every call is counted (and still made);
    ``replace`` is ``monkeypatch.setattr`` in the test process, plain setattr in a spawned one."""
    calls: Counter = Counter()
    for name in COLLECTIVES:
        original = getattr(distributed, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        replace(distributed, name, counted)
    return calls


def _join_group(rank: int, world: int, port: int) -> None:
    distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def test_one_rank_trains_without_collectives_and_as_a_single_device(monkeypatch):
    alone, alone_metrics = _fit(SingleDeviceStrategy(device=torch.device("cpu")), [])
    _join_group(0, 1, free_port())
    try:
        calls = _count_collectives(monkeypatch.setattr)
        grouped, grouped_metrics = _fit(_CpuAllReduce(), [_Ranks(1, 0)])
    finally:
        distributed.destroy_process_group()
    assert dict(calls) == {}, "a world of one has nothing to synchronise"
    assert {"train_loss", "val_loss", "val_auc"} <= grouped_metrics.keys()
    assert grouped_metrics == alone_metrics
    for mine, theirs in zip(grouped.parameters(), alone.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def _rank_process(rank: int, world: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    _join_group(rank, world, port)
    try:
        calls = _count_collectives()
        module, metrics = _fit(_CpuAllReduce(), [_Ranks(world, rank)], world, rank)
        _, val = _data()
        module.eval()
        with torch.no_grad():
            whole_auc = float(binary_auroc(module(val.tensors[0]).squeeze(-1), val.tensors[1].long()))
        result = {"calls": dict(calls), "metrics": metrics, "whole_auc": whole_auc}
        Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        distributed.destroy_process_group()


def test_two_ranks_still_synchronise_their_metrics(tmp_path):
    mp.start_processes(_rank_process, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert rank["calls"].get("all_reduce", 0) > 0 and rank["calls"].get("all_gather", 0) > 0
    # The AUROC was gathered over both shards: both ranks log the same value, which is the
    # AUROC of the whole validation set under the (shared) final weights.
    assert ranks[0]["metrics"]["val_auc"] == ranks[1]["metrics"]["val_auc"]
    assert abs(ranks[0]["metrics"]["val_auc"] - ranks[0]["whole_auc"]) < 1e-6
    assert ranks[0]["metrics"]["val_loss"] == ranks[1]["metrics"]["val_loss"]
