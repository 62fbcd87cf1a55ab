"""Global feature importance from Captum Integrated Gradients, reported per original column."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn


class _Probability(nn.Module):
    """Explain the positive-class probability, the number users see, not the raw logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(features))


def integrated_gradients(
    model: nn.Module,
    features: np.ndarray,
    feature_groups: dict[str, list[int]],
    n_steps: int,
    internal_batch_size: int,
) -> dict:
    """Attribute each row's probability to its features and sum one-hot columns back to the
    column they came from.

    The baseline is the all-zeros input: in standardised space that is the training mean of
    every numeric column and "no category" for every categorical one. Completeness says a
    row's attributions add up to f(x) - f(baseline); the convergence delta is how far off
    that sum is, so small deltas mean enough integration steps were used.
    """
    model.eval()
    inputs = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    explainer = IntegratedGradients(_Probability(model))
    # Captum evaluates rows x steps points; it needs internal_batch_size >= rows per call, so
    # rows go in chunks of internal_batch_size and memory stays bounded for any sample size.
    chunks, deltas = [], []
    for chunk in torch.split(inputs, internal_batch_size):
        attributions, delta = explainer.attribute(
            chunk,
            baselines=torch.zeros_like(chunk),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        chunks.append(attributions.detach())
        deltas.append(delta.detach())
    values = torch.cat(chunks).numpy()
    per_column = {column: values[:, idx].sum(axis=1) for column, idx in feature_groups.items()}
    importance = {column: float(np.abs(v).mean()) for column, v in per_column.items()}
    total = sum(importance.values()) or 1.0
    ranked = sorted(importance, key=importance.get, reverse=True)
    deltas = np.abs(torch.cat(deltas).numpy())
    return {
        "method": "integrated_gradients",
        "target": "positive-class probability",
        "baseline": "zeros in standardised space (training means; no category)",
        "rows": len(values),
        "n_steps": int(n_steps),
        "importance": [
            {
                "column": c,
                "mean_abs_attribution": importance[c],
                "share": importance[c] / total,
                "mean_attribution": float(per_column[c].mean()),
            }
            for c in ranked
        ],
        "convergence_delta": {
            "mean_abs": float(deltas.mean()),
            "max_abs": float(deltas.max()),
            "p95_abs": float(np.quantile(deltas, 0.95)),
        },
    }
