"""DVC stage `augment`: rebalance the training split only."""

from pathlib import Path

from _common import params_of, parser
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.runner import run_stage

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    a = p.parse_args()
    run_stage("augment", lambda: augment_stage(params_of(a), a.train, a.out, a.report))
