"""Editing params.yaml in place: setting train keys (``pipelines/tune.py --write-params``)
while keeping the file's comments, layout and indentation, and checking the result reads back
as intended before it replaces the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairtrain.errors import ConfigError


def write_back(params_path: Path, overrides: dict[str, Any]) -> None:
    """Set ``train.<key>: value`` in params.yaml for each override, keeping comments and
    layout: a ruamel.yaml round trip (a new key goes at the end of ``train:``; a list keeps
    the flow or block style of the one it replaces), with the file's own indentation. The
    edited text must load (with PyYAML, as every stage loads params) to the old parameters
    with exactly these train keys changed, and be valid, before it atomically replaces the
    file; otherwise a ``ConfigError`` names the file and the key, and the file is unchanged.
    (Ruamel writes the whole file with one indentation, so a file that mixes indentations
    may come back with the other sections re-indented: same values, checked as above.)"""
    import copy
    import io

    import yaml
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError as RuamelError
    from ruamel.yaml.util import load_yaml_guess_indent

    from fairtrain.config import params_from_dict
    from fairtrain.io import write_text

    params_path = Path(params_path)
    try:
        text = params_path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{params_path}: cannot read the parameters file: {error}") from None
    try:
        before = yaml.safe_load(text)
        _, sequence_indent, dash_offset = load_yaml_guess_indent(text)
        editor = _round_trip_yaml()
        document = editor.load(text)
    except (yaml.YAMLError, RuamelError) as error:
        why = str(error).split("\n\nTo suppress")[0]  # ruamel's advice on duplicate keys does not apply
        raise ConfigError(
            f"{params_path}: not valid YAML (or a key given twice), so the best train keys were "
            f"not written: {why}"
        ) from None
    if not isinstance(document, CommentedMap) or not isinstance(before, dict):
        raise ConfigError(f"{params_path}: expected a mapping at the top level")
    train = document.get("train")
    if train is None:
        train = document["train"] = CommentedMap()
    if not isinstance(train, CommentedMap):
        raise ConfigError(f"{params_path}: train is not a mapping, so the best train keys were not written")
    # ruamel writes the whole document with one indentation: the train section's own (the
    # column of its first key), and for block lists the file's (guessed from its first one).
    mapping_indent = train.lc.key(next(iter(train)))[1] if train and not train.fa.flow_style() else 2
    if dash_offset is None or sequence_indent is None:
        sequence_indent, dash_offset = mapping_indent, 0
    editor.indent(mapping=mapping_indent, sequence=sequence_indent, offset=dash_offset)
    for key, value in overrides.items():
        if isinstance(value, list | tuple):
            old = train.get(key)
            value = CommentedSeq(value)
            if isinstance(old, CommentedSeq) and not old.fa.flow_style():
                value.fa.set_block_style()
            else:
                value.fa.set_flow_style()
        train[key] = value
    out = io.StringIO()
    editor.dump(document, out)
    edited = out.getvalue()

    # What every stage will read: PyYAML, then validation.
    expected = copy.deepcopy(before)
    expected["train"] = {**(expected.get("train") or {}), **{k: _plain(v) for k, v in overrides.items()}}
    try:
        after = yaml.safe_load(edited)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"{params_path}: the edited file would not be valid YAML ({error}); left unchanged"
        ) from None
    wrong = [k for k in overrides if (after.get("train") or {}).get(k) != expected["train"][k]]
    if wrong or after != expected:
        where = (
            ", ".join(f"train.{k} would read {(after.get('train') or {}).get(k)!r}" for k in wrong)
            if wrong
            else "other keys would change too"
        )
        raise ConfigError(
            f"{params_path}: writing {overrides} did not give the expected file ({where}); left unchanged"
        )
    params_from_dict(after, source=str(params_path))  # still valid
    write_text(params_path, edited)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _round_trip_yaml() -> Any:
    """A ruamel.yaml round-trip loader and dumper whose new values PyYAML reads back alike: a
    float as PyYAML writes it (``1.0e-05``; ruamel's ``1e-05`` is a string to PyYAML) and
    ``null`` written out (ruamel leaves an empty value). Values read from the file keep their
    text."""
    import yaml
    from ruamel.yaml import YAML

    editor = YAML(typ="rt")
    editor.preserve_quotes = True
    editor.width = 4096  # never re-wrap a line

    def represent_float(representer: Any, data: float) -> Any:
        text = yaml.safe_dump(data).strip().removesuffix("...").strip()
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    def represent_none(representer: Any, data: None) -> Any:
        return representer.represent_scalar("tag:yaml.org,2002:null", "null")

    editor.representer.add_representer(float, represent_float)
    editor.representer.add_representer(type(None), represent_none)
    return editor
