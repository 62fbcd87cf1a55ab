"""A multilayer perceptron for tabular features; knows nothing about training."""

from __future__ import annotations

import torch
from torch import nn


def embedding_dim(cardinality: int, max_dim: int) -> int:
    """Width of a categorical's embedding: the fast.ai rule ``1.6 * n**0.56``, capped at
    ``max_dim`` and never wider than the one-hot block it replaces."""
    return max(1, min(max_dim, cardinality, round(1.6 * cardinality**0.56)))


class PeriodicEmbedding(nn.Module):
    """Numeric features → ``[cos(2π c x), sin(2π c x)]`` with learned frequencies ``c`` (drawn
    from N(0, sigma²)), then a per-feature ``Linear(2k → dim)`` + ReLU ("PLR" embeddings,
    Gorishniy et al. 2022). Lets the MLP carve sharp, non-monotone shapes out of a scalar
    (capital gain, age) that a plain first layer cannot; smooth, so IG attributions still work."""

    def __init__(self, n_numeric: int, frequencies: int, dim: int, sigma: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_numeric, frequencies) * sigma)
        self.weight = nn.Parameter(torch.empty(n_numeric, 2 * frequencies, dim))
        self.bias = nn.Parameter(torch.zeros(n_numeric, dim))
        nn.init.uniform_(self.weight, -((2 * frequencies) ** -0.5), (2 * frequencies) ** -0.5)

    def forward(self, values: torch.Tensor) -> torch.Tensor:  # (rows, n) → (rows, n * dim)
        angles = 2 * torch.pi * self.frequencies * values.unsqueeze(-1)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (rows, n, 2k)
        out = torch.relu(torch.einsum("bnf,nfd->bnd", periodic, self.weight) + self.bias)
        return out.flatten(1)


class TabularMLP(nn.Module):
    """``n_features`` → hidden ReLU layers with dropout → one logit for the positive class.

    The input is always the preprocessor's matrix (numeric columns and one-hot blocks), so
    attributions and the served model see the same features whatever the architecture.
    ``embeddings`` lists ``[start, end, dim]`` one-hot blocks to embed: a bias-free
    ``Linear(end - start → dim)`` on a one-hot block is exactly an embedding lookup, and it
    keeps the network differentiable in its inputs (Integrated Gradients needs that).
    ``batch_norm`` puts a ``BatchNorm1d`` after each hidden ``Linear``. ``numeric_embedding``
    (``{"indices": [...], "frequencies": k, "dim": d, "sigma": s}``) passes those numeric
    columns through a ``PeriodicEmbedding`` instead of feeding them in raw.
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        embeddings: list[list[int]] | None = None,
        numeric_embedding: dict | None = None,
    ) -> None:
        super().__init__()
        embeddings = [[int(s), int(e), int(d)] for s, e, d in (embeddings or [])]
        covered: set[int] = set()
        for start, end, dim in embeddings:
            block = set(range(start, end))
            if not (0 <= start < end <= n_features) or dim < 1 or block & covered:
                raise ValueError(f"bad embedding block [{start}, {end}, {dim}] for {n_features} features")
            covered |= block
        self.embedding_blocks = embeddings
        self.embed = nn.ModuleList(nn.Linear(e - s, d, bias=False) for s, e, d in embeddings)
        numeric = [int(i) for i in (numeric_embedding or {}).get("indices", [])]
        if set(numeric) & covered or not all(0 <= i < n_features for i in numeric):
            raise ValueError(f"bad numeric embedding indices {numeric} for {n_features} features")
        covered |= set(numeric)
        self.numeric_embed = None
        width = 0
        if numeric:
            spec = numeric_embedding or {}
            self.numeric_embed = PeriodicEmbedding(
                len(numeric), int(spec["frequencies"]), int(spec["dim"]), float(spec["sigma"])
            )
            width += len(numeric) * int(spec["dim"])
        passthrough = [i for i in range(n_features) if i not in covered]
        # Not in the state dict: rebuilt from the architecture.
        self.register_buffer("passthrough", torch.tensor(passthrough, dtype=torch.long), persistent=False)
        self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.long), persistent=False)
        layers: list[nn.Module] = []
        width += len(passthrough) + sum(d for _, _, d in embeddings)
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        numeric = None
        if self.numeric_embed is not None:
            numeric = self.numeric_embed(features.index_select(1, self.numeric))
        return self.head(features, numeric)

    def head(self, features: torch.Tensor, numeric_embedded: torch.Tensor | None = None) -> torch.Tensor:
        """The logit from the features and the numeric columns' periodic embedding (computed
        by ``forward``). Separate so Integrated Gradients can integrate along a straight path in
        embedding space: along the raw inputs, sin/cos of large values oscillate and the
        path integral needs thousands of steps to converge."""
        if self.embedding_blocks or numeric_embedded is not None:
            parts = [features.index_select(1, self.passthrough)]
            parts += [
                layer(features[:, s:e])
                for layer, (s, e, _) in zip(self.embed, self.embedding_blocks, strict=True)
            ]
            if numeric_embedded is not None:
                parts.append(numeric_embedded)
            features = torch.cat(parts, dim=1)
        return self.net(features).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Positive-class probability; switches to eval mode so dropout is off."""
        self.eval()
        return torch.sigmoid(self(features))


def embedding_blocks(groups: dict[str, list[int]], categorical: list[str], max_dim: int) -> list[list[int]]:
    """``[start, end, dim]`` for every categorical one-hot block of ``groups`` (the
    preprocessor's ``feature_groups``) with more than two values."""
    blocks = []
    for column in categorical:
        indices = groups[column]
        if len(indices) > 2 and indices == list(range(indices[0], indices[-1] + 1)):
            blocks.append([indices[0], indices[-1] + 1, embedding_dim(len(indices), max_dim)])
    return blocks
