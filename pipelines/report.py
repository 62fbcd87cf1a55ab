"""DVC stage `report`: the model card (Markdown + self-contained HTML), from what the run recorded."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.report_stage import OPTIONAL, RECORDED, report_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    for name in RECORDED:
        p.add_argument(f"--{name}", type=Path, required=name not in OPTIONAL)
    p.add_argument("--out", type=Path, required=True, help="Markdown card")
    p.add_argument("--html-out", type=Path, help="self-contained HTML card")
    p.add_argument("--figures", type=Path, help="evaluate's figures folder (index.json + PNGs), optional")
    a = p.parse_args()
    run_stage(
        "report",
        lambda: report_stage(
            params_of(a), {n: getattr(a, n) for n in RECORDED}, a.out, a.html_out, a.figures
        ),
    )
