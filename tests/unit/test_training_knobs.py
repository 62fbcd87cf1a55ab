"""Training knobs: embeddings, batch norm, optimisers and schedules, sharding, export."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fairtrain.config import TrainConfig
from fairtrain.lightning import SingleDeviceStrategy, pl
from fairtrain.models.export import load_model, save_model
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.models.mlp import TabularMLP, embedding_blocks, embedding_dim
from fairtrain.training.sharding import ShardBatches, shard_indices
from tests.helpers import needs_cuda, quiet_trainer

# The grouping tests run on the GPU too where there is one (the 16-mixed path is a GPU path).
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])]


def test_embedding_width_follows_cardinality_and_cap():
    assert embedding_dim(2, 16) == 2  # never wider than the one-hot block
    assert embedding_dim(7, 16) == round(1.6 * 7**0.56)
    assert embedding_dim(42, 16) == 13
    assert embedding_dim(1000, 16) == 16


def test_embedding_blocks_cover_categoricals_with_more_than_two_values():
    groups = {"age": [0], "sex": [1, 2], "job": [3, 4, 5, 6], "country": [7, 8, 9]}
    assert embedding_blocks(groups, ["sex", "job", "country"], max_dim=2) == [[3, 7, 2], [7, 10, 2]]


def test_a_one_hot_block_through_the_embedding_is_a_lookup():
    torch.manual_seed(0)
    model = TabularMLP(5, [4], embeddings=[[1, 5, 2]]).eval()
    rows = torch.tensor([[0.5, 0, 0, 1, 0], [-1.0, 1, 0, 0, 0]])
    table = model.embed[0].weight.T  # (cardinality, dim)
    hidden_input = torch.cat([rows[:, :1], table[rows[:, 1:].argmax(1)]], dim=1)
    torch.testing.assert_close(model(rows), model.net(hidden_input).squeeze(-1))


def test_overlapping_or_out_of_range_blocks_are_refused():
    with pytest.raises(ValueError, match="bad embedding block"):
        TabularMLP(5, [4], embeddings=[[1, 4, 2], [3, 5, 2]])
    with pytest.raises(ValueError, match="bad embedding block"):
        TabularMLP(5, [4], embeddings=[[3, 6, 2]])


def test_export_round_trip_keeps_embeddings_and_batch_norm(tmp_path):
    torch.manual_seed(0)
    model = TabularMLP(6, [8, 4], dropout=0.2, batch_norm=True, embeddings=[[2, 6, 3]])
    model.train()
    model(torch.randn(64, 6))  # moves the batch-norm running statistics away from their init
    architecture = {
        "n_features": 6,
        "hidden_sizes": [8, 4],
        "dropout": 0.2,
        "batch_norm": True,
        "embeddings": [[2, 6, 3]],
    }
    save_model(tmp_path / "m", model.state_dict(), architecture)
    loaded = load_model(tmp_path / "m")
    x = torch.randn(16, 6)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in loaded.modules())


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_are_disjoint_equal_and_cover_every_row(world):
    n = 101
    shards = [shard_indices(n, world, r, seed=7, epoch=3, shuffle=True).tolist() for r in range(world)]
    assert len({len(s) for s in shards}) == 1, "equal batch counts keep DDP's collectives in step"
    assert set().union(*shards) == set(range(n))
    padding = len(shards[0]) * world - n
    assert sum(len(s) for s in shards) - len(set().union(*shards)) == padding < world
    val = [shard_indices(n, world, r, 7, 0, shuffle=False).tolist() for r in range(world)]
    assert sorted(r for shard in val for r in shard) == list(range(n)), "validation rows are read once"


def test_shards_reshuffle_per_epoch_but_are_reproducible():
    a = shard_indices(50, 2, 0, seed=1, epoch=0, shuffle=True)
    assert torch.equal(a, shard_indices(50, 2, 0, seed=1, epoch=0, shuffle=True))
    assert not torch.equal(a, shard_indices(50, 2, 0, seed=1, epoch=1, shuffle=True))
    batches = ShardBatches(50, 8, 2, 1, seed=1)
    batches.set_epoch(1)
    assert len(list(batches)) == len(batches) == 4
    assert torch.equal(torch.cat(list(batches)), shard_indices(50, 2, 1, 1, 1, True))


def _fit(**options) -> dict:
    torch.manual_seed(0)
    x = torch.randn(512, 6)
    y = (x[:, 0] + x[:, 1] > 0).float()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    module = TabularClassifier(
        6, [16], 0.0, options.pop("lr", 0.01), 0.01, max_epochs=3, steps_per_epoch=8, **options
    )
    trainer = quiet_trainer()
    trainer.fit(module, loader, DataLoader(TensorDataset(x, y), batch_size=128))
    return {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}, "trainer": trainer}


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.1},
        {"lr_schedule": "cosine"},
        {"lr_schedule": "onecycle"},
        {"lr_schedule": "plateau"},
        {"batch_norm": True, "pos_weight": 2.0},
    ],
)
def test_every_optimiser_and_schedule_trains(options):
    result = _fit(**dict(options))
    assert result["metrics"]["val_auc"] > 0.9
    optimizer = result["trainer"].optimizers[0]
    expected = torch.optim.SGD if options.get("optimizer") == "sgd" else torch.optim.AdamW
    assert isinstance(optimizer, expected)
    schedulers = result["trainer"].lr_scheduler_configs
    assert len(schedulers) == (0 if options.get("lr_schedule", "none") == "none" else 1)
    # biases and norm parameters are not decayed
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_cosine_schedule_decays_the_learning_rate():
    result = _fit(lr_schedule="cosine")
    assert result["trainer"].optimizers[0].param_groups[0]["lr"] < 0.01 * 0.5


def test_train_config_rejects_unknown_choices():
    # pydantic's message names the key, then the allowed values and what it was given.
    with pytest.raises(ValueError, match=r"(?s)\noptimizer\n.*'adamw' or 'sgd'.*input_value='adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match=r"(?s)\nlr_schedule\n.*'onecycle'.*input_value='step'"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match=r"(?s)\nprecision\n.*'32-true'.*input_value='16'"):
        TrainConfig(precision="16")


def test_periodic_numeric_embedding_round_trips_and_keeps_input_gradients(tmp_path):
    torch.manual_seed(0)
    spec = {"indices": [0, 1], "frequencies": 4, "dim": 3, "sigma": 0.5}
    model = TabularMLP(6, [8], embeddings=[[2, 6, 2]], numeric_embedding=spec)
    architecture = {
        "n_features": 6,
        "hidden_sizes": [8],
        "embeddings": [[2, 6, 2]],
        "numeric_embedding": spec,
    }
    save_model(tmp_path / "m", model.state_dict(), architecture)
    loaded = load_model(tmp_path / "m")
    x = torch.randn(16, 6, requires_grad=True)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    loaded(x).sum().backward()
    assert x.grad[:, :2].abs().sum() > 0, "Integrated Gradients needs gradients w.r.t. numeric inputs"
    with pytest.raises(ValueError, match="numeric embedding"):
        TabularMLP(6, [8], embeddings=[[2, 6, 2]], numeric_embedding={**spec, "indices": [0, 3]})


class _HookCounter(pl.Callback):
    def __init__(self) -> None:
        self.calls = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls["on_before_optimizer_step"] += 1


class _CountingStrategy(SingleDeviceStrategy):
    """Counts the strategy's calls around each backward: on Ray workers post_backward is
    the gradient all-reduce, which every minibatch needs exactly once."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device=torch.device(device, 0) if device == "cuda" else torch.device(device))
        self.calls = {"pre_backward": 0, "post_backward": 0}

    def pre_backward(self, closure_loss) -> None:
        self.calls["pre_backward"] += 1
        super().pre_backward(closure_loss)

    def post_backward(self, closure_loss) -> None:
        self.calls["post_backward"] += 1
        super().post_backward(closure_loss)


def _fit_in_groups(
    steps_per_execution: int,
    lr_schedule: str,
    plugins: list | None = None,
    module_class=TabularClassifier,
    device: str = "cpu",
) -> tuple[list[torch.Tensor], float, dict[str, int]]:
    """Train on 300 rows in minibatches of 32 (the last has 12), handing the module groups of
    ``steps_per_execution`` minibatches per Lightning step; the weights, the last epoch's
    train loss and how often the per-step hooks ran. Every minibatch must pass through the
    strategy's pre- and post-backward once, whatever the grouping."""
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    y = (x[:, 0] - x[:, 2] > 0).float()
    data = TensorDataset(x, y)
    pl.seed_everything(3, verbose=False)
    module = module_class(
        6, [8], 0.2, 0.01, 0.01, max_epochs=3, steps_per_epoch=10, lr_schedule=lr_schedule,
        batch_size=32, gradient_clip_val=0.05,  # small enough that clipping acts
    )  # fmt: skip
    hooks = _HookCounter()
    strategy = _CountingStrategy(device)
    trainer = quiet_trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        deterministic=True,
        callbacks=[hooks],
        plugins=plugins,
        strategy=strategy,
    )
    batches = ShardBatches(300, 32 * steps_per_execution, 1, 0, seed=5)
    train = DataLoader(data, sampler=batches, batch_size=None)
    trainer.fit(module, train, DataLoader(data, batch_size=100))
    assert trainer.global_step == 3 * 10, "one optimiser step per minibatch of 32"
    assert strategy.calls == {"pre_backward": 3 * 10, "post_backward": 3 * 10}
    weights = [p.detach().clone() for p in module.parameters()]
    return weights, float(trainer.callback_metrics["train_loss"]), hooks.calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lr_schedule", ["onecycle", "cosine"])
def test_steps_per_execution_makes_the_same_updates(lr_schedule, device):
    one, one_loss, hooks = _fit_in_groups(1, lr_schedule, device=device)
    assert set(hooks.values()) == {3 * 10}, "every minibatch gets every hook"
    for steps in (4, 7):
        grouped, loss, hooks = _fit_in_groups(steps, lr_schedule, device=device)
        assert all(torch.equal(a, b) for a, b in zip(one, grouped, strict=True))
        # The epoch's loss weights each minibatch by its rows, the short last one included.
        assert loss == pytest.approx(one_loss, rel=1e-6)
        # Lightning's per-step hooks run once per group, for its last minibatch.
        assert set(hooks.values()) == {3 * -(-10 // steps)}


def test_a_module_with_its_own_backward_gets_lightnings_path_for_every_minibatch():
    """The hook-free steps skip LightningModule.backward, so a subclass that overrides it
    must not get them: every minibatch then goes through manual_backward and its hooks."""
    calls = []

    class OwnBackward(TabularClassifier):
        def backward(self, loss, *args, **kwargs) -> None:
            calls.append(1)
            loss.backward(*args, **kwargs)

    one, _, _ = _fit_in_groups(1, "onecycle")
    grouped, _, hooks = _fit_in_groups(4, "onecycle", module_class=OwnBackward)
    assert len(calls) == 3 * 10 and set(hooks.values()) == {3 * 10}
    assert all(torch.equal(a, b) for a, b in zip(one, grouped, strict=True))


# The scaler skips the overflowing first steps, so the one-cycle schedule steps before the
# optimiser does: torch warns, as it would in any AMP training that starts this way.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("device", DEVICES)
def test_grouped_steps_keep_amp_loss_scaling(device):
    """16-bit autocast with a GradScaler (the 16-mixed path of the GPU config; on the CPU, and
    on CUDA where there is a GPU):
    the steps without hooks scale, unscale before clipping and step through the scaler
    exactly as Lightning's MixedPrecision plugin does."""
    from fairtrain.lightning import MixedPrecision

    def amp() -> list:
        # A large initial scale that overflows at first: the scaler must skip those steps.
        scaler = torch.amp.GradScaler(device, init_scale=2.0**24)
        return [MixedPrecision("16-mixed", device, scaler=scaler)]

    single, grouped = amp(), amp()
    one, one_loss, _ = _fit_in_groups(1, "onecycle", single, device=device)
    plain, _, _ = _fit_in_groups(1, "onecycle", device=device)
    assert not all(torch.equal(a, b) for a, b in zip(one, plain, strict=True)), "AMP was not in use"
    weights, loss, _ = _fit_in_groups(4, "onecycle", grouped, device=device)
    assert all(torch.equal(a, b) for a, b in zip(one, weights, strict=True))
    assert loss == pytest.approx(one_loss, rel=1e-6)
    # Overflowing steps were skipped (each halves the scale), the same number in both.
    assert grouped[0].scaler.get_scale() == single[0].scaler.get_scale() < 2.0**24
