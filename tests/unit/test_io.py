"""fairtrain.io: atomic writes (file and folder) and content hashes."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from fairtrain.io import (
    atomic_directory,
    atomic_path,
    file_sha256,
    json_sha256,
    read_json,
    replaced_together,
    write_json,
    write_parquet,
    write_text,
)


class Boom(RuntimeError):
    pass


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_path_writes_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == "new"
    assert _leftovers(target.parent) == []


def test_atomic_path_leaves_no_file_when_the_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise Boom
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_does_not_clobber_previous_content_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("{truncated")
        raise Boom
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_replaces_previous_content_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    write_text(target, "néw")
    assert target.read_text(encoding="utf-8") == "néw"
    assert _leftovers(tmp_path) == []


def test_write_json_handles_numpy_values(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"auc": np.float32(0.5), "counts": np.array([1, 2]), "n": np.int64(3)})
    assert read_json(path) == {"auc": 0.5, "counts": [1, 2], "n": 3}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_write_json_writes_undefined_numbers_as_null(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"auc": float("nan"), "gap": np.float64("inf"), "rows": [np.nan, 1.0]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(path) == {"auc": None, "gap": None, "rows": [None, 1.0]}


def test_write_parquet_round_trip(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    write_parquet(tmp_path / "f.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), frame, check_dtype=False)


def test_atomic_directory_creates_a_new_folder(tmp_path):
    target = tmp_path / "prepared"
    with atomic_directory(target) as staging:
        assert staging != target and staging.parent == tmp_path
        assert list(staging.iterdir()) == []
        (staging / "train.parquet").write_text("t")
        assert not target.exists()
    assert [p.name for p in target.iterdir()] == ["train.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_atomic_directory_replaces_the_folder_wholly(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "stale.parquet").write_text("old")
    (target / "shared.json").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "shared.json").write_text("new")
        (staging / "fresh.parquet").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.parquet", "shared.json"]
    assert (target / "shared.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no staging/retired leftovers


def test_atomic_directory_keeps_the_old_folder_when_the_block_raises(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "train.parquet").write_text("old")
    with pytest.raises(Boom), atomic_directory(target) as staging:
        (staging / "train.parquet").write_text("half")
        raise Boom
    assert [p.name for p in target.iterdir()] == ["train.parquet"]
    assert (target / "train.parquet").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_atomic_directory_failure_without_a_previous_folder(tmp_path):
    with pytest.raises(Boom), atomic_directory(tmp_path / "prepared") as staging:
        (staging / "x").write_text("x")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def _previous_outputs(root):
    (root / "splits").mkdir()
    (root / "splits" / "train.parquet").write_text("old")
    (root / "stats.json").write_text("old")


def test_replaced_together_puts_every_output_in_place_when_the_block_completes(tmp_path):
    _previous_outputs(tmp_path)
    with replaced_together() as staged:
        (staged.folder(tmp_path / "splits") / "train.parquet").write_text("new")
        staged.file(tmp_path / "stats.json").write_text("new")
        staged.file(tmp_path / "sub" / "reference.json").write_text("new")  # a missing folder is made
        assert (tmp_path / "stats.json").read_text() == "old"  # nothing moves before the end
    assert (tmp_path / "splits" / "train.parquet").read_text() == "new"
    assert (tmp_path / "stats.json").read_text() == "new"
    assert (tmp_path / "sub" / "reference.json").read_text() == "new"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


def test_replaced_together_replaces_none_when_the_last_output_fails(tmp_path):
    _previous_outputs(tmp_path)
    with pytest.raises(Boom), replaced_together() as staged:
        (staged.folder(tmp_path / "splits") / "train.parquet").write_text("new")
        staged.file(tmp_path / "stats.json").write_text("half")
        raise Boom  # say, the disk filled up at the reference statistics
    assert (tmp_path / "splits" / "train.parquet").read_text() == "old"
    assert (tmp_path / "stats.json").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_json_sha256_is_independent_of_key_order():
    a = {"train": {"seed": 1, "lr": 0.1}, "dataset": ["x", "y"]}
    b = {"dataset": ["x", "y"], "train": {"lr": 0.1, "seed": 1}}
    assert json_sha256(a) == json_sha256(b)
    assert len(json_sha256(a)) == 64
    # but sensitive to values and to list order
    assert json_sha256(a) != json_sha256({**a, "train": {"seed": 2, "lr": 0.1}})
    assert json_sha256(a) != json_sha256({**a, "dataset": ["y", "x"]})


def test_json_sha256_accepts_numpy_values():
    assert json_sha256({"x": np.float64(0.5)}) == json_sha256({"x": 0.5})


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert file_sha256(path, chunk_size=1000) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == file_sha256(path, chunk_size=7)


def test_read_json_reads_what_write_json_wrote(tmp_path):
    payload = {"a": [1, 2, {"b": None}], "c": "ü"}
    write_json(tmp_path / "p.json", payload)
    assert read_json(tmp_path / "p.json") == payload
    assert json.loads((tmp_path / "p.json").read_text()) == payload


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_outputs_get_the_usual_permissions(tmp_path, umask_022):
    # mkstemp/mkdtemp create 0600 files and 0700 folders; the result must follow the umask
    # like a plain open()/mkdir would.
    write_json(tmp_path / "metrics.json", {"auc": 0.9})
    with atomic_directory(tmp_path / "prepared") as staging:
        (staging / "train.parquet").write_text("t")
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "prepared").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "prepared" / "train.parquet").stat().st_mode) == 0o644
