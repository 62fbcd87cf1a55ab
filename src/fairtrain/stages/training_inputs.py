"""What training reads besides its params: the prepared splits and fitted preprocessor
(checked, with errors naming the file and the stage that writes it), the model's input
matrices, and the options the network and loss derive from them (``ModelInputs``), shared by
the train stage and every trial of a search."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fairtrain.config import Params, TrainConfig
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.errors import FairtrainError, TrainingError
from fairtrain.io import read_json
from fairtrain.models.mlp import embedding_blocks


@dataclass(frozen=True)
class ModelInputs:
    """What the network and loss need beyond the train keys: the preprocessor's feature
    layout and the training labels' class counts. Small and picklable, so a search hands it to
    every trial, which derives its own model options from its own train keys (``options``)."""

    feature_groups: dict[str, list[int]]
    numeric: list[str]
    categorical: list[str]
    rows: int
    positives: int

    @classmethod
    def of(cls, preprocessor: Preprocessor, y_train: np.ndarray) -> ModelInputs:
        return cls(
            feature_groups=preprocessor.feature_groups,
            numeric=list(preprocessor.numeric),
            categorical=list(preprocessor.categorical),
            rows=len(y_train),
            positives=int(np.sum(y_train)),
        )

    def options(self, train: TrainConfig) -> dict:
        """Embedding blocks from the one-hot groups, the periodic numeric embedding's spec and
        the positive-class weight, each as ``train`` asks for it."""
        options: dict[str, object] = {
            "embedding_blocks": [],
            "numeric_embedding_spec": None,
            "pos_weight": None,
        }
        if train.numeric_embedding == "periodic":
            options["numeric_embedding_spec"] = {
                "indices": [self.feature_groups[column][0] for column in self.numeric],
                "frequencies": train.numeric_embedding_frequencies,
                "dim": train.numeric_embedding_dim,
                "sigma": train.numeric_embedding_sigma,
            }
        if train.embeddings:
            options["embedding_blocks"] = embedding_blocks(
                self.feature_groups, list(self.categorical), train.embedding_max_dim
            )
        if train.class_weight == "balanced":
            if self.positives == 0 or self.positives == self.rows:
                raise TrainingError(
                    "train.class_weight is balanced but the training labels hold one class only"
                )
            options["pos_weight"] = (self.rows - self.positives) / self.positives
        return options


def model_options(params: Params, preprocessor: Preprocessor, y_train: np.ndarray) -> dict:
    """What the network and loss need beyond the train params (``ModelInputs.options``)."""
    return ModelInputs.of(preprocessor, y_train).options(params.train)


# Which stage writes each input of the train stage (and of the search), for the error when
# one is missing or unreadable.
_WRITERS = {
    "train": ("training split", "augment"),
    "val": ("validation split", "prepare"),
    "preprocessor": ("fitted preprocessor", "prepare"),
}


def _input_error(path: Path, role: str, stage: str, problem: str) -> FairtrainError:
    what, writer = _WRITERS[role]
    return FairtrainError(
        f"{stage}: the {what} {path} {problem}; it is written by the {writer} stage "
        f"(`dvc repro {writer}`), or pass another file with --{role}"
    )


def read_training_inputs(
    train_path: Path, val_path: Path, preprocessor_path: Path, stage: str = "train"
) -> tuple[Preprocessor, pd.DataFrame, pd.DataFrame]:
    """The fitted preprocessor and the training and validation splits, checked before anything
    else happens: a missing or unreadable file is a ``FairtrainError`` naming it and the stage
    that writes it (``stage`` names the reader), instead of pyarrow's or json's traceback."""
    paths = {"train": Path(train_path), "val": Path(val_path), "preprocessor": Path(preprocessor_path)}
    for role, path in paths.items():
        if not path.is_file():
            raise _input_error(path, role, stage, "does not exist")
    try:
        preprocessor = Preprocessor.from_dict(read_json(paths["preprocessor"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        problem = f"is not a readable preprocessor ({type(error).__name__}: {error})"
        raise _input_error(paths["preprocessor"], "preprocessor", stage, problem) from None
    frames = []
    for role in ("train", "val"):
        try:
            frames.append(pd.read_parquet(paths[role]))
        except (OSError, ValueError, pa.ArrowException) as error:
            problem = f"is not a readable Parquet file ({error})"
            raise _input_error(paths[role], role, stage, problem) from None
    return preprocessor, frames[0], frames[1]


def features_and_target(
    frame: pd.DataFrame, preprocessor: Preprocessor, params: Params
) -> tuple[np.ndarray, np.ndarray]:
    return preprocessor.transform(frame), target_vector(frame, params.dataset)
