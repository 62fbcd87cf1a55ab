"""The LightningModule: loss, metrics, optimiser and learning-rate schedule around a
``TabularMLP``.

It holds no Ray code, so the same module trains under a plain ``pl.Trainer`` (tests,
benchmarks) and under Ray Train workers.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC

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
    ) -> None:
        super().__init__()
        # Plain numbers and lists only: the checkpoint must load with weights_only=True.
        self.save_hyperparameters()
        self.model = TabularMLP(
            n_features, list(hidden_sizes), dropout, batch_norm, embeddings, numeric_embedding
        )
        self.val_auc = BinaryAUROC()
        # A buffer moves with the module to the GPU; None means an unweighted loss.
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(float(pos_weight)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._rows = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, target = batch
        loss = self._loss(self(features), target)
        # Summed here and logged once per epoch: self.log on every step costs more than this
        # small network's forward pass (see benchmarks/train_throughput.py).
        self._loss_sum += loss.detach() * len(target)
        self._rows += len(target)
        return loss

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
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val_loss"},
            }
        raise ValueError(f"unknown lr_schedule {h.lr_schedule!r}; expected none, cosine, onecycle or plateau")
