#!/usr/bin/env bash
# Scheduled retraining, the same on a laptop and in CI (.github/workflows/retrain.yml):
#
#   dvc pull → fairtrain drift on the new batch → when it drifted (or --force): append the batch to
#   dataset.path (once: a batch already appended is skipped), dvc repro (when it fails, the
#   dataset is put back), dvc push, commit → publish the model card and the drift report
#
# Usage: scripts/retrain.sh [--batch FILE] [--force] [--out DIR] [--no-push] [--no-commit]
#
# Run it from the project root with the project's environment on PATH (`source .venv/bin/activate`).
# MLflow logging goes where MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_USERNAME/PASSWORD) points, the
# local SQLite store otherwise; DVC uses the default remote of .dvc/config (+ .dvc/config.local).
#
# Writes to DIR (default retrain-out/): decision.json, drift.json + drift.html (when a batch was
# checked), model_card.md + model_card.html (when the project has them), summary.md. Appends the
# summary and the card to $GITHUB_STEP_SUMMARY and `decision=` / `retrained=` to $GITHUB_OUTPUT
# when those are set. Exit status: 0 whether or not it retrained (decision.json says which),
# non-zero when a step failed (bad batch, failed stage, unreachable remote or tracking server).
set -euo pipefail

batch="" force=false out="retrain-out" push=true commit=true
# The value of option $1, which must follow it ($2): a missing one is bad usage (exit 2), not
# bash's "unbound variable" from `set -u`.
value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] || { echo "retrain.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) value "$@"; batch="$2"; shift 2 ;;
    --force) force=true; shift ;;
    --out) value "$@"; out="$2"; shift 2 ;;
    --no-push) push=false; shift ;;
    --no-commit) commit=false; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "retrain.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -z "$batch" ] || [ -f "$batch" ] || { echo "retrain.sh: batch $batch not found" >&2; exit 2; }
mkdir -p "$out"
rm -f "$out/decision.json" "$out/drift.json" "$out/drift.html" "$out/summary.md" "$out"/model_card.*
say() { echo "retrain.sh: $*" >&2; }

# On any exit while $backup is set (a failed or stopped `dvc repro` after the append).
restore_dataset() {
  [ -n "${backup:-}" ] || return 0
  if [ -f models/registered.json ] && ! cmp -s "$backup/registered" models/registered.json; then
    say "dvc repro did not finish, but a model trained on the appended rows was registered: $dataset keeps them"
  else
    cp -p "$backup/dataset" "$dataset"
    if [ -f "$backup/ledger" ]; then cp -p "$backup/ledger" "$dataset.batches.json"; else rm -f "$dataset.batches.json"; fi
    say "dvc repro did not finish: $dataset is back as it was before the batch was appended"
  fi
  rm -rf "$backup"
}

# 1. What the last run produced (reference statistics, splits, model) from the DVC remote. On a
#    first run the remote may be empty: what is missing is rebuilt by dvc repro below.
say "pulling outputs from the DVC remote"
dvc pull --allow-missing || { say "dvc pull failed"; exit 1; }

# 2. Drift check of the new batch against the training split's reference statistics.
drift_status=none
if [ -n "$batch" ]; then
  if [ ! -f data/reference_stats.json ]; then
    say "no reference statistics yet: building them (dvc repro prepare)"
    dvc repro prepare
  fi
  set +e
  fairtrain drift --batch "$batch" --report "$out/drift.json" --html "$out/drift.html"
  code=$?
  set -e
  case $code in
    0) drift_status=no_drift ;;
    3) drift_status=drift ;;
    *) say "drift check failed (exit $code)"; exit "$code" ;;
  esac
fi

# 3. Retrain when the batch drifted or when asked to.
retrained=false
if [ "$drift_status" = drift ] || [ "$force" = true ]; then
  decision=retrain
  if [ "$force" = true ]; then reason="forced"; else reason="the batch drifted"; fi
  backup=""
  if [ -n "$batch" ]; then
    # Kept until dvc repro succeeds: a retraining that fails or is stopped puts the dataset
    # (and its ledger of appended batches) back as they were, so data/raw holds only rows a
    # model was trained on. Not once a model trained on them was registered (register
    # rewrote models/registered.json): that version's data hash names these rows.
    dataset=$(python -c 'import sys; from fairtrain.config import load_params; print(load_params(sys.argv[1]).dataset.path)' params.yaml)
    backup=$(mktemp -d "${TMPDIR:-/tmp}/fairtrain-retrain.XXXXXX")
    cp -p "$dataset" "$backup/dataset"
    if [ -f "$dataset.batches.json" ]; then cp -p "$dataset.batches.json" "$backup/ledger"; fi
    if [ -f models/registered.json ]; then cp -p models/registered.json "$backup/registered"; fi
    trap restore_dataset EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    fairtrain append-batch "$batch"   # the new rows become part of the training data (once)
  fi
  say "retraining ($reason): dvc repro"
  dvc repro || { say "dvc repro failed"; exit 1; }
  [ -z "$backup" ] || rm -rf "$backup"
  backup=""
  retrained=true
  if [ "$push" = true ]; then
    say "pushing outputs to the DVC remote"
    dvc push
  fi
  if [ "$commit" = true ] && git rev-parse --git-dir >/dev/null 2>&1; then
    # What `git checkout <commit> && dvc pull` needs to get this model back.
    git add -A -- dvc.lock dvc.yaml params.yaml data metrics plots reports models 2>/dev/null || true
    if ! git diff --cached --quiet; then
      git commit -q -m "Retrain: $reason${batch:+ (batch $(basename "$batch"))}"
      say "committed $(git rev-parse --short HEAD); push it to keep the lineage"
    fi
  fi
else
  decision=no_retrain
  if [ -n "$batch" ]; then reason="the batch did not drift"; else reason="no batch given and not forced"; fi
fi

# 4. Publish: decision, drift report, model card.
for card in reports/model_card.md reports/model_card.html; do
  if [ -f "$card" ]; then cp "$card" "$out/"; fi
done
python - "$out" "$decision" "$reason" "$retrained" "$drift_status" "${batch:-}" <<'PY'
import json, os, sys
out, decision, reason, retrained, drift_status, batch = sys.argv[1:]
record = {"decision": decision, "reason": reason, "retrained": retrained == "true",
          "drift": drift_status, "batch": batch or None}
lines = [f"## Retraining: {decision.replace('_', ' ')}", "", f"Reason: {reason}."]
if os.path.exists(f"{out}/drift.json"):
    with open(f"{out}/drift.json") as handle:
        report = json.load(handle)
    record.update(drift_reason=report["reason"], drifted_checks=report["drifted_checks"])
    lines += ["", f"Drift check: {report['reason']}."]
if os.path.exists(f"{out}/model_card.md"):
    # Without a retraining the card is the workspace's: the last model the pipeline trained,
    # which is not the champion when its promotion was refused.
    which = "model just trained" if retrained == "true" else "last model trained (its registry status is in the card)"
    lines += ["", f"Model card of the {which}: `model_card.html` in the artifact, Markdown below."]
with open(f"{out}/decision.json", "w") as handle:
    json.dump(record, handle, indent=2)
with open(f"{out}/summary.md", "w") as handle:
    handle.write("\n".join(lines) + "\n")
PY
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
  if [ -f "$out/model_card.md" ]; then { echo; cat "$out/model_card.md"; } >> "$GITHUB_STEP_SUMMARY"; fi
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "decision=$decision"; echo "retrained=$retrained"; } >> "$GITHUB_OUTPUT"
fi
say "decision: $decision ($reason); outputs in $out/"
