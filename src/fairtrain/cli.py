"""``fairtrain``: what users do with registered models outside ``dvc repro``.

    fairtrain champion                 the champion, its lineage and test metrics
    fairtrain versions                 every version with its aliases and gate decision
    fairtrain compare 3 @champion      two versions' metrics and fairness side by side
    fairtrain promote 4                make version 4 champion (gates must have passed)
    fairtrain promote --rollback       swap champion and previous-champion (same gate rule)
    fairtrain predict rows.csv         score raw rows with the champion (or --model URI)
    fairtrain drift --batch new.csv    compare a new batch with the training reference statistics
    fairtrain append-batch new.csv     validate a batch and append it to dataset.path (for retraining)

Every command takes ``--json`` (before or after it) for machine-readable output. Exit codes:
0 success, 1 a problem with the request or the registry (message on stderr), 2 bad usage;
``drift`` exits 0 when no retraining is needed and 3 when the batch drifted enough to retrain.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import load_params
from fairtrain.errors import FairtrainError, TrackingError
from fairtrain.io import atomic_path
from fairtrain.registry import promotion

LINEAGE_TAGS = (
    "git_commit",
    "git_dirty",
    "data_path",
    "data_sha256",
    "params_sha256",
    "dvc_model_md5",
    "mlflow_run_id",
    "ray_num_workers",
    "python",
    "lightning_package",
    "gate_decision",
    "gate_summary",
    "promotion",
    "last_checked",
)
COMPARED_PREFIXES = ("test_", "fairness/", "best_val_")
EXIT_DRIFT = 3
# The CLI writes no pipeline outputs: tracking's advice about `dvc repro` does not apply.
SERVER_DOWN_ADVICE = (
    f"Check that the server runs and that ${tracking.TRACKING_URI_ENV} names it, then run the command "
    f"again (or unset {tracking.TRACKING_URI_ENV} to use the local store instead)."
)
# The columns the served model returns (FairtrainModel.predict), for a model whose signature
# does not list them.
PREDICTION_COLUMNS = ("probability", "label")
# The aliases in the order a user reads them; any other alias follows, sorted.
ALIAS_ORDER = (promotion.CHAMPION, promotion.CHALLENGER, promotion.PREVIOUS_CHAMPION)
MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?")


def _model_name(args: argparse.Namespace) -> str:
    if args.model_name:
        return args.model_name
    if args.params.exists():
        return load_params(args.params).registry.model_name
    raise TrackingError(f"no --model-name given and no {args.params} to read register.model_name from")


def _number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 4, 7] → "1-4, 7"."""
    ranges: list[list[int]] = []
    for number in sorted(numbers):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _what_exists(client: MlflowClient, name: str) -> str:
    """The model's versions and aliases, for an error about one that does not exist: "it has
    versions 1-4 and aliases champion (v2), challenger (v4)"."""
    try:
        numbers = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
        aliases = client.get_registered_model(name).aliases if numbers else {}
    except MlflowException:
        return "its versions could not be listed"
    if not numbers:
        return "it has no versions (none is registered under this name)"
    order = {alias: i for i, alias in enumerate(ALIAS_ORDER)}
    named = sorted(aliases.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    listed = ", ".join(f"{alias} (v{number})" for alias, number in named)
    return f"it has version{'s' if len(numbers) > 1 else ''} {_number_ranges(numbers)} and " + (
        f"alias{'es' if len(named) > 1 else ''} {listed}" if named else "no aliases"
    )


def _resolve(client: MlflowClient, name: str, spec: str) -> ModelVersion:
    """A version number ("3") or an alias ("@champion" or "champion")."""
    try:
        if spec.lstrip("@").isdigit():
            return client.get_model_version(name, spec.lstrip("@"))
        return client.get_model_version_by_alias(name, spec.lstrip("@"))
    except MlflowException as error:
        if error.error_code not in tracking.ABSENT_CODES:  # a server error says so itself
            raise
        raise TrackingError(
            f"model {name!r} has no version or alias {spec!r}; {_what_exists(client, name)}"
        ) from None


def _describe(client: MlflowClient, version: ModelVersion) -> dict:
    metrics = client.get_run(version.run_id).data.metrics
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": sorted(version.aliases),
        "run_id": version.run_id,
        "created": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC").isoformat(),
        # The library versions (`version.torch`, ...) after the named tags, sorted.
        "lineage": {k: version.tags[k] for k in LINEAGE_TAGS if k in version.tags}
        | {k: v for k, v in sorted(version.tags.items()) if k.startswith("version.")},
        "test_metrics": {k[len("test_") :]: v for k, v in sorted(metrics.items()) if k.startswith("test_")},
    }


def _emit(args: argparse.Namespace, payload: object, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def cmd_champion(args: argparse.Namespace, client: MlflowClient) -> None:
    name = _model_name(args)
    champion = promotion.version_by_alias(client, name, promotion.CHAMPION)
    if champion is None:
        raise TrackingError(f"model {name!r} has no champion yet (run the pipeline, or `fairtrain promote`)")
    info = _describe(client, champion)
    lines = [
        f"{name} v{info['version']} ({', '.join(info['aliases'])}), run {info['run_id']}, {info['created']}"
    ]
    lines += [f"  {k}: {v}" for k, v in info["lineage"].items()]
    lines += [f"  test {k}: {v:.4f}" for k, v in info["test_metrics"].items()]
    _emit(args, info, "\n".join(lines))


def cmd_versions(args: argparse.Namespace, client: MlflowClient) -> None:
    name = _model_name(args)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    # search_model_versions leaves `aliases` empty; the registered model holds the mapping.
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    rows = [
        {
            "version": str(v.version),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "run_id": v.run_id,
            "gate_decision": v.tags.get("gate_decision", ""),
            "promotion": v.tags.get("promotion", ""),
        }
        for v in versions
    ]
    text = (
        "\n".join(
            f"v{r['version']:<4} {','.join(r['aliases']) or '-':<32} gates {r['gate_decision'] or '?':<7} "
            f"{r['promotion']}"
            for r in rows
        )
        or f"model {name!r} has no versions"
    )
    _emit(args, rows, text)


def cmd_compare(args: argparse.Namespace, client: MlflowClient) -> None:
    name = _model_name(args)
    left, right = _resolve(client, name, args.first), _resolve(client, name, args.second)
    metrics = [client.get_run(v.run_id).data.metrics for v in (left, right)]
    keys = sorted(
        k
        for k in set(metrics[0]) | set(metrics[1])
        if k.startswith(COMPARED_PREFIXES) or (args.groups and k.startswith("group/"))
    )
    rows = [
        {
            "metric": k,
            "a": metrics[0].get(k),
            "b": metrics[1].get(k),
            "b_minus_a": None
            if k not in metrics[0] or k not in metrics[1]
            else metrics[1][k] - metrics[0][k],
        }
        for k in keys
    ]
    a, b = f"v{left.version}", f"v{right.version}"
    # The difference in the user's own terms: `compare @champion 3` shows "3 - @champion".
    difference = f"{args.second} - {args.first}"
    width, last = max([len(r["metric"]) for r in rows] + [6]), max(len(difference), 8)

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    text = "\n".join(
        [f"{'metric':<{width}}  {a:>8}  {b:>8}  {difference:>{last}}"]
        + [
            f"{r['metric']:<{width}}  {cell(r['a']):>8}  {cell(r['b']):>8}  {cell(r['b_minus_a']):>{last}}"
            for r in rows
        ]
    )
    _emit(args, {"a": _describe(client, left), "b": _describe(client, right), "metrics": rows}, text)


def cmd_promote(args: argparse.Namespace, client: MlflowClient) -> None:
    name = _model_name(args)
    if args.rollback:
        champion, demoted = promotion.rollback(client, name, force=args.force)
        result = {"champion": champion, "previous_champion": demoted, "action": "rollback"}
        _emit(args, result, f"{name}: champion is now v{champion} (rolled back from v{demoted})")
        return
    target = _resolve(client, name, args.version)
    current = promotion.version_by_alias(client, name, promotion.CHAMPION)
    if current is not None and str(current.version) == str(target.version):
        # Nothing moves (make_champion leaves the aliases and tags alone): say so, gates or not.
        result = {"champion": str(target.version), "previous_champion": None, "action": "none"}
        _emit(args, result, f"{name}: v{target.version} is already champion; nothing changed")
        return
    gates_passed = promotion.gates_passed(name, target, args.force, "promote it")
    # The reason says "forced" only when --force overrode something: a reviewer reads it.
    reason = "manual promotion" + ("" if gates_passed else " (forced past failed gates)")
    replaced = promotion.make_champion(client, name, str(target.version), reason)
    result = {"champion": str(target.version), "previous_champion": replaced, "action": "promote"}
    _emit(
        args,
        result,
        f"{name}: champion is now v{target.version}"
        + (f" (previous champion v{replaced})" if replaced else ""),
    )


def check_output_path(option: str, path: Path) -> None:
    """Refuse an output path that cannot be written, before any work is done for it.

    Missing folders are created when the file is written (as every pipeline stage does, and
    ``drift --report``); a path that is a folder, or runs through a file, is an error."""
    if path.is_dir():
        raise FairtrainError(f"{option} {path}: is a folder; expected a file path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FairtrainError(
            f"{option} {path}: {ancestor} is a file, not a folder; expected a path in a folder"
        )


def _pinned(client: MlflowClient, uri: str) -> str:
    """``models:/name@alias`` as ``models:/name/N``: the signature is checked and the rows are
    scored in two steps, and a promotion between them must not swap the model. Other URIs as
    given; an alias or version that does not exist is refused with what does."""
    match = MODELS_URI.fullmatch(uri)
    if match is None:
        return uri
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"]).version
        else:
            version = client.get_model_version(match["name"], match["version"]).version
    except MlflowException as error:
        if error.error_code not in tracking.ABSENT_CODES:
            raise
        what = f"version {match['version']}" if match["version"] else f"alias {match['alias']!r}"
        raise TrackingError(
            f"{uri}: model {match['name']!r} has no {what}; {_what_exists(client, match['name'])}"
        ) from None
    return f"models:/{match['name']}/{version}"


def _model_columns(uri: str) -> tuple[list[str] | None, list[str]]:
    """The input columns the model at ``uri`` requires (None when its signature does not name
    them) and the columns it returns, from its MLmodel file alone (no model code runs)."""
    from mlflow.models import get_model_info

    try:
        signature = get_model_info(uri).signature
    except MlflowException as error:
        raise TrackingError(
            f"{uri}: cannot load the model: {error.message.strip().splitlines()[0]}"
        ) from None
    except Exception as error:  # a store MLflow cannot reach from here (s3:// without boto3, ...)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise TrackingError(f"{uri}: cannot load the model: {type(error).__name__}: {first_line}") from None
    if signature is None:
        return None, list(PREDICTION_COLUMNS)
    inputs, outputs = signature.inputs, signature.outputs
    required = (
        [spec.name for spec in inputs.inputs if getattr(spec, "required", True)]
        if inputs.has_input_names()
        else None
    )
    returned = outputs.input_names() if outputs is not None and outputs.has_input_names() else None
    return required, [str(c) for c in returned or PREDICTION_COLUMNS]


def cmd_predict(args: argparse.Namespace, client: MlflowClient) -> None:
    from fairtrain.data.loading import read_raw_table, require_file
    from fairtrain.scoring import RowsRefused, score_with_its_own_code

    uri = args.model or f"models:/{_model_name(args)}@{promotion.CHAMPION}"
    if args.output:  # before any scoring work
        check_output_path("--output", args.output)
    require_file(args.input, "a CSV or Parquet file of raw rows")
    uri = _pinned(client, uri)
    required, returned = _model_columns(uri)
    # The pipeline's reader: every CSV cell as written ("NA", "None", "" are data, "02139"
    # keeps its zero) and left to the model's preprocessing, as in validate and prepare. Plain
    # pd.read_csv made those NaN or numbers, so the same file scored differently here.
    rows = read_raw_table(args.input)
    if rows.empty:
        raise FairtrainError(f"{args.input}: the file has no rows, only column names; expected rows to score")
    # The rows go out beside the predictions (unless --json alone prints the predictions only):
    # a second `label` column would make the output ambiguous.
    clashing = [c for c in returned if c in rows.columns]
    if clashing and (args.output or not args.json):
        raise FairtrainError(
            f"{args.input}: has column(s) {clashing}, which predict adds to the output "
            f"({', '.join(returned)}); rename or drop them in the input"
        )
    # Columns the model does not use (dropped ones, the label) are fine: raw rows go as they are.
    missing = [c for c in required or [] if c not in rows.columns]
    if missing:
        raise FairtrainError(
            f"{args.input}: missing column(s) {missing} that the model needs; "
            f"it expects: {', '.join(required or [])}"
        )
    # In a child Python: this process has imported fairtrain, so loading the model here would
    # score it with the checkout's code instead of the code it was registered with.
    try:
        predictions = score_with_its_own_code(uri, rows)
    except RowsRefused as error:  # the rows' fault, not the model's: name the file
        raise FairtrainError(f"{args.input}: {str(error).strip()}") from None
    except RuntimeError as error:
        raise TrackingError(f"{uri}: the model could not score the rows: {error}") from None
    scored = pd.concat([rows.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)
    if args.output:  # the file is written whether or not --json also prints the predictions
        try:
            with atomic_path(args.output) as tmp:  # no half-written file, an earlier one survives
                scored.to_csv(tmp, index=False)
        except OSError as error:
            raise FairtrainError(f"--output {args.output}: cannot write the scored rows: {error}") from None
        print(f"{len(scored)} rows scored by {uri} → {args.output}", file=sys.stderr)
    if args.json:
        print(predictions.to_json(orient="records"))
    elif not args.output:
        scored.to_csv(sys.stdout, index=False)


def cmd_drift(args: argparse.Namespace) -> int:
    from fairtrain.data.loading import require_file
    from fairtrain.monitoring.drift import RETRAIN
    from fairtrain.monitoring.drift_report import run_drift_check

    for option, path in (("--report", args.report), ("--html", args.html)):
        if path:
            check_output_path(option, path)
    # The batch the user named is checked first: a missing reference (a fresh clone before
    # `dvc pull`) would otherwise be reported instead.
    require_file(args.batch, "a CSV or Parquet file like dataset.path")
    report = run_drift_check(load_params(args.params), args.batch, args.reference, args.report, args.html)
    text = "\n".join(
        [f"decision: {report['decision']} — {report['reason']}"]
        + [
            f"  DRIFT {c['kind']:<16} {c['column']:<32} {c['value']:.4f} > {c['threshold']}"
            for c in report["checks"]
            if c["drifted"]
        ]
    )
    _emit(args, report, text)
    return EXIT_DRIFT if report["decision"] == RETRAIN else 0


def cmd_append_batch(args: argparse.Namespace) -> int:
    from fairtrain.monitoring.batches import BatchAlreadyAppended, append_batch

    params = load_params(args.params)
    schema = params.dataset
    try:
        rows = append_batch(schema.path, args.batch, schema, params.validation)
    except BatchAlreadyAppended as repeat:
        # Not an error: rerunning a retraining after a failure, or a batch delivered twice,
        # must not duplicate rows, and must not fail the run either.
        _emit(args, {"dataset": schema.path, "skipped": str(repeat)}, f"{repeat}; nothing changed")
        return 0
    _emit(args, {"dataset": schema.path, "rows": rows}, f"{schema.path}: {rows} rows")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairtrain",
        # The docstring's ``literals`` are markup for Sphinx; a terminal shows plain text.
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="parameters file: register.model_name for the registry commands; dataset, validate "
        "and drift settings for drift and append-batch (default: params.yaml)",
    )
    parser.add_argument("--model-name", help="registered model name (default: from params)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # Also after the command (`fairtrain versions --json`). SUPPRESS: without it there, the
    # subcommand's default would overwrite a `fairtrain --json versions`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("champion", parents=[common], help="show the champion and its lineage").set_defaults(
        run=cmd_champion
    )
    commands.add_parser(
        "versions", parents=[common], help="list versions, aliases, gate decisions"
    ).set_defaults(run=cmd_versions)
    compare = commands.add_parser("compare", parents=[common], help="two versions side by side")
    compare.add_argument("first", help="version number or alias (e.g. 3, @champion)")
    compare.add_argument("second", help="version number or alias")
    compare.add_argument("--groups", action="store_true", help="include every per-group metric")
    compare.set_defaults(run=cmd_compare)
    promote = commands.add_parser("promote", parents=[common], help="promote a version or roll back")
    # Exactly one of the two: argparse refuses both or neither with promote's usage, exit 2.
    target = promote.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="version number or alias to make champion")
    target.add_argument("--rollback", action="store_true", help="swap champion and previous-champion")
    promote.add_argument(
        "--force", action="store_true", help="promote (or roll back to) a version even if its gates failed"
    )
    promote.set_defaults(run=cmd_promote)
    predict = commands.add_parser("predict", parents=[common], help="score a CSV (or Parquet) of raw rows")
    predict.add_argument(
        "input", type=Path, help="CSV (.csv, .csv.gz) or Parquet file with the model's raw input columns"
    )
    predict.add_argument("--model", help="model URI (default: models:/<name>@champion)")
    predict.add_argument(
        "--output",
        type=Path,
        help="write rows + predictions as CSV to this file, creating missing folders (default: "
        "stdout); with --json the predictions are also printed as JSON",
    )
    predict.set_defaults(run=cmd_predict)
    drift = commands.add_parser(
        "drift", parents=[common], help="check a new batch for drift; exit 3 when retraining is advised"
    )
    drift.add_argument("--batch", type=Path, required=True, help="CSV or Parquet file like dataset.path")
    drift.add_argument(
        "--reference",
        type=Path,
        default=Path("data/reference_stats.json"),
        help="reference statistics written by the prepare stage (default: %(default)s)",
    )
    drift.add_argument("--report", type=Path, help="write the report as JSON here")
    drift.add_argument("--html", type=Path, help="write the report as an HTML page here")
    # Drift needs no tracking store: it must not create mlflow.db where it runs.
    drift.set_defaults(run=None, local=cmd_drift)
    append = commands.add_parser(
        "append-batch", parents=[common], help="validate a batch and append it to dataset.path"
    )
    append.add_argument("batch", type=Path, help="CSV or Parquet file like dataset.path")
    append.set_defaults(run=None, local=cmd_append_batch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is None:
            return args.local(args)
        tracking.configure_client(unreachable_advice=SERVER_DOWN_ADVICE)
        args.run(args, MlflowClient())
    except FairtrainError as error:
        print(f"fairtrain {args.command}: error: {error}", file=sys.stderr)
        return 1
    except MlflowException as error:
        print(f"fairtrain {args.command}: error: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
