"""Attributions that check themselves: Captum Integrated Gradients per original column, with
convergence checks, bootstrap stability, per-group means and a second method's ranking.

- **Baseline** (``evaluate.attribution.baseline``): ``train_mean`` (the mean transformed
  training row: numeric columns ≈ 0 in standardised space, each one-hot slot at its category's
  training frequency), ``zeros`` (zeros in standardised space: training means and "no
  category"), or ``sampled`` (each explained row gets a randomly drawn training row; the
  attributions then answer "why this row and not a typical other person").
- **Convergence**: completeness says a row's attributions add up to f(x) − f(baseline); the
  convergence delta is how far off the sum is. Rows over ``convergence_tolerance`` are counted
  and listed; more than ``max_share_over_tolerance`` of them flags the whole result.
- **Stability**: importance (mean |attribution| per column) is recomputed on bootstrap
  resamples of the explained rows, giving a percentile interval per column, how often each
  column keeps its rank, and the mean Spearman correlation of resample rankings with the full one.
- **Per group**: mean |attribution| and mean attribution per column for every group of each
  sensitive feature among the explained rows.
- **Cross-check**: Feature Ablation (each original column replaced by the baseline, one-hot
  slots together) or GradientSHAP (training rows as baselines), aggregated to columns; the
  Spearman rank correlation of its column ranking with IG's is reported.

Memory stays bounded: rows go through Captum in chunks of ``internal_batch_size`` and the
bootstrap runs over blocks of resamples.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from captum.attr import FeatureAblation, GradientShap, IntegratedGradients
from scipy.stats import spearmanr
from torch import nn

BASELINE_DESCRIPTIONS = {
    "zeros": "zeros in standardised space (training means; no category)",
    "train_mean": "mean transformed training row (numeric means; one-hot slots at category frequencies)",
    "sampled": "one randomly drawn training row per explained row",
}
MAX_LISTED_ROWS = 20  # rows over the tolerance listed by position, worst first
BOOTSTRAP_BLOCK = 50  # resamples materialised at once
SHAP_SAMPLES = 20  # GradientSHAP: random (baseline, point) draws per explained row
SHAP_BASELINES = 100  # GradientSHAP: training rows to draw baselines from


class _Probability(nn.Module):
    """Explain the positive-class probability, the number users see, not the raw logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(features))


class _EmbeddedProbability(nn.Module):
    """The probability as a function of (features, periodic embedding of the numeric columns),
    for models with a numeric embedding (``TabularMLP.head``): IG then runs along a straight
    line in embedding space, as is usual for embedded inputs (words, say); completeness still
    holds, f(x) − f(baseline) being the same two network values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, numeric_embedded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model.head(features, numeric_embedded))


def _embedded_ig(
    model: nn.Module, chunk: torch.Tensor, chunk_base: torch.Tensor, n_steps: int, internal_batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG through the numeric embedding; each numeric column gets the sum over its embedding."""
    with torch.no_grad():
        embedded = model.numeric_embed(chunk.index_select(1, model.numeric))
        embedded_base = model.numeric_embed(chunk_base.index_select(1, model.numeric))
    (on_features, on_embedding), delta = IntegratedGradients(_EmbeddedProbability(model)).attribute(
        (chunk, embedded),
        baselines=(chunk_base, embedded_base),
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    # The raw numeric columns do not reach ``head`` (their gradient is zero there): their
    # attribution is what flowed through their slice of the embedding.
    attributions = on_features.detach().clone()
    per_numeric = on_embedding.detach().view(len(chunk), len(model.numeric), -1).sum(dim=-1)
    attributions[:, model.numeric] += per_numeric
    return attributions, delta.detach()


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def _ig_values(
    model: nn.Module, features: np.ndarray, baselines: np.ndarray, n_steps: int, internal_batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature IG attributions and signed convergence deltas, row by row."""
    model.eval()
    inputs = _tensor(features)
    base = _tensor(np.broadcast_to(baselines, features.shape).copy())
    explainer = IntegratedGradients(_Probability(model))
    embedded = getattr(model, "numeric_embed", None) is not None
    # Captum evaluates rows x steps points; it needs internal_batch_size >= rows per call, so
    # rows go in chunks of internal_batch_size and memory stays bounded for any sample size.
    chunks, deltas = [], []
    for chunk, chunk_base in zip(
        torch.split(inputs, internal_batch_size), torch.split(base, internal_batch_size), strict=True
    ):
        if embedded:
            attributions, delta = _embedded_ig(model, chunk, chunk_base, n_steps, internal_batch_size)
            chunks.append(attributions)
            deltas.append(delta)
            continue
        attributions, delta = explainer.attribute(
            chunk,
            baselines=chunk_base,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        chunks.append(attributions.detach())
        deltas.append(delta.detach())
    return torch.cat(chunks).numpy().astype(np.float64), torch.cat(deltas).numpy().astype(np.float64)


def _per_column(values: np.ndarray, feature_groups: dict[str, list[int]]) -> np.ndarray:
    """rows × original columns: one-hot slots summed back to the column they came from."""
    return np.column_stack([values[:, idx].sum(axis=1) for idx in feature_groups.values()])


def _importance_rows(columns: list[str], per_column: np.ndarray) -> list[dict]:
    importance = np.abs(per_column).mean(axis=0)
    total = importance.sum() or 1.0
    order = np.argsort(-importance, kind="stable")
    return [
        {
            "column": columns[i],
            "mean_abs_attribution": float(importance[i]),
            "share": float(importance[i] / total),
            "mean_attribution": float(per_column[:, i].mean()),
        }
        for i in order
    ]


def integrated_gradients(
    model: nn.Module,
    features: np.ndarray,
    feature_groups: dict[str, list[int]],
    n_steps: int,
    internal_batch_size: int,
    baselines: np.ndarray | None = None,
    baseline_name: str = "zeros",
) -> dict:
    """IG attributions per original column (``baselines``: one row, or one per row; zeros by
    default), with convergence-delta summaries."""
    return _integrated_gradients(
        model, features, feature_groups, n_steps, internal_batch_size, baselines, baseline_name
    )[0]


def _integrated_gradients(
    model, features, feature_groups, n_steps, internal_batch_size, baselines, baseline_name
) -> tuple[dict, np.ndarray, np.ndarray]:
    base = np.zeros((1, features.shape[1])) if baselines is None else baselines
    values, deltas = _ig_values(model, features, base, n_steps, internal_batch_size)
    per_column = _per_column(values, feature_groups)
    absolute = np.abs(deltas)
    report = {
        "method": "integrated_gradients",
        "target": "positive-class probability",
        "baseline": BASELINE_DESCRIPTIONS.get(baseline_name, baseline_name),
        "baseline_kind": baseline_name,
        "rows": len(values),
        "n_steps": int(n_steps),
        "importance": _importance_rows(list(feature_groups), per_column),
        "convergence_delta": {
            "mean_abs": float(absolute.mean()),
            "max_abs": float(absolute.max()),
            "p95_abs": float(np.quantile(absolute, 0.95)),
        },
    }
    return report, per_column, deltas


def choose_baselines(
    kind: str, train_features: np.ndarray, rows: int, rng: np.random.Generator
) -> np.ndarray:
    """The IG baseline for ``rows`` explained rows: one row (broadcast) or one per row."""
    if kind == "zeros":
        return np.zeros((1, train_features.shape[1]))
    if kind == "train_mean":
        return train_features.mean(axis=0, keepdims=True)
    if kind == "sampled":
        return train_features[rng.integers(0, len(train_features), size=rows)]
    raise ValueError(f"unknown attribution baseline {kind!r} (expected zeros, train_mean or sampled)")


def convergence_check(deltas: np.ndarray, tolerance: float, max_share: float, positions: np.ndarray) -> dict:
    absolute = np.abs(deltas)
    over = absolute > tolerance
    worst = np.argsort(-absolute, kind="stable")[: min(MAX_LISTED_ROWS, int(over.sum()))]
    share = float(over.mean())
    passed = share <= max_share
    return {
        "tolerance": tolerance,
        "rows_over_tolerance": int(over.sum()),
        "share_over_tolerance": share,
        "max_share_over_tolerance": max_share,
        "passed": bool(passed),
        "flagged_rows": [{"test_row": int(positions[i]), "delta": float(deltas[i])} for i in worst],
        "reason": (
            f"{int(over.sum())} of {len(deltas)} explained rows ({share:.1%}) have |convergence delta| > "
            f"{tolerance}; {'within' if passed else 'above'} the allowed {max_share:.1%}"
            + ("" if passed else ": raise evaluate.ig_steps")
        ),
    }


def _ranks(importance: np.ndarray) -> np.ndarray:
    """Rank of each column (1 = most important) along the last axis."""
    order = np.argsort(-importance, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, importance.shape[-1] + 1), axis=-1)
    return ranks


def stability(
    columns: list[str], per_column: np.ndarray, n_resamples: int, level: float, rng: np.random.Generator
) -> dict:
    """Bootstrap over explained rows: importance interval per column and rank stability."""
    absolute = np.abs(per_column)
    n = len(absolute)
    full_ranks = _ranks(absolute.mean(axis=0))
    samples = np.empty((n_resamples, absolute.shape[1]))
    for start in range(0, n_resamples, BOOTSTRAP_BLOCK):
        block = min(BOOTSTRAP_BLOCK, n_resamples - start)
        index = rng.integers(0, n, size=(block, n))
        samples[start : start + block] = absolute[index].mean(axis=1)
    shares = samples / np.maximum(samples.sum(axis=1, keepdims=True), 1e-300)
    ranks = _ranks(samples)
    q = [(1 - level) / 2, (1 + level) / 2]
    low, high = np.quantile(samples, q, axis=0)
    share_low, share_high = np.quantile(shares, q, axis=0)
    rank_low, rank_high = np.quantile(ranks, q, axis=0)
    correlations = [spearmanr(full_ranks, r).statistic for r in ranks]
    top = min(3, len(columns))
    top_set = set(np.flatnonzero(full_ranks <= top))
    same_top = np.mean([set(np.flatnonzero(r <= top)) == top_set for r in ranks])
    return {
        "method": f"bootstrap over explained rows, {n_resamples} resamples, level {level}",
        "mean_rank_spearman": float(np.nanmean(correlations)),
        f"top_{top}_same_share": float(same_top),
        "columns": {
            c: {
                "rank": int(full_ranks[i]),
                "mean_abs_lower": float(low[i]),
                "mean_abs_upper": float(high[i]),
                "share_lower": float(share_low[i]),
                "share_upper": float(share_high[i]),
                "rank_lower": int(np.rint(rank_low[i])),
                "rank_upper": int(np.rint(rank_high[i])),
                "same_rank_share": float(np.mean(ranks[:, i] == full_ranks[i])),
            }
            for i, c in enumerate(columns)
        },
    }


def by_group(
    columns: list[str], per_column: np.ndarray, groups: dict[str, np.ndarray], min_rows: int
) -> dict:
    """Mean |attribution| and mean attribution per column, per group of each sensitive feature."""
    result = {}
    for feature, labels in groups.items():
        labels = np.asarray(labels).astype(str)
        result[feature] = {}
        for group in sorted(np.unique(labels).tolist()):
            rows = per_column[labels == group]
            mean_abs = np.abs(rows).mean(axis=0)
            total = mean_abs.sum() or 1.0
            ranks = _ranks(mean_abs)
            result[feature][group] = {
                "rows": len(rows),
                "small": len(rows) < min_rows,
                "columns": {
                    c: {
                        "mean_abs_attribution": float(mean_abs[i]),
                        "share": float(mean_abs[i] / total),
                        "mean_attribution": float(rows[:, i].mean()),
                        "rank": int(ranks[i]),
                    }
                    for i, c in enumerate(columns)
                },
            }
    return result


def second_method(
    kind: str,
    model: nn.Module,
    features: np.ndarray,
    feature_groups: dict[str, list[int]],
    baselines: np.ndarray,
    train_features: np.ndarray,
    internal_batch_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """rows × original columns attributions from Feature Ablation or GradientSHAP."""
    forward = _Probability(model).eval()
    inputs = _tensor(features)
    if kind == "feature_ablation":
        mask = np.zeros((1, features.shape[1]), dtype=np.int64)
        for position, idx in enumerate(feature_groups.values()):
            mask[0, idx] = position
        base = _tensor(np.broadcast_to(baselines, features.shape).copy())
        explainer = FeatureAblation(forward)
        rows_per_call = max(1, internal_batch_size // len(feature_groups))
        parts = []
        for chunk, chunk_base in zip(
            torch.split(inputs, rows_per_call), torch.split(base, rows_per_call), strict=True
        ):
            values = explainer.attribute(
                chunk,
                baselines=chunk_base,
                feature_mask=torch.from_numpy(mask),
                perturbations_per_eval=len(feature_groups),
            )
            parts.append(values.detach())
        values = torch.cat(parts).numpy().astype(np.float64)
        # Every slot of a column carries the column's whole attribution: take one slot each.
        return np.column_stack([values[:, idx[0]] for idx in feature_groups.values()])
    if kind == "gradient_shap":
        pool = train_features[rng.integers(0, len(train_features), size=SHAP_BASELINES)]
        explainer = GradientShap(forward)
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        rows_per_call = max(1, internal_batch_size // SHAP_SAMPLES)
        parts = [
            explainer.attribute(chunk, baselines=_tensor(pool), n_samples=SHAP_SAMPLES, stdevs=0.0).detach()
            for chunk in torch.split(inputs, rows_per_call)
        ]
        return _per_column(torch.cat(parts).numpy().astype(np.float64), feature_groups)
    raise ValueError(f"unknown second attribution method {kind!r}")


def attribution_report(
    model: nn.Module,
    features: np.ndarray,
    positions: np.ndarray,
    feature_groups: dict[str, list[int]],
    train_features: np.ndarray,
    groups: dict[str, np.ndarray],
    settings,
    min_group_size: int,
    level: float,
    seed: int,
) -> tuple[dict, dict[str, float]]:
    """The full attribution report (JSON-ready) and the seconds each part took.

    ``positions``: the explained rows' positions in the test split; ``groups``: sensitive
    feature → label per explained row; ``settings``: ``EvaluateConfig``.
    """
    config = settings.attribution
    rng = np.random.default_rng(seed)
    timings = {}
    started = time.perf_counter()
    baselines = choose_baselines(config.baseline, train_features, len(features), rng)
    result, per_column, deltas = _integrated_gradients(
        model,
        features,
        feature_groups,
        settings.ig_steps,
        settings.ig_internal_batch_size,
        baselines,
        config.baseline,
    )
    timings["integrated_gradients_seconds"] = time.perf_counter() - started
    result["convergence"] = convergence_check(
        deltas, config.convergence_tolerance, config.max_share_over_tolerance, positions
    )
    columns = list(feature_groups)
    started = time.perf_counter()
    if config.bootstrap_resamples:
        result["stability"] = stability(columns, per_column, config.bootstrap_resamples, level, rng)
    result["by_group"] = by_group(columns, per_column, groups, min_group_size)
    timings["attribution_stability_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    other = second_method(
        config.second_method,
        model,
        features,
        feature_groups,
        baselines,
        train_features,
        settings.ig_internal_batch_size,
        rng,
    )
    ig_importance = np.abs(per_column).mean(axis=0)
    other_importance = np.abs(other).mean(axis=0)
    rho = spearmanr(ig_importance, other_importance).statistic
    result["cross_check"] = {
        "method": config.second_method,
        "baseline": (
            "training rows drawn at random" if config.second_method == "gradient_shap" else result["baseline"]
        ),
        "spearman_rank_correlation": None if np.isnan(rho) else float(rho),
        "importance": _importance_rows(columns, other),
    }
    timings["second_method_seconds"] = time.perf_counter() - started
    return result, timings
