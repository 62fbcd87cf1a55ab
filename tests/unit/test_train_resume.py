"""What lets a rerun of the train stage find its interrupted training again."""

from __future__ import annotations

from fairtrain.stages.train_stage import remove_run_folder, training_key
from tests.helpers import shrink_params


def test_training_key_changes_with_params_and_data_only(project_params, tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows")
    key = training_key(project_params, data)
    assert key == training_key(project_params, data)
    assert key != training_key(shrink_params(project_params, train={"dropout": 0.2}), data)
    assert key == training_key(shrink_params(project_params, evaluate={"ig_steps": 7}), data)
    data.write_bytes(b"other rows")
    assert key != training_key(project_params, data)


def test_old_checkpoints_are_removed_from_a_path_or_a_uri(tmp_path):
    for storage in (tmp_path / "local", f"file://{tmp_path}/uri"):
        root = tmp_path / ("local" if storage == tmp_path / "local" else "uri")
        (root / "run" / "checkpoint_0").mkdir(parents=True)
        (root / "run" / "checkpoint_0" / "checkpoint.ckpt").write_bytes(b"x")
        (root / "other").mkdir()
        remove_run_folder(storage, "run")
        assert not (root / "run").exists() and (root / "other").exists()
        remove_run_folder(storage, "run")  # nothing there: no error
