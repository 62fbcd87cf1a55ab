"""Hyperparameter search (not a DVC stage): Ray Tune over params.yaml `tune.space` with ASHA,
each trial the train stage's training function and an MLflow child run of one parent run.

    python pipelines/tune.py                  # search; print the best train keys
    python pipelines/tune.py --write-params   # ...and write them into params.yaml's train section
"""

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from _common import params_of, parser
from fairtrain import tracking
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.io import read_json
from fairtrain.search import run_search, write_back
from fairtrain.stages.runner import run_stage
from fairtrain.stages.train_stage import features_and_target, model_options
from fairtrain.training.ray_runtime import ray_session
from fairtrain.training.trainer import TrainingData, configured_storage

log = logging.getLogger("fairtrain.tune")


def main(a) -> None:
    params = params_of(a)
    preprocessor = Preprocessor.from_dict(read_json(a.preprocessor))
    x_train, y_train = features_and_target(pd.read_parquet(a.train), preprocessor, params)
    x_val, y_val = features_and_target(pd.read_parquet(a.val), preprocessor, params)
    uri = tracking.resolve_tracking_uri()
    experiment_id = tracking.configure(params.tracking.experiment, uri)
    storage = configured_storage() or Path(tempfile.mkdtemp(prefix="fairtrain-tune-"))
    with mlflow.start_run(run_name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}") as parent, ray_session():
        mlflow.set_tag("fairtrain.stage", "tune")
        mlflow.log_dict(params.tune.model_dump(mode="json"), "tune/space.json")
        summary = run_search(
            params,
            TrainingData(x_train, y_train, x_val, y_val),
            model_options(params, preprocessor, y_train),
            experiment_id,
            uri,
            storage,
        )
        summary["parent_run_id"] = parent.info.run_id
    print(json.dumps(summary, indent=2, default=str))
    if a.write_params:
        write_back(a.params, summary["best_overrides"])
        log.info("wrote %s into %s", summary["best_overrides"], a.params)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--train", type=Path, default=Path("data/augmented/train.parquet"))
    p.add_argument("--val", type=Path, default=Path("data/prepared/val.parquet"))
    p.add_argument("--preprocessor", type=Path, default=Path("data/prepared/preprocessor.json"))
    p.add_argument("--write-params", action="store_true", help="write the best train keys into --params")
    a = p.parse_args()
    run_stage("tune", lambda: main(a))
