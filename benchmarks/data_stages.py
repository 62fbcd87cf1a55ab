"""Scale benchmark of the data stages: validate + prepare + augment on Adult-shaped tables.

For each size it generates (once, cached in --work-dir) a CSV of that many rows by resampling
the real Adult rows with noise (``fairtrain.data.generators.adult_like``), then runs the three
stages in a fresh child process with the project's params.yaml (``dataset.path`` pointed at the
generated file) and reports the child's wall time per stage, rows/second and peak RSS.

    PYTHONPATH=src python benchmarks/data_stages.py --sizes 100000 1000000 5000000

Timings are machine dependent; peak RSS is what the README quotes. No test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATE_CHUNK = 500_000


def generate(rows: int, path: Path, seed: int = 0) -> float:
    """Write an Adult-shaped CSV of ``rows`` rows in chunks (bounded memory); return seconds."""
    import pandas as pd

    from fairtrain.data.generators import adult_like

    if path.exists():
        return 0.0
    started = time.perf_counter()
    source = pd.read_csv(ROOT / "data/raw/adult.csv.gz", dtype=str, keep_default_na=False)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        for index, start in enumerate(range(0, rows, GENERATE_CHUNK)):
            part = adult_like(source, min(GENERATE_CHUNK, rows - start), seed=seed + index)
            part.to_csv(handle, index=False, header=index == 0)
    tmp.rename(path)
    return time.perf_counter() - started


def child(raw: Path, work: Path) -> None:
    """Run validate → prepare → augment here; print timings and peak RSS as JSON."""
    import logging
    import resource

    import yaml

    from fairtrain.config import params_from_dict
    from fairtrain.stages.augment_stage import augment_stage
    from fairtrain.stages.prepare_stage import prepare_stage
    from fairtrain.stages.validate_stage import validate_stage

    logging.basicConfig(level=logging.ERROR)
    raw_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw_params["dataset"]["path"] = str(raw)
    params = params_from_dict(raw_params)
    timings = {}
    started = time.perf_counter()
    report = validate_stage(params, raw, work / "validated.parquet", work / "validation.json")
    timings["validate"] = time.perf_counter() - started
    started = time.perf_counter()
    prepare_stage(params, work / "validated.parquet", work / "prepared", work / "prepare.json")
    timings["prepare"] = time.perf_counter() - started
    started = time.perf_counter()
    augment_stage(params, work / "prepared/train.parquet", work / "augmented.parquet", work / "augment.json")
    timings["augment"] = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": report.rows, "seconds": timings, "peak_rss_mib": peak_kib / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/fairtrain-bench"))
    p.add_argument("--child", nargs=2, type=Path, metavar=("RAW", "WORK"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return
    a.work_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"{'rows':>10} {'validate s':>11} {'prepare s':>10} {'augment s':>10} {'total s':>8} "
        f"{'rows/s':>9} {'peak RSS MiB':>13}"
    )
    results = []
    for rows in a.sizes:
        raw = a.work_dir / f"adult_{rows}.csv"
        generate(rows, raw)
        work = a.work_dir / f"run_{rows}"
        work.mkdir(exist_ok=True)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(raw), str(work)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        total = sum(result["seconds"].values())
        s = result["seconds"]
        print(
            f"{rows:>10} {s['validate']:>11.1f} {s['prepare']:>10.1f} {s['augment']:>10.1f} {total:>8.1f} "
            f"{rows / total:>9.0f} {result['peak_rss_mib']:>13.0f}",
            flush=True,
        )
        results.append({**result, "total_seconds": total, "rows_per_second": rows / total})
    (a.work_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
