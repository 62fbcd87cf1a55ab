"""dvc.yaml declares, for every stage, all the code that stage runs.

A stage whose code changes but is not among its deps would be skipped by `dvc repro`,
leaving outputs made by old code. The imports of each stage script are followed statically
(including imports inside functions) through the fairtrain package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from fairtrain.config import TrainConfig
from tests.helpers import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
PIPELINES = PROJECT_ROOT / "pipelines"
STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    if name == "_common":
        return PIPELINES / "_common.py"
    if not name.startswith("fairtrain"):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from fairtrain.registry import promotion` may name a module or an attribute.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            target = _module_file(name)
            if target is not None:
                found.add(target)
    return found


def code_of(script: Path) -> set[Path]:
    """The script and every project file it imports, transitively."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_imports(path) - seen)
    return seen


def _script(stage: dict) -> Path:
    words = stage["cmd"].split()
    return PROJECT_ROOT / words[words.index("python") + 1]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_all_the_code_it_runs(name):
    stage = STAGES[name]
    deps = [PROJECT_ROOT / d for d in stage["deps"]]
    # Package __init__ files hold no logic; the model-from-code file is data to MLflow.
    needed = {p for p in code_of(_script(stage)) if p.name != "__init__.py"}
    missing = sorted(
        str(p.relative_to(PROJECT_ROOT)) for p in needed if not any(p == d or d in p.parents for d in deps)
    )
    assert not missing, f"stage {name!r} runs code that is not in its dvc.yaml deps: {missing}"


def test_the_import_walk_finds_real_code():
    # Guard against the test above passing because the walk found nothing.
    train = code_of(PIPELINES / "train.py")
    assert SRC / "fairtrain/training/worker.py" in train
    assert SRC / "fairtrain/data/preprocessing.py" in train
    assert PIPELINES / "_common.py" in train


def test_the_train_stage_declares_every_train_param():
    # The workers read every train param and the resume key hashes them all; one missing from
    # the stage's params would let `dvc exp run -S train.<key>=...` keep the old model.
    declared = set(STAGES["train"]["params"])
    missing = sorted(f"train.{name}" for name in TrainConfig.model_fields if f"train.{name}" not in declared)
    assert missing == [], f"dvc.yaml's train stage does not list {missing}"


def _declared_params() -> set[str]:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return {key for stage in stages.values() for key in stage.get("params", []) if isinstance(key, str)}


def _missing_keys(params: dict, keys: set[str]) -> list[str]:
    missing = []
    for key in sorted(keys):
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    return missing


@pytest.mark.parametrize(
    "params_file",
    [PROJECT_ROOT / "params.yaml", *sorted((PROJECT_ROOT / "examples").glob("*/params.yaml"))],
    ids=lambda p: str(p.relative_to(PROJECT_ROOT)),
)
def test_every_params_file_has_every_key_the_stages_read(params_file):
    # DVC refuses to run a stage whose params key is missing: a worked example copied over
    # params.yaml must carry every key dvc.yaml lists, not only the ones it changes.
    assert _missing_keys(yaml.safe_load(params_file.read_text()), _declared_params()) == []


def test_the_params_key_check_finds_a_missing_key():
    assert _missing_keys({"train": {"seed": 1}}, {"train.seed", "train.max_epochs"}) == ["train.max_epochs"]


def _outputs() -> dict[str, dict]:
    """Every output of every stage (outs, metrics, plots) with its options."""
    found = {}
    for stage in STAGES.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
                found[path] = options or {}
    return found


def _uncached_outputs() -> list[str]:
    return [path for path, options in _outputs().items() if options.get("cache") is False]


def test_dvc_deletes_no_output_before_its_stage_runs():
    """Without `persist`, `dvc repro` deletes a stage's outputs before it runs the command,
    and even before it checks the stage's params: a misspelt key then cost the last good
    metrics and card (tests/e2e/test_dvc_repro.py shows it on a real repo)."""
    outputs = _outputs()
    assert "metrics/train.json" in outputs and "models/model" in outputs
    assert [path for path, options in outputs.items() if options.get("persist") is not True] == []


def test_outputs_kept_in_git_are_not_git_ignored():
    """`cache: false` outputs are not in DVC's cache, so `dvc pull` cannot restore them: git
    must hold them. One that .gitignore hides (models/registered.json was) is in neither, and
    after a checkout `dvc repro` reruns its stage against a store that may be gone."""
    import subprocess

    paths = _uncached_outputs()
    assert "models/registered.json" in paths and "metrics/evaluation.json" in paths
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == [], "cache: false outputs that .gitignore hides"


def test_the_dvc_metrics_stay_few_enough_to_compare():
    """`dvc exp show` puts every number of every metrics file in a column of its own; with
    the per-group fairness and per-column attribution reports among them it was 1,200
    columns wide, every cell drawn as "…". Those are outputs; the metrics (the committed
    files) stay a few hundred numbers at most."""
    import json

    def leaves(value) -> int:
        return sum(map(leaves, value.values())) if isinstance(value, dict) else 1

    metrics = [
        path
        for stage in STAGES.values()
        for entry in stage.get("metrics", [])
        for path in ([entry] if isinstance(entry, str) else entry)
    ]
    assert "metrics/evaluation.json" in metrics and "metrics/train.json" in metrics
    assert not {"metrics/fairness.json", "metrics/attributions.json", "metrics/mitigation.json"} & set(
        metrics
    )
    evaluation = json.loads((PROJECT_ROOT / "metrics/evaluation.json").read_text())
    assert set(evaluation["disparities"]) == {"sex", "race", "sex × race"}
    assert sum(leaves(json.loads((PROJECT_ROOT / path).read_text())) for path in metrics) < 300
