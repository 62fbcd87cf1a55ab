"""The data-parallel strategy of the Ray workers: Ray's DDP strategy (process group, ranks,
devices, checkpoint and metric reduction) without the ``DistributedDataParallel`` wrapper.

DDP averages gradients from hooks it arms in its own ``forward``, so it needs one forward
through the wrapper before every backward. The module runs several optimiser steps per
Lightning step (``steps_per_execution``), all inside one such forward, and its network is
small: one flat all-reduce of all gradients after each backward is what DDP's bucketing
would do at this size anyway, and it leaves no hooks on a single worker (DDP's cost 20% of
the throughput with one worker, where there is nothing to reduce; see
benchmarks/train_throughput.py). Works with gloo on CPU and NCCL on GPUs.

On a world of one, Ray still forms a process group, and Lightning and torchmetrics then
synchronise through it: a barrier and an all-reduce for every ``sync_dist`` value and the
early-stopping decision, two barriers per checkpoint, a barrier and two all-gathers per
AUROC state, about 20 collectives per epoch that each hand over to gloo's thread and back
(3% of the epoch on Adult). With one rank there is nothing to agree on, so they are skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.train.lightning import RayDDPStrategy
from torch import distributed
from torchmetrics import Metric


def average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace every parameter's gradient by its mean over the process group: one flat
    all-reduce (a missing gradient counts as zeros, so every rank sends the same layout)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    distributed.all_reduce(flat)
    flat /= world_size
    for param, mean in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        param.grad = mean.view_as(param)


def _broadcast_from_rank0(tensors) -> None:
    with torch.no_grad():
        for tensor in tensors:
            distributed.broadcast(tensor, src=0)


def _group_size() -> int:
    """Ranks in the process group; 1 where there is none."""
    grouped = distributed.is_available() and distributed.is_initialized()
    return distributed.get_world_size() if grouped else 1


def _no_other_ranks() -> bool:
    # A module-level function, not a lambda, so that the metric still pickles.
    return False


class AllReduceStrategy(RayDDPStrategy):
    """DDP semantics, by hand: every rank starts from rank 0's weights, gradients are
    averaged after every backward, and rank 0's buffers (batch-norm running statistics) are
    used for validation and checkpoints, as DDP's buffer broadcast would."""

    _world: int | None = None  # set in setup_environment

    def _distributed(self) -> bool:
        # Before setup_environment, ask the process group itself.
        return (self._world if self._world is not None else _group_size()) > 1

    def setup_environment(self) -> None:
        super().setup_environment()  # forms the process group
        # Read once: the strategy's world_size asks Ray's train context, which costs 1% of
        # the throughput when done after every backward.
        self._world = _group_size()

    def configure_ddp(self) -> None:
        # Keep the LightningModule unwrapped; start every rank from rank 0's state.
        if self._distributed():
            _broadcast_from_rank0([*self.model.parameters(), *self.model.buffers()])
        else:
            # torchmetrics gathers its states whenever a process group exists.
            for metric in self.model.modules():
                if isinstance(metric, Metric):
                    metric.distributed_available_fn = _no_other_ranks

    def barrier(self, *args: Any, **kwargs: Any) -> None:
        if self._distributed():
            super().barrier(*args, **kwargs)

    def reduce(self, tensor: Any, group: Any = None, reduce_op: Any = "mean") -> Any:
        # The mean or sum over one rank is the value itself (what Lightning's sync returns).
        return super().reduce(tensor, group, reduce_op) if self._distributed() else tensor

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return super().broadcast(obj, src) if self._distributed() else obj

    def post_backward(self, closure_loss: torch.Tensor) -> None:
        if self._distributed():
            params = [p for p in self.lightning_module.parameters() if p.requires_grad]
            average_gradients(params, self._world)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self._distributed():
            _broadcast_from_rank0(self.lightning_module.buffers())
