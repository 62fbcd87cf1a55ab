"""DVC stage `train`: Ray Train workers fit the model; one MLflow run records it."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.runner import run_stage
from fairtrain.stages.train_stage import train_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--preprocessor", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--run-ref", type=Path, required=True)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--history", type=Path, required=True)
    a = p.parse_args()
    run_stage(
        "train",
        lambda: train_stage(
            params_of(a), a.train, a.val, a.preprocessor, a.model_dir, a.run_ref, a.metrics, a.history
        ),
    )
