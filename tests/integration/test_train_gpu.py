"""The GPU path of the train stage: real Ray Train workers on CUDA GPUs, NCCL and float16
mixed precision. Skipped where there is no CUDA GPU (CI has none); run on a GPU machine
with ``pytest -m gpu``. The refusal on a machine without GPUs is in test_train_ray.py."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import ray
import torch
from sklearn.metrics import roc_auc_score

from fairtrain.data.preprocessing import Preprocessor
from fairtrain.errors import TrainingError
from fairtrain.models.export import load_model
from fairtrain.training.tags import (
    BACKEND_TAG,
    DETERMINISTIC_TAG,
    DEVICE_TAG,
    PRECISION_TAG,
    WORLD_SIZE_TAG,
)
from tests.helpers import needs_cuda, shrink_params
from tests.integration.pipeline import epoch_history, train_in_own_store, train_with_ray

pytestmark = [pytest.mark.slow, pytest.mark.gpu, needs_cuda]


@pytest.fixture(scope="module")
def gpu_ray():
    ray.init(num_cpus=2, num_gpus=torch.cuda.device_count(), include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_one_gpu_worker_trains_with_nccl_and_float16_mixed_precision(
    gpu_ray, prepared, small_params, mlflow_store, tmp_path
):
    params = shrink_params(small_params, train={"num_workers": 1, "use_gpu": True, "precision": "16-mixed"})
    ref = train_with_ray(params, prepared, tmp_path)

    runs = mlflow.search_runs(experiment_ids=[ref.experiment_id], output_format="list")
    assert [r.info.run_id for r in runs] == [ref.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    # What the worker actually ran on, not what params asked for.
    assert run.data.tags[DEVICE_TAG].startswith("cuda:0 (")
    assert run.data.tags[BACKEND_TAG] == "nccl"
    assert run.data.tags[PRECISION_TAG] == "16-mixed"
    assert run.data.tags[WORLD_SIZE_TAG] == "1"
    assert run.data.tags[DETERMINISTIC_TAG] == "true"
    # MLflow's system metrics include the GPU's where nvidia-ml-py is installed (the gpu extra).
    assert "system/gpu_0_utilization_percentage" in run.data.metrics
    assert run.data.metrics["system/gpu_0_memory_usage_megabytes"] > 0

    # The float16-trained model exports float32 weights that load and predict on the CPU.
    preprocessor = Preprocessor.from_dict(json.loads(prepared["preprocessor"].read_text()))
    test = pd.read_parquet(prepared["test"])
    model = load_model(tmp_path / "models/model")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        proba = torch.sigmoid(model(torch.from_numpy(preprocessor.transform(test)))).numpy()
    y = (test[small_params.dataset.label] == small_params.dataset.positive_class).to_numpy()
    assert roc_auc_score(y, proba) > 0.85


def test_one_gpu_worker_gives_identical_metrics_run_to_run(gpu_ray, prepared, small_params, tmp_path):
    """Lightning's deterministic mode (cuBLAS workspace, deterministic kernels) holds on one
    GPU too: the same data, params and worker count give the same metrics."""
    params = shrink_params(
        small_params, train={"num_workers": 1, "use_gpu": True, "early_stopping_patience": 50}
    )
    outs = [tmp_path / "run0", tmp_path / "run1"]
    for out in outs:
        out.mkdir()
        train_in_own_store(params, prepared, out)
    first, second = (epoch_history(out) for out in outs)
    assert len(first) == params.train.max_epochs
    assert first == second
    weights = [(out / "models/model/model.safetensors").read_bytes() for out in outs]
    assert weights[0] == weights[1]


def test_more_gpu_workers_than_gpus_fails_fast(gpu_ray, prepared, small_params, mlflow_store, tmp_path):
    gpus = torch.cuda.device_count()
    params = shrink_params(small_params, train={"num_workers": gpus + 1, "use_gpu": True})
    with pytest.raises(TrainingError, match=rf"num_workers={gpus + 1}, but the Ray cluster has {gpus} GPU"):
        train_with_ray(params, prepared, tmp_path)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
