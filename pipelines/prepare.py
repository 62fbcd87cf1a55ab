"""DVC stage `prepare`: split train/val/test, fit preprocessing on train, write Parquet + JSON."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--validated", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True, help="split statistics (JSON metric)")
    p.add_argument("--reference", type=Path, help="training-split reference statistics for drift checks")
    a = p.parse_args()
    run_stage("prepare", lambda: prepare_stage(params_of(a), a.validated, a.out_dir, a.stats, a.reference))
