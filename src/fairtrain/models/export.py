"""Trained weights as safetensors + architecture as JSON: loadable without unpickling."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fairtrain.io import atomic_directory, read_json, write_json
from fairtrain.models.mlp import TabularMLP

WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE_FILE = "architecture.json"


def state_dict_from_lightning_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``TabularMLP`` weights inside a Lightning checkpoint written by ``TabularClassifier``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def save_model(directory: str | Path, state_dict: dict[str, torch.Tensor], architecture: dict) -> None:
    """Write weights and architecture into ``directory``, replacing it as a whole."""
    with atomic_directory(directory) as staging:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(staging / WEIGHTS_FILE))
        write_json(staging / ARCHITECTURE_FILE, architecture)


def model_from_architecture(architecture: dict) -> TabularMLP:
    """An untrained network of the shape ``architecture`` (the JSON written by ``save_model``)
    describes; fields added later default to what older exports meant."""
    return TabularMLP(
        n_features=int(architecture["n_features"]),
        hidden_sizes=[int(h) for h in architecture["hidden_sizes"]],
        dropout=float(architecture.get("dropout", 0.0)),
        batch_norm=bool(architecture.get("batch_norm", False)),
        embeddings=[[int(v) for v in block] for block in architecture.get("embeddings", [])],
        numeric_embedding=architecture.get("numeric_embedding") or None,
    )


def load_model(directory: str | Path) -> TabularMLP:
    """Rebuild the network from its JSON architecture and safetensors weights, in eval mode."""
    directory = Path(directory)
    model = model_from_architecture(read_json(directory / ARCHITECTURE_FILE))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()
