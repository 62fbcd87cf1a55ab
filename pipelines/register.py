"""DVC stage `register`: log the pyfunc model, register a version, set aliases and lineage."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.register_stage import register_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--preprocessor", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--evaluation", type=Path, required=True)
    p.add_argument("--gates", type=Path, required=True)
    p.add_argument("--mitigation", type=Path, help="evaluate's mitigation.json (its rule is served)")
    p.add_argument("--run-ref", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="raw data file, hashed for lineage")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    run_stage(
        "register",
        lambda: register_stage(
            params_of(a),
            a.model,
            a.preprocessor,
            a.test,
            a.evaluation,
            a.gates,
            a.run_ref,
            a.out,
            a.data,
            Path.cwd(),
            a.mitigation,
        ),
    )
