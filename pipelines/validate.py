"""DVC stage `validate`: raw file → schema check → typed Parquet + validation report."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.runner import run_stage
from fairtrain.stages.validate_stage import validate_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="validated Parquet")
    p.add_argument("--report", type=Path, required=True, help="validation report (JSON)")
    a = p.parse_args()
    run_stage("validate", lambda: validate_stage(params_of(a), a.raw, a.out, a.report))
