"""A multilayer perceptron for tabular features; knows nothing about training."""

from __future__ import annotations

import torch
from torch import nn


class TabularMLP(nn.Module):
    """``n_features`` → hidden ReLU layers with dropout → one logit for the positive class."""

    def __init__(self, n_features: int, hidden_sizes: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Positive-class probability; switches to eval mode so dropout is off."""
        self.eval()
        return torch.sigmoid(self(features))
