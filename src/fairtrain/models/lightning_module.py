"""The LightningModule: loss, metrics, optimiser and learning-rate schedule around a
``TabularMLP``.

It holds no Ray code, so the same module trains under a plain ``pl.Trainer`` (tests,
benchmarks) and under Ray Train workers.

Optimisation is manual so that one Lightning step can run several optimiser steps: with
``batch_size`` set, every batch the loader yields is split into minibatches of that size
and each gets its own forward, backward, gradient all-reduce and optimiser step. The
minibatches, their order and the updates are the same as with one Lightning step per
minibatch, but Lightning's fixed per-step cost (hooks, loop bookkeeping: more than this
small network's forward and backward at batch 256 on one CPU thread) is paid once per
group (``steps_per_execution`` in params, after Keras's option of that name; see
benchmarks/train_throughput.py).

Within a group, as within one of Keras's executions, Lightning's per-step hooks run once:
the group's last minibatch goes through ``manual_backward`` and ``LightningOptimizer.step``
(``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step`` for the module
and every callback); the others make the same update without the hook dispatch (the
strategy's gradient all-reduce, AMP loss scaling and unscaling, clipping, the optimiser and
step count all as Lightning would), which cost 8% of the throughput on Adult. With
``steps_per_execution: 1`` every minibatch gets every hook.

Across Ray workers the gradients are averaged by the strategy after every backward
(``training.strategy.AllReduceStrategy``); the module itself has no distributed code.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC

from fairtrain.lightning import (
    MixedPrecision,
    Precision,
    Strategy,
    TrainerFn,
    _optimizer_handles_unscaling,
    pl,
)
from fairtrain.models.mlp import TabularMLP


class TabularClassifier(pl.LightningModule):
    def __init__(
        self,
        n_features: int,
        hidden_sizes: list[int],
        dropout: float,
        learning_rate: float,
        weight_decay: float,
        *,
        batch_norm: bool = False,
        embeddings: list[list[int]] | None = None,
        numeric_embedding: dict | None = None,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        lr_schedule: str = "none",
        max_epochs: int = 1,
        steps_per_epoch: int = 1,
        pos_weight: float | None = None,
        batch_size: int | None = None,
        gradient_clip_val: float = 0.0,
    ) -> None:
        super().__init__()
        # Plain numbers and lists only: the checkpoint must load with weights_only=True.
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model = TabularMLP(
            n_features, list(hidden_sizes), dropout, batch_norm, embeddings, numeric_embedding
        )
        self.val_auc = BinaryAUROC()
        # A buffer moves with the module to the GPU; None means an unweighted loss.
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(float(pos_weight)))
        # Set for each fit in on_train_start.
        self._hook_free_steps = False
        self._scaler: torch.amp.GradScaler | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)

    def on_train_start(self) -> None:
        # The hook-free steps repeat what Lightning's stock backward and these precision
        # plugins do around a step (plain float, or autocast with an optional GradScaler).
        # Anything that changes that (another plugin such as DeepSpeed's or bitsandbytes',
        # an overridden backward, DDP's post-local-SGD model averaging) gets Lightning's own
        # path for every minibatch.
        plugin, strategy = self.trainer.precision_plugin, self.trainer.strategy
        self._hook_free_steps = (
            type(plugin) in (Precision, MixedPrecision)
            and type(self).backward is pl.LightningModule.backward
            and type(strategy).backward is Strategy.backward
            and getattr(strategy, "_model_averager", None) is None
        )
        self._scaler = getattr(plugin, "scaler", None)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._rows = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        features, target = batch
        optimizer = self.optimizers()
        per_step = self._step_scheduler()
        size = self.hparams.batch_size or len(target)
        losses = []
        for start in range(0, len(target), size):
            x, y = features[start : start + size], target[start : start + size]
            loss = self._loss(self(x), y)
            if start + size < len(target) and self._hook_free_steps:
                self._step_without_hooks(optimizer, loss)
            else:
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                optimizer.step()  # clipping happens in on_before_optimizer_step, after AMP unscaling
            if per_step is not None:
                per_step.step()
            losses.append(loss.detach())
        # Summed once per group and logged once per epoch: self.log on every step costs more
        # than this small network's forward pass (see benchmarks/train_throughput.py). Weighted
        # by rows (every minibatch but the last has `size`) with plain numbers: a tensor of
        # weights would be a host-to-GPU copy, which waits for the queued GPU work.
        last = len(target) - size * (len(losses) - 1)
        self._loss_sum += torch.stack(losses).sum() * size + losses[-1] * (last - size)
        self._rows += len(target)

    def _step_without_hooks(self, optimizer, loss: torch.Tensor) -> None:
        """``zero_grad``, ``manual_backward(loss)`` and ``optimizer.step()`` for a
        ``Precision`` or ``MixedPrecision`` plugin, in their order, minus the hook dispatch."""
        raw, strategy, scaler = optimizer.optimizer, self.trainer.strategy, self._scaler
        raw.zero_grad(set_to_none=True)
        strategy.pre_backward(loss)
        scaled = loss if scaler is None else scaler.scale(loss)
        scaled.backward()
        strategy.post_backward(scaled.detach())  # the gradient all-reduce across workers
        # The LightningOptimizer's own bracket of every step: it counts the step (global_step).
        optimizer._on_before_step()
        if scaler is not None and not _optimizer_handles_unscaling(raw):
            scaler.unscale_(raw)  # before clipping, as MixedPrecision.optimizer_step does
        self._clip_gradients(raw)
        if scaler is None:
            raw.step()
        else:
            scaler.step(raw)  # skips the update when a gradient overflowed
            scaler.update()
        optimizer._on_after_step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._clip_gradients(optimizer)

    def _clip_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)

    def _step_scheduler(self):
        """The scheduler to step after every optimiser step, if any (one-cycle)."""
        scheduler = self.lr_schedulers()
        return scheduler if self.hparams.lr_schedule == "onecycle" else None

    def on_train_epoch_end(self) -> None:
        # Manual optimisation steps no scheduler by itself; the per-epoch ones step here, after
        # validation (plateau reads its val_loss), as Lightning's automatic loop would.
        scheduler = self.lr_schedulers()
        if scheduler is None or self.hparams.lr_schedule == "onecycle":
            return
        if self.hparams.lr_schedule == "plateau":
            val_loss = self.trainer.callback_metrics.get("val_loss")
            if val_loss is not None:
                scheduler.step(val_loss)
        else:
            scheduler.step()

    def on_validation_epoch_end(self) -> None:
        # Validation runs before on_train_epoch_end; log the training loss here so it is in
        # callback_metrics (progress line, checkpoint report) together with the validation metrics.
        if self.trainer.state.fn == TrainerFn.FITTING and getattr(self, "_rows", 0):
            self.log("train_loss", self._loss_sum / self._rows, sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        features, target = batch
        logits = self(features).float()
        # Validation loss is always the plain log loss, so runs with and without class weights
        # (and early stopping on it) compare on the same scale.
        loss = F.binary_cross_entropy_with_logits(logits, target)
        self.val_auc.update(torch.sigmoid(logits), target.long())
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(target))
        # torchmetrics gathers the AUROC state across workers itself.
        self.log("val_auc", self.val_auc, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        h = self.hparams
        # No weight decay on biases and normalisation parameters (the usual AdamW practice).
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
        groups = [
            {"params": decay, "weight_decay": h.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if h.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=h.learning_rate, momentum=h.momentum, nesterov=h.momentum > 0
            )
        elif h.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=h.learning_rate)
        else:
            raise ValueError(f"unknown optimizer {h.optimizer!r}; expected adamw or sgd")
        if h.lr_schedule == "none":
            return optimizer
        if h.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(h.max_epochs, 1))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if h.lr_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=h.learning_rate,
                epochs=max(h.max_epochs, 1),
                steps_per_epoch=max(h.steps_per_epoch, 1),
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if h.lr_schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=0.5, patience=1
            )
            # No "monitor" key: with manual optimisation Lightning ignores it (and warns);
            # on_train_epoch_end steps this scheduler on val_loss itself.
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        raise ValueError(f"unknown lr_schedule {h.lr_schedule!r}; expected none, cosine, onecycle or plateau")
