"""The LightningModule: loss, metrics and optimiser around a ``TabularMLP``.

It holds no Ray code, so the same module trains under a plain ``pl.Trainer`` (tests,
benchmarks) and under Ray Train workers.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
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
    ) -> None:
        super().__init__()
        # Plain numbers and lists only: the checkpoint must load with weights_only=True.
        self.save_hyperparameters()
        self.model = TabularMLP(n_features, list(hidden_sizes), dropout)
        self.val_auc = BinaryAUROC()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, target = batch
        loss = F.binary_cross_entropy_with_logits(self(features), target)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(target))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        features, target = batch
        logits = self(features)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        self.val_auc.update(torch.sigmoid(logits), target.long())
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(target))
        # torchmetrics gathers the AUROC state across workers itself.
        self.log("val_auc", self.val_auc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
