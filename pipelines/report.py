"""DVC stage `report`: the model card, from what the run recorded."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.report_stage import RECORDED, report_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    for name in RECORDED:
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    run_stage("report", lambda: report_stage(params_of(a), {n: getattr(a, n) for n in RECORDED}, a.out))
