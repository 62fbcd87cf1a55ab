"""Deterministic table generators (seeded, nothing downloaded).

``loans``: a synthetic loan-approval table that exercises every declared column type (boolean,
datetime, a numeric sensitive feature audited through bins, missing markers, a dropped id).
Shipped as ``data/raw/loans.csv.gz``; its schema is ``examples/loans/params.yaml``.

``adult``: an Adult-shaped table of any size, made by resampling the real rows of
``data/raw/adult.csv.gz`` and jittering the numeric columns, for the scale benchmark.

    python -m fairtrain.data.generators loans --rows 6000 --out data/raw/loans.csv.gz
    python -m fairtrain.data.generators adult --rows 1000000 --out /tmp/adult_1m.csv.gz
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = ["north", "south", "east", "west", "central"]
EMPLOYMENT = ["salaried", "self-employed", "contract", "unemployed", "retired"]


def loans_table(rows: int = 6000, seed: int = 7) -> pd.DataFrame:
    """A synthetic loan-approval table; approval depends on income, debt, credit score and
    history, plus a deliberate penalty for the youngest applicants and for one gender, so the
    fairness audit has something to find."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(2.4, 9.0, rows) + 18, 18, 80).round()
    gender = rng.choice(["female", "male", "non-binary"], rows, p=[0.49, 0.48, 0.03])
    employment = rng.choice(EMPLOYMENT, rows, p=[0.55, 0.15, 0.12, 0.08, 0.10])
    employment = np.where((age > 64) & (rng.random(rows) < 0.7), "retired", employment)
    earning = np.where(employment == "unemployed", 0.3, 1.0)
    income = np.round(np.exp(rng.normal(10.6, 0.55, rows)) * earning, -2)
    credit = np.clip(rng.normal(680, 70, rows) + (age - 40) * 1.2, 300, 850).round()
    amount = np.round(np.clip(rng.lognormal(9.6, 0.7, rows), 1000, 250_000), -2)
    debt_ratio = np.clip(rng.beta(2.0, 5.0, rows) * 1.2, 0, 1).round(3)
    guarantor = rng.random(rows) < 0.22
    first_time = rng.random(rows) < np.where(age < 35, 0.6, 0.2)
    start = np.datetime64("2021-01-01")
    applied = start + rng.integers(0, 3 * 365, rows).astype("timedelta64[D]")
    delay = rng.integers(3_600, 60 * 86_400, rows).astype("timedelta64[s]")
    contacted = applied.astype("datetime64[s]") + delay
    region = rng.choice(REGIONS, rows)

    score = (
        1.3 * (np.log(income + 1) - 10.6)
        - 0.8 * np.log(amount / 15_000)
        + 0.012 * (credit - 680)
        - 2.2 * (debt_ratio - 0.34)
        + 0.6 * guarantor
        - 0.6 * (employment == "unemployed")
        - 0.45 * (age < 25)  # the unfairness to find
        - 0.25 * (gender == "female")
        + rng.logistic(0, 0.8, rows)
    )
    approved = np.where(score > 0.1, "approved", "denied")

    frame = pd.DataFrame(
        {
            "application_id": [f"A{seed:02d}-{i:06d}" for i in range(rows)],
            "applicant_age": age.astype(int).astype(str),
            "gender": gender,
            "region": region,
            "employment_type": employment,
            "annual_income": income.astype(int).astype(str),
            "loan_amount": amount.astype(int).astype(str),
            "credit_score": credit.astype(int).astype(str),
            "debt_to_income": np.char.mod("%.3f", debt_ratio),
            "has_guarantor": np.where(guarantor, "yes", "no"),
            "first_time_borrower": np.where(first_time, "True", "False"),
            "application_date": pd.to_datetime(applied).strftime("%Y-%m-%d"),
            "last_contact": pd.to_datetime(contacted).strftime("%Y-%m-%dT%H:%M:%S"),
            "decision": approved,
        }
    )
    # Realistic gaps: unknown credit scores and employment, written as "NA" / "unknown".
    frame.loc[rng.random(rows) < 0.04, "credit_score"] = "NA"
    frame.loc[rng.random(rows) < 0.02, "employment_type"] = "unknown"
    return frame


ADULT_NUMERIC_JITTER = {  # column → (noise std, lower bound, upper bound)
    "age": (1.5, 17, 90),
    "fnlwgt": (15_000, 10_000, 1_500_000),
    "education-num": (0.0, 1, 16),
    "capital-gain": (0.0, 0, 99_999),
    "capital-loss": (0.0, 0, 4_356),
    "hours-per-week": (2.0, 1, 99),
}


def adult_like(source: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows resampled (with replacement) from the real Adult rows, numeric columns
    jittered with rounded Gaussian noise inside their real range; missing markers kept."""
    rng = np.random.default_rng(seed)
    picked = source.iloc[rng.integers(0, len(source), rows)].reset_index(drop=True)
    for column, (std, low, high) in ADULT_NUMERIC_JITTER.items():
        if std == 0 or column not in picked:
            continue
        values = pd.to_numeric(picked[column], errors="coerce").to_numpy(dtype=np.float64)
        noisy = np.clip(np.round(values + rng.normal(0, std, rows)), low, high)
        picked[column] = noisy.astype(np.int64).astype(str)
    return picked


def write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """Write a gzipped CSV deterministically (no timestamp in the gzip header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(frame.to_csv(index=False).encode("utf-8"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["loans", "adult"])
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, required=True, help=".csv.gz, .csv or .parquet")
    p.add_argument("--source", type=Path, default=Path("data/raw/adult.csv.gz"), help="real Adult rows")
    a = p.parse_args(argv)
    if a.kind == "loans":
        frame = loans_table(a.rows, a.seed)
    else:
        source = pd.read_csv(a.source, dtype=str, keep_default_na=False)
        frame = adult_like(source, a.rows, a.seed)
    if a.out.name.endswith(".parquet"):
        frame.to_parquet(a.out, index=False)
    elif a.out.name.endswith(".gz"):
        write_csv_gz(frame, a.out)
    else:
        frame.to_csv(a.out, index=False)
    print(f"wrote {len(frame)} rows to {a.out}")


if __name__ == "__main__":
    main()
