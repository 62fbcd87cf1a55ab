"""lineage.git_state: a version's git_dirty says whether code or params differed from the
commit, not whether the pipeline's own outputs (tracked in git) were being rewritten."""

from __future__ import annotations

import subprocess

from fairtrain.registry.lineage import git_state

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
ENV |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin"}


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, env=ENV, check=True, capture_output=True)


def test_rewritten_pipeline_outputs_are_not_dirty_but_code_and_params_are(tmp_path):
    for name in ("params.yaml", "src/model.py", "models/registered.json", "metrics/evaluation.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("committed\n")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "project")
    assert git_state(tmp_path)["git_dirty"] == "false"

    (tmp_path / "models/registered.json").unlink()  # `make clean`, then register rewrites it
    (tmp_path / "metrics/evaluation.json").write_text("new run\n")
    assert git_state(tmp_path)["git_dirty"] == "false"

    (tmp_path / "params.yaml").write_text("changed\n")
    assert git_state(tmp_path)["git_dirty"] == "true"


def test_the_dvc_folder_hash_is_the_one_dvc_records(tmp_path):
    """dvc_dir_md5 reproduces the hash real DVC gives a folder output (`dvc add` here; a
    stage's out in dvc.lock is hashed the same way), nested files included."""
    import os
    import sys

    import yaml

    from fairtrain.registry.lineage import dvc_dir_md5

    model = tmp_path / "models" / "model"
    (model / "nested").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (model / "architecture.json").write_text('{"hidden_sizes": [8]}\n')
    (model / "nested" / "b.txt").write_text("line\r\n")
    env = {**os.environ, **ENV, "PATH": f"{os.path.dirname(sys.executable)}:{ENV['PATH']}"}
    _git(tmp_path, "init", "-q", "-b", "main")
    for command in (["dvc", "init", "-q"], ["dvc", "add", "-q", "models/model"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    recorded = yaml.safe_load((tmp_path / "models/model.dvc").read_text())["outs"][0]["md5"]
    assert recorded.endswith(".dir")
    assert dvc_dir_md5(model) == recorded
