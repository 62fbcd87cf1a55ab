"""DVC stage `evaluate`: test metrics, Fairlearn audit, Captum attributions, gates."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.evaluate_stage import OUTPUTS, evaluate_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--train", type=Path, required=True, help="training split (baselines are fitted on it)")
    p.add_argument("--val", type=Path, required=True, help="validation split (the threshold is chosen on it)")
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--preprocessor", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--run-ref", type=Path, required=True)
    for name in OUTPUTS:
        p.add_argument(f"--{name}", type=Path, required=True)
    a = p.parse_args()
    outputs = {name: getattr(a, name) for name in OUTPUTS}
    run_stage(
        "evaluate",
        lambda: evaluate_stage(
            params_of(a), a.train, a.val, a.test, a.preprocessor, a.model, a.run_ref, outputs
        ),
    )
