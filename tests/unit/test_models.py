"""fairtrain.models: the MLP, its LightningModule under a plain Trainer, and weight export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from fairtrain.lightning import pl
from fairtrain.models.export import (
    ARCHITECTURE_FILE,
    WEIGHTS_FILE,
    load_model,
    save_model,
    state_dict_from_lightning_checkpoint,
)
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.models.mlp import TabularMLP

N_FEATURES = 4

# Lightning's own use of a deprecated torch pytree API; nothing this project can act on.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


def _separable(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=generator)
    y = ((x[:, 0] + 0.5 * x[:, 1]) > 0).float()
    return TensorDataset(x, y)


def _trainer(max_epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.fixture(scope="module")
def trained():
    """A classifier trained for a few epochs (shared by the tests of this module: ~1 s)."""
    pl.seed_everything(0, verbose=False)
    train = DataLoader(_separable(512, seed=1), batch_size=64, shuffle=True)
    val = DataLoader(_separable(256, seed=2), batch_size=256)
    module = TabularClassifier(
        n_features=N_FEATURES, hidden_sizes=[16, 8], dropout=0.1, learning_rate=0.02, weight_decay=0.0
    )
    trainer = _trainer(max_epochs=8)
    before = trainer.validate(module, val, verbose=False)[0]
    trainer.fit(module, train, val)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    after = trainer.validate(module, val, verbose=False)[0]
    return {
        "module": module,
        "trainer": trainer,
        "before": before,
        "after": after,
        "fit_metrics": fit_metrics,
    }


def test_mlp_output_shape():
    model = TabularMLP(n_features=7, hidden_sizes=[5, 3], dropout=0.2)
    assert model(torch.randn(11, 7)).shape == (11,)
    assert model(torch.randn(1, 7)).shape == (1,)
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7, 5), (5, 3), (3, 1)]


def test_predict_proba_is_a_probability_in_eval_mode():
    torch.manual_seed(0)
    model = TabularMLP(n_features=3, hidden_sizes=[4], dropout=0.5).train()
    x = torch.randn(20, 3)
    first = model.predict_proba(x)
    assert not model.training
    assert first.shape == (20,)
    assert ((first >= 0) & (first <= 1)).all()
    torch.testing.assert_close(model.predict_proba(x), first)  # dropout is off
    torch.testing.assert_close(first, torch.sigmoid(model(x)))
    assert not first.requires_grad


def test_classifier_learns_a_separable_problem(trained):
    before, after = trained["before"], trained["after"]
    assert set(after) >= {"val_loss", "val_auc"}
    assert after["val_loss"] < before["val_loss"] - 0.2
    assert after["val_auc"] > 0.95
    assert trained["trainer"].current_epoch == 8
    # the epoch-level metrics the training callbacks rely on are logged during fit
    assert set(trained["fit_metrics"]) >= {"train_loss", "val_loss", "val_auc"}
    assert trained["fit_metrics"]["train_loss"] < 0.3


def test_hyperparameters_are_plain_values(trained):
    hparams = dict(trained["module"].hparams)
    assert hparams == {
        "n_features": N_FEATURES,
        "hidden_sizes": [16, 8],
        "dropout": 0.1,
        "learning_rate": 0.02,
        "weight_decay": 0.0,
        "batch_norm": False,
        "embeddings": None,
        "numeric_embedding": None,
        "optimizer": "adamw",
        "momentum": 0.9,
        "lr_schedule": "none",
        "max_epochs": 1,
        "steps_per_epoch": 1,
        "pos_weight": None,
        "batch_size": None,
        "gradient_clip_val": 0.0,
    }
    json.dumps(hparams)


def test_save_and_load_model_round_trip(trained, tmp_path):
    module = trained["module"]
    architecture = {"n_features": N_FEATURES, "hidden_sizes": [16, 8], "dropout": 0.1}
    save_model(tmp_path / "model", module.model.state_dict(), architecture)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted([WEIGHTS_FILE, ARCHITECTURE_FILE])
    assert json.loads((tmp_path / "model" / ARCHITECTURE_FILE).read_text()) == architecture
    assert set(load_file(str(tmp_path / "model" / WEIGHTS_FILE))) == set(module.model.state_dict())

    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, TabularMLP)
    assert not loaded.training  # eval mode: dropout off
    x = torch.randn(32, N_FEATURES)
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module.model(x), rtol=0, atol=0)


def test_load_model_rejects_weights_of_another_architecture(trained, tmp_path):
    save_model(
        tmp_path / "model",
        trained["module"].model.state_dict(),
        {"n_features": N_FEATURES, "hidden_sizes": [32], "dropout": 0.0},
    )
    mismatch = r"(?s)loading state_dict for TabularMLP.*size mismatch for net\.0\.weight"
    with pytest.raises(RuntimeError, match=mismatch):
        load_model(tmp_path / "model")


def test_state_dict_from_lightning_checkpoint(trained, tmp_path):
    path = tmp_path / "last.ckpt"
    trained["trainer"].save_checkpoint(path)
    # the helper loads with torch.load(weights_only=True): no pickled objects in the checkpoint
    state = state_dict_from_lightning_checkpoint(path)
    expected = trained["module"].model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)

    rebuilt = TabularMLP(N_FEATURES, [16, 8], 0.1)
    rebuilt.load_state_dict(state)  # strict: every key present, nothing extra
    save_model(tmp_path / "exported", state, {"n_features": N_FEATURES, "hidden_sizes": [16, 8]})
    exported = load_model(tmp_path / "exported")
    x = torch.randn(8, N_FEATURES)
    trained["module"].eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), trained["module"](x), rtol=0, atol=0)
