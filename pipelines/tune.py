"""Hyperparameter search (not a DVC stage): Ray Tune over params.yaml `tune.space` with ASHA,
each trial the train stage's training function and an MLflow child run of one parent run.

    python pipelines/tune.py                  # search; print the best train keys
    python pipelines/tune.py --write-params   # ...and write them into params.yaml's train section
"""

import json
import logging
from pathlib import Path

from _common import params_of, parser
from fairtrain.search import write_back_best
from fairtrain.stages.runner import run_stage
from fairtrain.stages.tune_stage import tune_stage

log = logging.getLogger("fairtrain.tune")


def main(a) -> None:
    summary = tune_stage(params_of(a), a.train, a.val, a.preprocessor, source=str(a.params))
    print(json.dumps(summary, indent=2, default=str))
    if a.write_params:
        write_back_best(a.params, summary)
        log.info("wrote %s into %s", summary["best_overrides"], a.params)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--train", type=Path, default=Path("data/augmented/train.parquet"))
    p.add_argument("--val", type=Path, default=Path("data/prepared/val.parquet"))
    p.add_argument("--preprocessor", type=Path, default=Path("data/prepared/preprocessor.json"))
    p.add_argument("--write-params", action="store_true", help="write the best train keys into --params")
    a = p.parse_args()
    run_stage("tune", lambda: main(a))
