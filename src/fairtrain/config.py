"""Typed parameters: ``params.yaml`` → validated pydantic objects.

Every section forbids unknown keys, so a typo such as ``train.max_epoch`` fails loudly
with the key's path instead of silently training with the default.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairtrain.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ColumnType(StrEnum):
    numeric = "numeric"
    categorical = "categorical"
    boolean = "boolean"
    datetime = "datetime"


DatetimePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour", "ordinal"]
DEFAULT_TRUE = ["true", "1", "yes", "y", "t"]
DEFAULT_FALSE = ["false", "0", "no", "n", "f"]
DEFAULT_DERIVE = ["year", "month", "dayofweek", "ordinal"]
# Suffix of the column that holds a binned sensitive feature's group labels in the splits.
GROUP_SUFFIX = "_group"


class ColumnSpec(_Section):
    """One declared column. ``columns: {age: numeric}`` is short for ``{age: {type: numeric}}``.

    numeric: optional ``min`` / ``max`` (inclusive). categorical: optional ``categories`` (the
    allowed set). boolean: ``true_values`` / ``false_values`` (compared case-insensitively).
    datetime: optional strptime ``format`` and the numeric features ``derive``d from it; an
    empty ``derive`` drops the column from the model.
    """

    type: ColumnType
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = Field(None, min_length=1)
    true_values: list[str] = Field(default_factory=lambda: list(DEFAULT_TRUE), min_length=1)
    false_values: list[str] = Field(default_factory=lambda: list(DEFAULT_FALSE), min_length=1)
    format: str | None = None
    derive: list[DatetimePart] = Field(default_factory=lambda: list(DEFAULT_DERIVE))

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> ColumnSpec:
        problems = []
        # Options that differ from their defaults (a dumped-and-reloaded spec sets them all).
        defaults = {"min": None, "max": None, "categories": None, "format": None}
        defaults |= {"true_values": DEFAULT_TRUE, "false_values": DEFAULT_FALSE}
        defaults |= {"derive": DEFAULT_DERIVE}
        given = {k for k in self.model_fields_set if k != "type" and getattr(self, k) != defaults[k]}
        allowed = {
            ColumnType.numeric: {"min", "max"},
            ColumnType.categorical: {"categories"},
            ColumnType.boolean: {"true_values", "false_values"},
            ColumnType.datetime: {"format", "derive"},
        }[self.type]
        foreign = sorted(given - allowed - {"type"})
        if foreign:
            problems.append(f"options {foreign} do not apply to a {self.type.value} column")
        if self.min is not None and self.max is not None and self.min > self.max:
            problems.append(f"min {self.min} is greater than max {self.max}")
        true = {v.lower() for v in self.true_values}
        if true & {v.lower() for v in self.false_values}:
            problems.append("true_values and false_values overlap")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class BinSpec(_Section):
    """Bins of a numeric sensitive feature: ``labels[i]`` covers ``[edges[i], edges[i+1])``
    (the last bin also includes its upper edge)."""

    edges: list[float] = Field(min_length=2)
    labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _edges_and_labels_match(self) -> BinSpec:
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must increase strictly, got {self.edges}")
        if len(self.labels) != len(self.edges) - 1:
            raise ValueError(
                f"{len(self.edges)} edges make {len(self.edges) - 1} bins "
                f"but {len(self.labels)} labels are given"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"bin labels must be distinct, got {self.labels}")
        return self


class DatasetConfig(_Section):
    path: str
    label: str
    positive_class: str
    label_values: list[str] = Field(min_length=2)
    sensitive_features: list[str] = Field(min_length=1)
    # Numeric sensitive features are audited by these bins; the group labels are written to
    # the column ``<feature>_group`` of every split (see ``group_column``).
    bins: dict[str, BinSpec] = Field(default_factory=dict)
    missing_values: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(min_length=2)

    @field_validator("columns", mode="before")
    @classmethod
    def _short_column_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> DatasetConfig:
        declared = set(self.columns)
        problems = []
        for key, names in (
            ("label", [self.label]),
            ("sensitive_features", self.sensitive_features),
            ("drop", self.drop),
            ("bins", list(self.bins)),
        ):
            unknown = [n for n in names if n not in declared]
            if unknown:
                problems.append(f"{key} names columns not declared in dataset.columns: {unknown}")
        if len(self.label_values) != 2:
            problems.append(
                f"only binary classification is supported: label_values must list exactly two values, "
                f"got {len(self.label_values)}: {self.label_values}"
            )
        if self.label in self.columns and self.columns[self.label].type != ColumnType.categorical:
            problems.append(f"label column {self.label!r} must be declared categorical")
        if len(set(self.label_values)) != len(self.label_values):
            problems.append(f"label_values must be two distinct values, got {self.label_values}")
        if self.positive_class not in self.label_values:
            problems.append(
                f"positive_class {self.positive_class!r} is not one of label_values {self.label_values}"
            )
        for name in self.sensitive_features:
            kind = self.columns[name].type if name in self.columns else None
            if kind == ColumnType.numeric and name not in self.bins:
                problems.append(
                    f"sensitive feature {name!r} is numeric: declare its bins under dataset.bins.{name} "
                    "(edges and labels)"
                )
            if kind == ColumnType.datetime:
                problems.append(f"sensitive feature {name!r} may not be a datetime column")
        for name in self.bins:
            if name not in self.sensitive_features:
                problems.append(f"dataset.bins.{name}: bins are only for sensitive features")
            elif name in self.columns and self.columns[name].type != ColumnType.numeric:
                problems.append(f"dataset.bins.{name}: only numeric sensitive features are binned")
        clashes = [self.group_column(n) for n in self.bins if self.group_column(n) in declared]
        if clashes:
            problems.append(f"group columns {clashes} would overwrite declared columns; rename them")
        if self.label in self.drop or set(self.sensitive_features) & set(self.drop):
            problems.append("drop may not name the label or a sensitive feature")
        if not self.feature_columns:
            problems.append("no feature columns remain after removing the label and dropped columns")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def column_types(self) -> dict[str, ColumnType]:
        return {name: spec.type for name, spec in self.columns.items()}

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs: declared columns minus the label, dropped columns and datetimes that
        derive nothing, in file order."""
        return [
            c
            for c, spec in self.columns.items()
            if c != self.label
            and c not in self.drop
            and not (spec.type == ColumnType.datetime and not spec.derive)
        ]

    def _features_of(self, kind: ColumnType) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].type == kind]

    @property
    def numeric_features(self) -> list[str]:
        return self._features_of(ColumnType.numeric)

    @property
    def categorical_features(self) -> list[str]:
        return self._features_of(ColumnType.categorical)

    @property
    def boolean_features(self) -> list[str]:
        return self._features_of(ColumnType.boolean)

    @property
    def datetime_features(self) -> list[str]:
        return self._features_of(ColumnType.datetime)

    @staticmethod
    def group_column(feature: str) -> str:
        """The split column holding a binned sensitive feature's group labels."""
        return f"{feature}{GROUP_SUFFIX}"

    @property
    def group_columns(self) -> list[str]:
        """Per sensitive feature, the column of the splits that holds its group labels: the
        feature itself, or ``<feature>_group`` when the feature is numeric and binned. This is
        what splits, augmentation and the fairness audit group by."""
        return [self.group_column(f) if f in self.bins else f for f in self.sensitive_features]

    @property
    def negative_class(self) -> str:
        return next(v for v in self.label_values if v != self.positive_class)


class ValidateConfig(_Section):
    # Share of missing values in a column above which validation warns (never fails).
    missing_warning_share: float = Field(0.05, ge=0, le=1)
    # A sensitive group with fewer rows than this cannot be audited: error or warning.
    min_group_rows: int = Field(20, ge=1)
    small_group: Literal["error", "warn"] = "error"
    # Rows read and checked at a time: bounds memory on large files.
    chunk_rows: int = Field(500_000, ge=1)


class PrepareConfig(_Section):
    seed: int = 42
    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.1, gt=0, lt=1)
    log_transform: list[str] = Field(default_factory=list)
    min_category_count: int = Field(5, ge=1)
    # A sensitive group missing from train, val or test after splitting: error or warning.
    unsplittable_group: Literal["error", "warn"] = "error"

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> PrepareConfig:
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must leave at least 10% of rows for training")
        return self


class AugmentConfig(_Section):
    """Training-split augmentation, applied in this order: group-aware resampling, class
    rebalancing, Gaussian noise."""

    seed: int = 42
    # Class rebalancing up to minority/majority = minority_ratio (0 = off): duplicate random
    # minority rows, or synthesise them by SMOTE-NC interpolation.
    rebalance: Literal["random", "smote"] = "random"
    minority_ratio: float = Field(0.0, ge=0, le=1)
    smote_neighbors: int = Field(5, ge=1)
    # Group-aware resampling over one sensitive feature (default: the first): "label_rate"
    # adds rows so every group has the overall positive rate, "count" so every group has as
    # many rows as the largest one.
    group_balance: Literal["none", "label_rate", "count"] = "none"
    group_feature: str | None = None
    # Gaussian noise on the non-sensitive numeric features of every training row: noise_std x
    # column std (a sensitive feature keeps its values: the audit groups by them).
    noise_std: float = Field(0.0, ge=0)


class TrainConfig(_Section):
    seed: int = 42
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # Lightning precision; 16-mixed needs use_gpu (refused at load otherwise), bf16-mixed
    # also runs on CPU.
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    # Lightning's deterministic mode: bit-identical reruns with the same data, params and
    # worker count. On GPUs it also pins cuBLAS's workspace and picks deterministic kernels;
    # false trades that for speed (see docs/distributed-training.md).
    deterministic: bool = True
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)  # per worker
    # Optimiser steps per Lightning step (each on its own minibatch of batch_size rows): the
    # same updates as 1, with Lightning's per-step overhead paid once per group.
    steps_per_execution: int = Field(32, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only (Nesterov when > 0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["none", "cosine", "onecycle", "plateau"] = "none"
    weight_decay: float = Field(1e-4, ge=0)
    gradient_clip_val: float = Field(0.0, ge=0)  # max gradient norm; 0 turns clipping off
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_norm: bool = False
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64], min_length=1)
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

    @model_validator(mode="after")
    def _float16_needs_gpus(self) -> TrainConfig:
        # Refused here, not when training starts, so a search space holding it fails before
        # its first trial (search.check_space validates every combination through this class).
        if self.precision == "16-mixed" and not self.use_gpu:
            raise ValueError(
                "precision 16-mixed needs GPUs (float16 autocast) but use_gpu is false; use "
                "precision 32-true (or bf16-mixed) on CPU, or set use_gpu: true on a GPU cluster"
            )
        return self


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


# Metrics the champion non-regression gate can compare per group, and whether higher is better.
GROUP_GATE_METRICS = {
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "log_loss": False,
    "brier": False,
}


class NonRegressionConfig(_Section):
    """Per-group comparison with the registry's current champion, rescored on this test split."""

    enabled: bool = True
    metric: Literal["roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier"] = (
        "roc_auc"
    )


class GatesConfig(_Section):
    min_roc_auc: float = Field(0.0, ge=0, le=1)
    max_demographic_parity_difference: float = Field(1.0, ge=0, le=1)
    max_equalized_odds_difference: float = Field(1.0, ge=0, le=1)
    max_expected_calibration_error: float = Field(1.0, ge=0, le=1)
    champion_non_regression: NonRegressionConfig = Field(default_factory=NonRegressionConfig)


class MitigationConfig(_Section):
    """Fairlearn ThresholdOptimizer fitted on the validation split over the trained model."""

    enabled: bool = False
    constraint: Literal["equalized_odds", "demographic_parity"] = "equalized_odds"
    sensitive_feature: str | None = None  # None: the first of dataset.sensitive_features
    objective: Literal["accuracy_score", "balanced_accuracy_score"] = "accuracy_score"
    grid_size: int = Field(1000, ge=10)
    seed: int = 42  # the randomised choice between the two thresholds of a group


class AttributionConfig(_Section):
    """Captum attributions and their self-checks."""

    # train_mean: the mean transformed training row; zeros: zeros in standardised space;
    # sampled: each explained row gets a randomly drawn training row as its baseline.
    baseline: Literal["train_mean", "zeros", "sampled"] = "train_mean"
    convergence_tolerance: float = Field(0.01, gt=0)  # |completeness error| per row
    max_share_over_tolerance: float = Field(0.05, ge=0, le=1)
    bootstrap_resamples: int = Field(200, ge=0)  # over explained rows: importance CIs, rank stability
    second_method: Literal["feature_ablation", "gradient_shap"] = "feature_ablation"


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
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    mitigation: MitigationConfig = Field(default_factory=MitigationConfig)

    @model_validator(mode="after")
    def _target_rules_need_a_target(self) -> EvaluateConfig:
        if self.threshold_rule.startswith("target_") and self.threshold_target is None:
            raise ValueError(f"threshold_rule {self.threshold_rule!r} needs threshold_target")
        if not self.threshold_rule.startswith("target_") and self.threshold_target is not None:
            # Refused rather than ignored: a target the rule does not use is a misread setting.
            raise ValueError(
                f"threshold_target {self.threshold_target} is only used by the target_precision and "
                f"target_recall rules, not by threshold_rule {self.threshold_rule!r}: "
                "remove it or change the rule"
            )
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


class DriftReferenceConfig(_Section):
    """How the prepare stage summarises the training split for later drift checks."""

    numeric_bins: int = Field(10, ge=2, le=100)
    # KS needs the reference distribution itself: a seeded random sample of each numeric
    # column's training values, at most this many (the whole column when smaller).
    sample_size: int = Field(5000, ge=100)
    seed: int = 42


class DriftConfig(_Section):
    """Thresholds of the drift check (``fairtrain drift``); a value above its threshold drifts."""

    reference: DriftReferenceConfig = Field(default_factory=DriftReferenceConfig)
    psi_threshold: float = Field(0.2, gt=0)
    ks_threshold: float = Field(0.1, gt=0, le=1)
    label_rate_threshold: float = Field(0.05, gt=0, le=1)
    group_rate_threshold: float = Field(0.1, gt=0, le=1)
    # Batch groups with fewer labelled rows than this are reported, not checked.
    min_group_size: int = Field(200, ge=1)
    # Retraining is advised when at least this many checks drift.
    min_drifted_checks: int = Field(1, ge=1)


class Params(_Section):
    dataset: DatasetConfig
    # Attribute `validation` (BaseModel has a `validate` method); the key stays `validate`.
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
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
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _cross_section_references(self) -> Params:
        unknown = [c for c in self.prepare.log_transform if c not in self.dataset.numeric_features]
        if unknown:
            raise ValueError(f"prepare.log_transform names columns that are not numeric features: {unknown}")
        feature = self.augment.group_feature
        if feature is not None and feature not in self.dataset.sensitive_features:
            raise ValueError(f"augment.group_feature {feature!r} is not one of dataset.sensitive_features")
        mitigated = self.evaluate.mitigation.sensitive_feature
        if mitigated is not None and mitigated not in self.dataset.sensitive_features:
            raise ValueError(
                f"evaluate.mitigation.sensitive_feature {mitigated!r} is not one of "
                f"dataset.sensitive_features {self.dataset.sensitive_features}"
            )
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
