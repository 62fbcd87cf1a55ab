"""Typed parameters: ``params.yaml`` → validated pydantic objects.

Every section forbids unknown keys, so a typo such as ``train.max_epoch`` fails loudly
with the key's path instead of silently training with the default.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairtrain.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ColumnType(StrEnum):
    numeric = "numeric"
    categorical = "categorical"


class DatasetConfig(_Section):
    path: str
    label: str
    positive_class: str
    label_values: list[str] = Field(min_length=2, max_length=2)
    sensitive_features: list[str] = Field(min_length=1)
    missing_values: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnType] = Field(min_length=2)

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> DatasetConfig:
        declared = set(self.columns)
        problems = []
        for key, names in (
            ("label", [self.label]),
            ("sensitive_features", self.sensitive_features),
            ("drop", self.drop),
        ):
            unknown = [n for n in names if n not in declared]
            if unknown:
                problems.append(f"{key} names columns not declared in dataset.columns: {unknown}")
        if self.label in self.columns and self.columns[self.label] != ColumnType.categorical:
            problems.append(f"label column {self.label!r} must be declared categorical")
        if len(set(self.label_values)) != len(self.label_values):
            problems.append(f"label_values must be two distinct values, got {self.label_values}")
        if self.positive_class not in self.label_values:
            problems.append(
                f"positive_class {self.positive_class!r} is not one of label_values {self.label_values}"
            )
        for name in self.sensitive_features:
            if name in self.columns and self.columns[name] != ColumnType.categorical:
                problems.append(f"sensitive feature {name!r} must be declared categorical")
        if self.label in self.drop or set(self.sensitive_features) & set(self.drop):
            problems.append("drop may not name the label or a sensitive feature")
        if not self.feature_columns:
            problems.append("no feature columns remain after removing the label and dropped columns")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs: declared columns minus the label and dropped columns, in file order."""
        return [c for c in self.columns if c != self.label and c not in self.drop]

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c] == ColumnType.numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c] == ColumnType.categorical]

    @property
    def negative_class(self) -> str:
        return next(v for v in self.label_values if v != self.positive_class)


class PrepareConfig(_Section):
    seed: int = 42
    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.1, gt=0, lt=1)
    log_transform: list[str] = Field(default_factory=list)
    min_category_count: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> PrepareConfig:
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must leave at least 10% of rows for training")
        return self


class AugmentConfig(_Section):
    seed: int = 42
    minority_ratio: float = Field(0.0, ge=0, le=1)


class TrainConfig(_Section):
    seed: int = 42
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # Lightning precision; the mixed ones need GPUs (the stage fails fast on CPU).
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)  # per worker
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only (Nesterov when > 0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["none", "cosine", "onecycle", "plateau"] = "none"
    weight_decay: float = Field(1e-4, ge=0)
    gradient_clip_val: float = Field(0.0, ge=0)  # max gradient norm; 0 turns clipping off
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_norm: bool = False
    hidden_sizes: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    # Categoricals with more than two values go through a learned embedding whose width
    # follows their cardinality (min(embedding_max_dim, round(1.6 * n**0.56))).
    embeddings: bool = False
    embedding_max_dim: int = Field(16, ge=1)
    # Numeric columns through learned periodic embeddings (sin/cos of learned frequencies, then
    # a per-column Linear + ReLU) instead of raw: `numeric_embedding_dim` outputs per column.
    numeric_embedding: Literal["none", "periodic"] = "none"
    numeric_embedding_dim: int = Field(8, ge=1)
    numeric_embedding_frequencies: int = Field(16, ge=1)
    numeric_embedding_sigma: float = Field(0.5, gt=0)  # std of the initial frequencies
    class_weight: Literal["none", "balanced"] = "none"  # balanced: BCE pos_weight = negatives/positives
    early_stopping_patience: int = Field(3, ge=1)
    # Fault tolerance: how often Ray may restart the worker group after a worker dies, and how
    # many per-epoch checkpoints to keep (the best by val_loss and the latest are among them).
    max_failures: int = Field(2, ge=0)
    checkpoints_to_keep: int = Field(2, ge=1)


class TuneConfig(_Section):
    """Hyperparameter search (``pipelines/tune.py``, not a DVC stage): a grid over train keys,
    trials stopped early by ASHA on val_loss."""

    space: dict[str, list[Any]] = Field(default_factory=dict)  # train key -> values to try
    num_samples: int = Field(1, ge=1)  # repeats of the grid
    max_epochs: int = Field(20, ge=1)
    grace_period: int = Field(2, ge=1)  # epochs a trial runs before ASHA may stop it
    reduction_factor: int = Field(3, ge=2)
    workers_per_trial: int = Field(1, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _space_names_train_keys(self) -> TuneConfig:
        fixed = {"num_workers", "max_epochs", "use_gpu"}
        unknown = [k for k in self.space if k not in TrainConfig.model_fields or k in fixed]
        if unknown:
            raise ValueError(f"space names keys that are not tunable train keys: {unknown}")
        empty = [k for k, values in self.space.items() if not values]
        if empty:
            raise ValueError(f"space gives no values for {empty}")
        return self


class GatesConfig(_Section):
    min_roc_auc: float = Field(0.0, ge=0, le=1)
    max_demographic_parity_difference: float = Field(1.0, ge=0, le=1)
    max_equalized_odds_difference: float = Field(1.0, ge=0, le=1)


class EvaluateConfig(_Section):
    # How the decision threshold is chosen on the validation split; `threshold` is the value
    # for "fixed", `threshold_target` the precision or recall to reach for "target_*".
    threshold_rule: Literal["fixed", "max_f1", "target_precision", "target_recall"] = "fixed"
    threshold: float = Field(0.5, gt=0, lt=1)
    threshold_target: float | None = Field(None, gt=0, le=1)
    bootstrap_resamples: int = Field(1000, ge=0)
    confidence_level: float = Field(0.95, gt=0, lt=1)
    baselines: bool = True
    attribution_samples: int = Field(1000, ge=1)
    ig_steps: int = Field(50, ge=2)
    ig_internal_batch_size: int = Field(4096, ge=1)
    min_group_size: int = Field(100, ge=1)
    seed: int = 42
    gates: GatesConfig = Field(default_factory=GatesConfig)

    @model_validator(mode="after")
    def _target_rules_need_a_target(self) -> EvaluateConfig:
        if self.threshold_rule.startswith("target_") and self.threshold_target is None:
            raise ValueError(f"threshold_rule {self.threshold_rule!r} needs threshold_target")
        return self


# Test metrics a champion can be chosen by, and whether higher is better.
PRIMARY_METRICS = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "log_loss": False,
}


class RegisterConfig(_Section):
    model_name: str = Field(min_length=1)
    primary_metric: Literal["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"] = "roc_auc"
    promotion_margin: float = Field(0.0, ge=0)


class ReportConfig(_Section):
    model_name: str
    intended_use: str
    out_of_scope_uses: list[str] = Field(default_factory=list)


class TrackingConfig(_Section):
    experiment: str = Field("fairtrain", min_length=1)


class Params(_Section):
    dataset: DatasetConfig
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    # "register" would shadow ABCMeta.register on a pydantic model, so the attribute is
    # `registry` while the key in params.yaml stays `register`.
    registry: RegisterConfig = Field(alias="register")
    report: ReportConfig
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _cross_section_references(self) -> Params:
        unknown = [c for c in self.prepare.log_transform if c not in self.dataset.numeric_features]
        if unknown:
            raise ValueError(f"prepare.log_transform names columns that are not numeric features: {unknown}")
        return self


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid parameters ({error.error_count()} problem(s))"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against params.yaml)"
        shown = repr(item.get("input"))
        # A whole-section validator's input is the entire section: too long to be useful.
        skip = item["type"] in ("missing", "extra_forbidden") or len(shown) > 80
        value = "" if skip else f" (got {shown})"
        lines.append(f"  {path}: {message}{value}")
    return "\n".join(lines)


def params_from_dict(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed params mapping; errors name every offending key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, error)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return params_from_dict(raw, source=str(path))
