"""`pipelines/tune.py --write-params`: the best train keys written into a real params file,
keeping its comments and layout, in the layouts people write by hand."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from fairtrain.config import load_params
from fairtrain.errors import ConfigError
from fairtrain.params_file import write_back
from tests.helpers import PROJECT_ROOT

REAL = (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8")


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines removed from ``before`` and added in ``after``."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def _same_except_train(path: Path, keys: dict) -> None:
    new, old = load_params(path), load_params(PROJECT_ROOT / "params.yaml")
    assert {k: getattr(new.train, k) for k in keys} == keys
    assert new.model_dump(exclude={"train"}) == old.model_dump(exclude={"train"})
    assert new.train.model_dump(exclude=set(keys)) == old.train.model_dump(exclude=set(keys))


def test_write_back_edits_train_keys_and_keeps_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((PROJECT_ROOT / "params.yaml").read_text())
    write_back(path, {"learning_rate": 0.003, "hidden_sizes": [64, 32], "lr_schedule": "cosine"})
    text = path.read_text()
    assert "  learning_rate: 0.003" in text and "  hidden_sizes: [64, 32]" in text
    assert "# none | cosine | onecycle | plateau" in text, "comments survive"
    params = load_params(path)
    assert (params.train.learning_rate, params.train.hidden_sizes) == (0.003, [64, 32])
    assert params.evaluate == load_params(PROJECT_ROOT / "params.yaml").evaluate


def test_a_comment_at_column_zero_inside_train_does_not_end_the_section(tmp_path):
    # Once it did: the keys after the comment were appended again, PyYAML kept the old ones,
    # and the script still said it had written them.
    text = REAL.replace("  learning_rate: 0.003", "# tuned by hand, see below\n  learning_rate: 0.003", 1)
    path = _file(tmp_path, text)
    best = {"learning_rate": 0.01, "dropout": 0.2}
    write_back(path, best)
    edited = path.read_text()
    _same_except_train(path, best)
    assert edited.count("learning_rate:") == text.count("learning_rate:"), "no key added twice"
    assert "# tuned by hand, see below\n  learning_rate: 0.01 " in edited
    removed, added = _changed_lines(text, edited)
    assert len(removed) == len(added) == 2, (removed, added)


def test_a_block_list_is_replaced_by_a_block_list(tmp_path):
    text = REAL.replace("  hidden_sizes: [128, 64]\n", "  hidden_sizes:\n    - 128\n    - 64\n", 1)
    path = _file(tmp_path, text)
    write_back(path, {"hidden_sizes": [256, 128, 32]})
    edited = path.read_text()
    _same_except_train(path, {"hidden_sizes": [256, 128, 32]})
    assert "  hidden_sizes:\n    - 256\n    - 128\n    - 32\n  embeddings:" in edited
    removed, added = _changed_lines(text, edited)
    assert (removed, added) == (["    - 64"], ["    - 256", "    - 32"]), "nothing else changed"


def test_a_file_indented_by_four_spaces_keeps_its_indentation(tmp_path):
    def doubled(line: str) -> str:
        stripped = line.lstrip(" ")
        return " " * (2 * (len(line) - len(stripped))) + stripped

    text = "".join(doubled(line) for line in REAL.splitlines(keepends=True))
    path = _file(tmp_path, text)
    best = {"learning_rate": 0.01, "hidden_sizes": [64, 32], "class_weight": "balanced"}
    write_back(path, best)
    edited = path.read_text()
    _same_except_train(path, best)
    removed, added = _changed_lines(text, edited)
    assert [line.split("#")[0].rstrip() for line in added] == [
        "    learning_rate: 0.01",
        "    hidden_sizes: [64, 32]",
        "    class_weight: balanced",
    ]
    assert len(removed) == 3


def test_a_comment_after_train_colon_is_no_obstacle(tmp_path):
    text = REAL.replace("\ntrain:\n", "\ntrain:  # what the train stage fits\n", 1)
    path = _file(tmp_path, text)
    write_back(path, {"dropout": 0.15, "learning_rate": 1e-05})
    _same_except_train(path, {"dropout": 0.15, "learning_rate": 1e-05})
    assert "train:  # what the train stage fits\n" in path.read_text()


def test_a_key_the_file_lacks_is_added_to_train(tmp_path):
    text = REAL.replace("  gradient_clip_val: 0.0               # max gradient norm; 0 = off\n", "", 1)
    assert "gradient_clip_val" not in text, "the file must lack the key before write_back"
    path = _file(tmp_path, text)
    write_back(path, {"gradient_clip_val": 1.5})
    _same_except_train(path, {"gradient_clip_val": 1.5})


def test_invalid_yaml_or_values_are_config_errors_naming_the_file_and_leave_it_alone(tmp_path):
    broken = _file(tmp_path, REAL.replace("  dropout: 0.3\n", "  dropout: [0.3\n", 1))
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        write_back(broken, {"dropout": 0.1})

    twice = REAL.replace("  dropout: 0.3\n", "  dropout: 0.3\n  dropout: 0.2\n", 1)  # PyYAML takes the last
    path = _file(tmp_path, twice)
    with pytest.raises(ConfigError, match=rf"(?s){path}: .*duplicate key \"dropout\""):
        write_back(path, {"dropout": 0.1})
    assert path.read_text() == twice

    path = _file(tmp_path, REAL)
    with pytest.raises(ConfigError, match=r"train\.dropout"):
        write_back(path, {"dropout": 2.0})
    assert path.read_text() == REAL
