"""What lets a rerun of the train stage find its interrupted training again."""

from __future__ import annotations

import pytest

from fairtrain.stages.train_stage import checkpoint_folder, remove_run_folder, training_key
from fairtrain.training.trainer import STORAGE_ENV, configured_storage
from tests.helpers import PROJECT_ROOT, quiet_trainer, shrink_params


def test_training_key_changes_with_the_training_code(project_params, tmp_path):
    import shutil

    from fairtrain.stages.train_stage import TRAINING_CODE, training_code_digest

    package = PROJECT_ROOT / "src/fairtrain"
    copy = tmp_path / "fairtrain"
    for entry in TRAINING_CODE:
        (shutil.copytree if (package / entry).is_dir() else shutil.copy)(package / entry, copy / entry)
    assert training_code_digest(copy) == training_code_digest(package) == training_code_digest()
    module = copy / "training/worker.py"
    module.write_text(module.read_text() + "\n# a fix\n")
    changed = training_code_digest(copy)
    assert changed != training_code_digest(package)
    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows")
    assert training_key(project_params, data, code=changed) != training_key(project_params, data)


def test_training_key_follows_the_params_and_data_that_shape_the_training(project_params, tmp_path):
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


def test_the_storage_setting_keeps_a_uri_whole_and_makes_a_path_absolute(monkeypatch, tmp_path):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert configured_storage() is None
    monkeypatch.setenv(STORAGE_ENV, "s3://bucket/fairtrain")
    assert configured_storage() == "s3://bucket/fairtrain"  # Path() would give s3:/bucket
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STORAGE_ENV, "shared/ray")
    assert configured_storage() == (tmp_path / "shared/ray").resolve()


def _fit_from(folder, checkpoint=None, lr_schedule="onecycle", stop=None) -> list[float]:
    """Five epochs (dropout, ``lr_schedule``, shuffled shards) saving a checkpoint after each
    one the way the workers' checkpoint callback does (after the epoch's other end hooks);
    returns the training loss of every epoch it ran. ``stop``: an EarlyStopping callback."""
    import torch
    from torch.utils.data import TensorDataset

    from fairtrain.lightning import pl
    from fairtrain.models.lightning_module import TabularClassifier
    from fairtrain.training.callbacks import AfterEpochEndHooks, RngState
    from fairtrain.training.sharding import ShardBatches
    from fairtrain.training.worker import loader

    class SaveAndRecord(AfterEpochEndHooks):
        def __init__(self) -> None:
            super().__init__()
            self.losses: list[float] = []

        def on_train_epoch_end(self, trainer, module) -> None:
            super().on_train_epoch_end(trainer, module)
            self.losses.append(float(trainer.callback_metrics["train_loss"]))
            trainer.save_checkpoint(folder / f"epoch{trainer.current_epoch}.ckpt")

    torch.manual_seed(0)
    x = torch.randn(600, 6)
    data = TensorDataset(x, (x[:, 0] - x[:, 2] > 0).float())
    pl.seed_everything(3, workers=True, verbose=False)
    module = TabularClassifier(
        6, [16], 0.3, 0.01, 0.01, max_epochs=5, steps_per_epoch=19, lr_schedule=lr_schedule, batch_size=32
    )
    record = SaveAndRecord()
    callbacks = [RngState(), record] + ([stop] if stop else [])
    trainer = quiet_trainer(5, deterministic=True, callbacks=callbacks, enable_checkpointing=True)
    train = loader(data, ShardBatches(600, 32 * 4, 1, 0, seed=5))
    val = loader(data, ShardBatches(600, 200, 1, 0, seed=0, shuffle=False))
    trainer.fit(module, train, val, ckpt_path=checkpoint)
    return record.losses


@pytest.mark.parametrize("lr_schedule", ["onecycle", "cosine", "plateau"])
def test_a_resumed_training_continues_exactly_as_the_uninterrupted_one(tmp_path, lr_schedule):
    # The shard order of the resumed epoch and the dropout masks (RngState) both survive, and
    # the per-epoch schedules (cosine, plateau) had stepped for the saved epoch: with the
    # checkpoint taken before the module's epoch-end hook, the resumed cosine run lagged a step.
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full = _fit_from(tmp_path / "full", lr_schedule=lr_schedule)
    resumed = _fit_from(tmp_path / "resumed", tmp_path / "full" / "epoch1.ckpt", lr_schedule=lr_schedule)
    assert len(full) == 5 and resumed == full[2:]


def test_a_training_resumed_after_early_stopping_stopped_it_trains_no_further(tmp_path):
    from fairtrain.lightning import EarlyStopping

    def stop():  # any validation loss below 10 stops the training after its first epoch
        return EarlyStopping(monitor="val_loss", mode="min", patience=50, stopping_threshold=10.0)

    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    assert len(_fit_from(tmp_path / "full", stop=stop())) == 1
    # The driver died after that last checkpoint; the rerun resumes from it and, like the
    # uninterrupted run, trains no further epoch.
    assert _fit_from(tmp_path / "resumed", tmp_path / "full" / "epoch0.ckpt", stop=stop()) == []


def test_early_stopping_state_includes_the_saved_epoch(tmp_path):
    # EarlyStopping's state in the checkpoint includes the saved epoch's check, so a resumed
    # run stops at the same epoch as the uninterrupted one.
    from fairtrain.lightning import EarlyStopping

    def stop():
        # Validation losses by epoch here: 0.667, 0.511, 0.364, 0.300, 0.292. Epoch 3 is the
        # first to improve on the best by less than 0.1: patience 1 stops there.
        return EarlyStopping(monitor="val_loss", mode="min", patience=1, min_delta=0.1)

    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full = _fit_from(tmp_path / "full", stop=stop())
    assert len(full) == 4, "early stopping must end the training after epoch 3 of 0-4"
    # Resumed after epoch 2: taken before that epoch's check, the checkpoint's best was epoch
    # 1's 0.511, so epoch 3 counted as an improvement and the resumed run trained on.
    resumed = _fit_from(tmp_path / "resumed", tmp_path / "full" / "epoch2.ckpt", stop=stop())
    assert resumed == full[3:]


def test_each_run_of_a_key_gets_its_own_checkpoint_folder():
    # Two identical trainings sharing $FAIRTRAIN_RAY_STORAGE write apart; a resumed run (same
    # run id) finds its own folder again.
    assert checkpoint_folder("k", "run1") != checkpoint_folder("k", "run2")
    assert checkpoint_folder("k", "run1") == checkpoint_folder("k", "run1")
    assert checkpoint_folder("k", "run1") != checkpoint_folder("k2", "run1")


def test_only_a_live_unfinished_run_of_the_stage_experiment_is_resumed(mlflow_store):
    # A FAILED run the user deleted in the UI, or one of another experiment, cannot be
    # reopened (MLflow refuses): the rerun starts a new run instead of failing every time.
    import mlflow
    from mlflow.tracking import MlflowClient

    from fairtrain.stages.train_stage import resumable_run_id

    client = MlflowClient()
    here = mlflow.set_experiment("fairtrain").experiment_id
    elsewhere = client.create_experiment("other")
    runs = {}
    for name, experiment, status in [
        ("failed", here, "FAILED"),
        ("finished", here, "FINISHED"),
        ("deleted", here, "FAILED"),
        ("other", elsewhere, "KILLED"),
    ]:
        runs[name] = client.create_run(experiment, run_name=name).info.run_id
        client.set_terminated(runs[name], status)
    client.delete_run(runs["deleted"])
    assert resumable_run_id(runs["failed"], here) == runs["failed"]
    assert resumable_run_id(runs["finished"], here) is None
    assert resumable_run_id(runs["deleted"], here) is None
    assert resumable_run_id(runs["other"], here) is None
    assert resumable_run_id("0" * 32, here) is None  # not in this store
    assert resumable_run_id(None, here) is None
