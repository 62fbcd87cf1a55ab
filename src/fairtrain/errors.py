"""Errors a user can act on. Stage scripts print them without a traceback and exit 1."""


class FairtrainError(Exception):
    """Base class: the message alone tells the user what is wrong and where."""


class ConfigError(FairtrainError):
    """``params.yaml`` is missing, malformed, or has invalid / unknown keys."""


class DataValidationError(FairtrainError):
    """The input table does not match its declared schema."""


class TrainingError(FairtrainError):
    """Training could not start or did not produce a usable checkpoint."""


class TrackingError(FairtrainError):
    """The MLflow run or registry is not in the state a stage expects."""
