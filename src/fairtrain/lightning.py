"""The one Lightning package fairtrain trains with: the one Ray Train's Lightning
integration picked.

Lightning ships twice: as ``pytorch_lightning`` (the declared dependency) and inside the
unified ``lightning`` package as ``lightning.pytorch``. Ray Train imports ``lightning.pytorch``
whenever that import succeeds and ``pytorch_lightning`` otherwise, and its strategy, cluster
environment and report callback are only accepted by a ``Trainer`` of the same package, with
a module and callbacks of that package too. GPU images often carry both packages, so
everything in fairtrain that touches Lightning imports it from here, where the choice is
made by exactly Ray's test (the first import alone); the other names then come from the
chosen package, and fail loudly if it lacks them rather than mixing the two.
"""

from __future__ import annotations

try:
    import lightning.pytorch as pl
except ModuleNotFoundError:
    import pytorch_lightning as pl
    from lightning_fabric.plugins.precision.amp import _optimizer_handles_unscaling
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.plugins.precision import MixedPrecision, Precision
    from pytorch_lightning.strategies import SingleDeviceStrategy, Strategy
    from pytorch_lightning.trainer.states import TrainerFn
else:
    from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy, Strategy
    from lightning.pytorch.trainer.states import TrainerFn

__all__ = [
    "EarlyStopping",
    "MixedPrecision",
    "Precision",
    "SingleDeviceStrategy",
    "Strategy",
    "TrainerFn",
    "_optimizer_handles_unscaling",
    "pl",
]
