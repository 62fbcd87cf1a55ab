"""fairtrain.data.split.split_dataset: seeded, stratified, disjoint train/val/test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairtrain.config import PrepareConfig
from fairtrain.data.split import content_sha256, split_dataset
from fairtrain.errors import DataValidationError


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 200
    labels = np.array(["pos"] * 60 + ["neg"] * 140)
    rng.shuffle(labels)
    return pd.DataFrame({"row_id": np.arange(n), "x": rng.normal(size=n), "y": labels})


def _ids(splits: dict[str, pd.DataFrame]) -> dict[str, list[int]]:
    return {name: sorted(part["row_id"].tolist()) for name, part in splits.items()}


def test_sizes_match_the_fractions(table):
    splits = split_dataset(table, "y", PrepareConfig(seed=1, test_size=0.2, val_size=0.1))
    assert set(splits) == {"train", "val", "test"}
    assert len(splits["test"]) == 40  # 0.2 of 200
    assert len(splits["val"]) == 20  # 0.1 of the whole table, not of the remainder
    assert len(splits["train"]) == 140


def test_splits_are_disjoint_and_cover_every_row(table):
    splits = split_dataset(table, "y", PrepareConfig(seed=1))
    ids = _ids(splits)
    union = ids["train"] + ids["val"] + ids["test"]
    assert sorted(union) == list(range(len(table)))  # no row lost, none duplicated
    assert set(ids["train"]).isdisjoint(ids["val"])
    assert set(ids["train"]).isdisjoint(ids["test"])
    assert set(ids["val"]).isdisjoint(ids["test"])


def test_rows_are_kept_intact_and_reindexed(table):
    splits = split_dataset(table, "y", PrepareConfig(seed=1))
    for part in splits.values():
        assert list(part.columns) == list(table.columns)
        assert part.index.equals(pd.RangeIndex(len(part)))
        merged = part.merge(table, on="row_id", suffixes=("", "_orig"))
        assert (merged["x"] == merged["x_orig"]).all()
        assert (merged["y"] == merged["y_orig"]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_balance_is_preserved(table, seed):
    overall = (table["y"] == "pos").mean()  # 0.3
    splits = split_dataset(table, "y", PrepareConfig(seed=seed, test_size=0.2, val_size=0.1))
    for name, part in splits.items():
        rate = (part["y"] == "pos").mean()
        # stratified: off by at most one row's worth
        assert abs(rate - overall) <= 1 / len(part) + 1e-9, (name, rate)


def test_same_seed_gives_identical_splits(table):
    first = split_dataset(table, "y", PrepareConfig(seed=5))
    second = split_dataset(table.copy(), "y", PrepareConfig(seed=5))
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])


def test_different_seed_gives_different_splits(table):
    first = _ids(split_dataset(table, "y", PrepareConfig(seed=5)))
    second = _ids(split_dataset(table, "y", PrepareConfig(seed=6)))
    assert first["test"] != second["test"]
    assert first["val"] != second["val"]


def _grouped_table(n: int = 300, rare_rows: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    group = np.array(["a"] * (n - rare_rows) + ["rare"] * rare_rows)
    return pd.DataFrame(
        {"row_id": np.arange(n), "g": group, "x": rng.normal(size=n), "y": rng.choice(["p", "n"], n)}
    )


def test_a_small_group_lands_in_every_split():
    splits = split_dataset(_grouped_table(), "y", PrepareConfig(seed=0), ["g"])
    assert all("rare" in set(part["g"]) for part in splits.values())


@pytest.mark.parametrize("policy", ["error", "warn"])
def test_a_group_that_cannot_be_split_is_an_error_or_a_warning(policy, caplog):
    table = _grouped_table(rare_rows=2)  # two rows cannot cover three splits
    params = PrepareConfig(seed=0, unsplittable_group=policy)
    if policy == "error":
        with pytest.raises(DataValidationError, match=r"g: group\(s\) \['rare'\] have no rows in the"):
            split_dataset(table, "y", params, ["g"])
    else:
        splits = split_dataset(table, "y", params, ["g"])
        assert sum(len(p) for p in splits.values()) == len(table)
        assert "'rare'" in caplog.text and "unsplittable_group" in caplog.text


def test_content_hash_depends_on_rows_and_order(table):
    assert content_sha256(table) == content_sha256(table.copy())
    assert content_sha256(table) != content_sha256(table.iloc[::-1].reset_index(drop=True))
    changed = table.copy()
    changed.loc[5, "x"] += 1e-9
    assert content_sha256(table) != content_sha256(changed)


def test_same_input_gives_byte_identical_split_files(tmp_path, params, cleaned_train):
    from fairtrain.stages.prepare_stage import prepare_stage

    validated = tmp_path / "validated.parquet"
    pd.concat([cleaned_train] * 5, ignore_index=True).to_parquet(validated, index=False)
    first = prepare_stage(params, validated, tmp_path / "a", tmp_path / "a.json")
    second = prepare_stage(params, validated, tmp_path / "b", tmp_path / "b.json")
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (
            tmp_path / "b" / f"{name}.parquet"
        ).read_bytes()
    assert first["content_sha256"] == second["content_sha256"]
    assert first["file_sha256"] == second["file_sha256"]
    assert set(first["content_sha256"]) == {"input", "train", "val", "test"}


def _one_rare_positive(n: int = 300) -> pd.DataFrame:
    """Group "rare": 24 negatives (a real stratum) and one positive, whose label × group cell
    falls back to a label-only stratum holding that single row."""
    rng = np.random.default_rng(4)
    common = n - 25
    return pd.DataFrame(
        {
            "row_id": np.arange(n),
            "g": ["a"] * common + ["rare"] * 25,
            "y": [*rng.choice(["p", "n"], common), *["n"] * 24, "p"],
        }
    )


def test_a_single_row_stratum_is_folded_instead_of_crashing_the_split():
    table = _one_rare_positive()
    # It used to stop with sklearn's bare "least populated classes in y have only 1 member".
    splits = split_dataset(table, "y", PrepareConfig(seed=0), ["g"])
    ids = _ids(splits)
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(len(table)))
    assert all("rare" in set(part["g"]) for part in splits.values())  # the group checks still ran


def test_folding_changes_nothing_when_no_stratum_has_one_row():
    from fairtrain.data.split import strata

    table = _grouped_table()
    key = strata(table, "y", ["g"])
    assert np.bincount(key)[np.bincount(key) > 0].min() >= 2
    cells = table.groupby(["y", "g"], sort=True).ngroup().to_numpy()
    sizes = np.bincount(cells)
    expected = np.where(sizes[cells] >= 10, cells, len(sizes) + pd.factorize(table["y"], sort=True)[0])
    assert np.array_equal(key, expected)


def test_a_failed_reference_statistics_step_leaves_every_earlier_output(
    tmp_path, params, cleaned_train, monkeypatch
):
    """prepare used to replace data/prepared and prepare.json before computing the reference
    statistics: a failure there left new splits beside old reference statistics."""
    from fairtrain.stages import prepare_stage as stage

    validated = tmp_path / "validated.parquet"
    pd.concat([cleaned_train] * 5, ignore_index=True).to_parquet(validated, index=False)
    out, stats, reference = tmp_path / "prepared", tmp_path / "prepare.json", tmp_path / "reference.json"
    stage.prepare_stage(params, validated, out, stats, reference)
    before = {p: p.read_bytes() for p in [*out.iterdir(), stats, reference]}

    def broken(*args, **kwargs):
        raise RuntimeError("reference statistics failed")

    monkeypatch.setattr(stage, "reference_statistics", broken)
    other_seed = params.model_copy(update={"prepare": params.prepare.model_copy(update={"seed": 7})})
    with pytest.raises(RuntimeError, match="reference statistics failed"):
        stage.prepare_stage(other_seed, validated, out, stats, reference)
    assert {p: p.read_bytes() for p in [*out.iterdir(), stats, reference]} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no leftovers
