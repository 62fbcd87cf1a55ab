"""Argument parsing shared by the stage scripts (kept out of the library: it is CLI glue)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairtrain.config import Params, load_params


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    return p


def params_of(args: argparse.Namespace) -> Params:
    return load_params(args.params)
