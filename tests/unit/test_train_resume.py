"""What lets a rerun of the train stage find its interrupted training again."""

from __future__ import annotations

from fairtrain.stages.train_stage import checkpoint_folder, remove_run_folder, training_key
from fairtrain.training.trainer import STORAGE_ENV, configured_storage
from tests.helpers import quiet_trainer, shrink_params


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


def test_the_storage_setting_keeps_a_uri_whole_and_makes_a_path_absolute(monkeypatch, tmp_path):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert configured_storage() is None
    monkeypatch.setenv(STORAGE_ENV, "s3://bucket/fairtrain")
    assert configured_storage() == "s3://bucket/fairtrain"  # Path() would give s3:/bucket
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STORAGE_ENV, "shared/ray")
    assert configured_storage() == (tmp_path / "shared/ray").resolve()


def _fit_from(folder, checkpoint=None) -> list[float]:
    """Five epochs (dropout, one-cycle, shuffled shards) saving a checkpoint after each one;
    returns the training loss of every epoch it ran."""
    import torch
    from torch.utils.data import TensorDataset

    from fairtrain.lightning import pl
    from fairtrain.models.lightning_module import TabularClassifier
    from fairtrain.training.callbacks import RngState
    from fairtrain.training.sharding import ShardBatches
    from fairtrain.training.worker import loader

    class SaveAndRecord(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_epoch_end(self, trainer, module) -> None:
            self.losses.append(float(trainer.callback_metrics["train_loss"]))
            trainer.save_checkpoint(folder / f"epoch{trainer.current_epoch}.ckpt")

    torch.manual_seed(0)
    x = torch.randn(600, 6)
    data = TensorDataset(x, (x[:, 0] - x[:, 2] > 0).float())
    pl.seed_everything(3, workers=True, verbose=False)
    module = TabularClassifier(
        6, [16], 0.3, 0.01, 0.01, max_epochs=5, steps_per_epoch=19, lr_schedule="onecycle", batch_size=32
    )
    record = SaveAndRecord()
    trainer = quiet_trainer(5, deterministic=True, callbacks=[RngState(), record])
    train = loader(data, ShardBatches(600, 32 * 4, 1, 0, seed=5))
    val = loader(data, ShardBatches(600, 200, 1, 0, seed=0, shuffle=False))
    trainer.fit(module, train, val, ckpt_path=checkpoint)
    return record.losses


def test_a_resumed_training_continues_exactly_as_the_uninterrupted_one(tmp_path):
    # The shard order of the resumed epoch and the dropout masks (RngState) both survive.
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full = _fit_from(tmp_path / "full")
    resumed = _fit_from(tmp_path / "resumed", tmp_path / "full" / "epoch1.ckpt")
    assert len(full) == 5 and resumed == full[2:]


def test_each_run_of_a_key_gets_its_own_checkpoint_folder():
    # Two identical trainings sharing $FAIRTRAIN_RAY_STORAGE write apart; a resumed run (same
    # run id) finds its own folder again.
    assert checkpoint_folder("k", "run1") != checkpoint_folder("k", "run2")
    assert checkpoint_folder("k", "run1") == checkpoint_folder("k", "run1")
    assert checkpoint_folder("k", "run1") != checkpoint_folder("k2", "run1")
