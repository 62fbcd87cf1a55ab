"""fairtrain: a reproducible, distributed, audited training pipeline."""

__version__ = "0.1.0"
