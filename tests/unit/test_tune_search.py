"""What the search decides in its driver before and around the trials: each trial's model
options from its own train keys, the resources one trial needs, the warning when trials
train unlike the train stage, and which MLflow run a trial tags (real SQLite store)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from fairtrain.data.preprocessing import fit_preprocessor, target_vector
from fairtrain.search import (
    _tag_execution,
    grid,
    search_conditions_warning,
    trial_resource_problem,
    trial_setup,
)
from fairtrain.search_runs import TRIAL_TAG
from fairtrain.stages.training_inputs import ModelInputs, model_options
from tests.helpers import shrink_params


def _with(params, train=None, tune=None):
    return shrink_params(params, **({"train": train} if train else {}), **({"tune": tune} if tune else {}))


@pytest.fixture
def model_inputs(params, cleaned_train) -> tuple[ModelInputs, object, object]:
    preprocessor = fit_preprocessor(cleaned_train, params.dataset, params.prepare)
    labels = target_vector(cleaned_train, params.dataset)  # 10 positives of 40
    return ModelInputs.of(preprocessor, labels), preprocessor, labels


def test_grid_is_every_combination():
    assert grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_every_tunable_model_key_shapes_the_trials_model(params, model_inputs):
    """The base train section asks for no class weight, no embeddings; the trials' own keys
    must still reach the model (the search once built every trial from the base section)."""
    inputs, preprocessor, labels = model_inputs
    space = {
        "class_weight": ["none", "balanced"],
        "numeric_embedding": ["none", "periodic"],
        "numeric_embedding_dim": [4, 8],
        "embeddings": [False, True],
        "embedding_max_dim": [1, 2],
    }
    searched = _with(params, tune={"space": space})
    assert searched.train.class_weight == "none" and not searched.train.embeddings

    options = {}
    for overrides in grid(space):
        train, built = trial_setup(searched, overrides, inputs)
        # The same options the train stage builds once --write-params has written these keys.
        written = _with(params, train=overrides)
        assert built == model_options(written, preprocessor, labels)
        assert {k: getattr(train, k) for k in overrides} == overrides
        options[tuple(overrides.values())] = built

    def of(class_weight="none", numeric="none", dim=4, embeddings=False, max_dim=1):
        return options[(class_weight, numeric, dim, embeddings, max_dim)]

    assert of()["pos_weight"] is None
    assert of(class_weight="balanced")["pos_weight"] == pytest.approx(30 / 10)
    assert of()["numeric_embedding_spec"] is None
    assert of(numeric="periodic", dim=4)["numeric_embedding_spec"]["dim"] == 4
    assert of(numeric="periodic", dim=8)["numeric_embedding_spec"]["dim"] == 8
    assert of()["embedding_blocks"] == []
    narrow, wide = of(embeddings=True, max_dim=1), of(embeddings=True, max_dim=2)
    assert narrow["embedding_blocks"] and narrow["embedding_blocks"] != wide["embedding_blocks"]
    assert {b[2] for b in narrow["embedding_blocks"]} == {1}


def test_the_model_inputs_are_small_whatever_the_rows(params, model_inputs):
    """Every trial gets them pickled: label counts, not the labels."""
    inputs, _, _ = model_inputs
    assert (inputs.rows, inputs.positives) == (40, 10)
    assert set(vars(inputs)) == {"feature_groups", "numeric", "categorical", "rows", "positives"}


def test_one_trial_must_fit_the_cluster_named_by_tune_workers_per_trial(params):
    two = _with(params, tune={"workers_per_trial": 2})
    problem = trial_resource_problem(two, {"CPU": 2.0, "memory": 1e9})
    assert problem is not None
    assert "tune.workers_per_trial=2 needs 2.1 CPUs per trial" in problem
    assert "the Ray cluster has 2" in problem and "train.num_workers" not in problem
    assert trial_resource_problem(two, {"CPU": 3.0}) is None
    assert trial_resource_problem(params, {"CPU": 2.0}) is None  # one worker per trial

    gpu = _with(params, train={"use_gpu": True}, tune={"workers_per_trial": 2})
    problem = trial_resource_problem(gpu, {"CPU": 8.0, "GPU": 1.0})
    assert problem is not None
    assert "tune.workers_per_trial=2 with train.use_gpu true needs 2 GPU(s)" in problem
    assert trial_resource_problem(gpu, {"CPU": 1.0, "GPU": 2.0}) is None
    assert "needs 0.1 CPUs" in trial_resource_problem(gpu, {"GPU": 2.0})


def test_a_search_under_other_conditions_than_the_training_is_warned_about(params):
    differing = _with(params, train={"num_workers": 2, "max_epochs": 15})
    warning = search_conditions_warning(differing)  # tune: 1 worker per trial, 20 epochs
    assert warning is not None
    assert "tune.workers_per_trial=1 but train.num_workers=2" in warning
    assert "tune.max_epochs=20 but train.max_epochs=15" in warning
    assert "batch_size is per worker" in warning and "schedule" in warning

    alike = _with(params, train={"num_workers": 2, "max_epochs": 20}, tune={"workers_per_trial": 2})
    assert search_conditions_warning(alike) is None
    workers_only = search_conditions_warning(_with(params, train={"num_workers": 2, "max_epochs": 20}))
    assert workers_only is not None and "max_epochs" not in workers_only


def test_a_trial_tags_only_its_own_run_not_a_same_id_trial_of_another_search(mlflow_store):
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("tune")
    children = {}
    for search in ("old", "new"):
        parent = client.create_run(experiment_id, run_name=search).info.run_id
        child = client.create_run(
            experiment_id, tags={"mlflow.parentRunId": parent, TRIAL_TAG: "a1b2c_00000"}
        ).info.run_id
        children[search] = (parent, child)

    _tag_execution(mlflow_store, experiment_id, children["new"][0], "a1b2c_00000", {"fairtrain.x": "cpu"})

    assert client.get_run(children["new"][1]).data.tags.get("fairtrain.x") == "cpu"
    assert "fairtrain.x" not in client.get_run(children["old"][1]).data.tags
