"""The team tracking stack in infra/mlflow, checked as far as this machine allows.

Docker cannot run containers here, so the stack itself never starts in these tests. What is
checked instead: the compose file's structure and security properties (loopback-only ports,
credentials without defaults, basic auth, healthchecks, named volumes); the compose-spec JSON
schema (vendored by ``check-jsonschema``) and ``docker compose config`` where either is
installed; the server command against MLflow's own CLI parser; the entrypoint's basic-auth
config against MLflow's own reader; and (slow) the basic-auth flow the README documents,
against a real ``mlflow server --app-name basic-auth`` with SQLite standing in for PostgreSQL.

Then the rest of infra/ and what feeds it: the ``ray up`` cluster (Ray's own schema and config
checks, workers enough for ``train.num_workers``, ``.git`` synced, the tracking server and DVC
remote from a file outside the repo, the head's setup run with a stand-in dvc); the KubeRay
RayJob (CRD subset, Kubernetes schemas, the entrypoint run as the head runs it, the image pinned
to a commit, token auth, the NetworkPolicy); the images' recipes and pins (the project image, the
tracking server's base image and constraints against requirements.lock); the top-level
.dockerignore under Docker's matching rules; and which steps of the retraining workflow get
which secret.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import requests
import yaml

from tests.helpers import PROJECT_ROOT, undo_mlflow_state_with
from tests.integration.servers import free_port, running_server

STACK = PROJECT_ROOT / "infra/mlflow"
COMPOSE = STACK / "docker-compose.yml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
# Variable names that hold a credential: they must be required, never defaulted.
CREDENTIAL = re.compile(r"PASSWORD|SECRET|USER(NAME)?$|ACCESS_KEY")
# Dummy values for every required variable, for the checks that need a resolved file.
DUMMY_ENV = {
    "POSTGRES_USER": "mlflow",
    "POSTGRES_PASSWORD": "dummy-postgres-password",
    "MINIO_ROOT_USER": "minio-admin",
    "MINIO_ROOT_PASSWORD": "dummy-minio-password",
    "MLFLOW_S3_ACCESS_KEY": "mlflow-artifacts",
    "MLFLOW_S3_SECRET_KEY": "dummy-s3-secret",
    "MLFLOW_ADMIN_USERNAME": "admin",
    "MLFLOW_ADMIN_PASSWORD": "dummy-admin-password",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "dummy-flask-secret",
}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation (the subset the file uses), failing like compose does."""

    def replace(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":-", "-"):
            return value if value not in (None, "") or (op == "-" and value is not None) else arg
        return value or ""

    return INTERPOLATION.sub(replace, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def raw_text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw_text) -> dict:
    return yaml.safe_load(interpolate(raw_text, DUMMY_ENV))


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlflow_stack_entrypoint", STACK / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entrypoint_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "POSTGRES_USER": "mlflow",
        "POSTGRES_PASSWORD": "p@ss:w/rd#%?&=",
        "POSTGRES_DB": "mlflow",
        "POSTGRES_HOST": "postgres",
        "MLFLOW_AUTH_DB": "mlflow_auth",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth/basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "an-admin-password-long-enough",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-flask-secret",
    }
    env.update(overrides)
    return env


# --- the compose file -------------------------------------------------------------------


def test_services_volumes_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "mlflow"}
    assert set(compose["volumes"]) == {"postgres-data", "minio-data"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name}: {source} is not a named volume"
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    for name in ("postgres", "minio", "mlflow"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 3 and check["interval"], name
    # Files the services mount or build from exist.
    for path in ("Dockerfile", "entrypoint.py", "minio-init.sh", "postgres-init/10-create-auth-db.sh"):
        assert (STACK / path).is_file(), path


def test_published_ports_bind_loopback_only(compose):
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host = port.get("host_ip")
            else:
                parts = str(port).rsplit(":", 2)
                host = parts[0] if len(parts) == 3 else None
            assert host == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
            published.append(name)
    # Only the MLflow server and MinIO's console; PostgreSQL and the S3 API stay internal.
    assert sorted(published) == ["minio", "mlflow"]
    assert compose["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]


def test_every_credential_is_required_without_default(raw_text):
    uses = [m for m in INTERPOLATION.finditer(raw_text) if not raw_text[: m.start()].endswith("$")]
    credentials = [m for m in uses if CREDENTIAL.search(m["name"])]
    assert {m["name"] for m in credentials} == set(DUMMY_ENV)
    for match in credentials:
        assert match["op"] == ":?", f"{match[0]} must use ${{{match['name']}:?message}}"
        assert match["arg"].strip(), f"{match[0]} needs a message saying what to set"
    # No literal secret sits in any credential-like environment entry either.
    for name, service in yaml.safe_load(raw_text)["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if CREDENTIAL.search(key):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}.{key} = {value!r} is not from the env"


def test_missing_credential_fails_loudly(raw_text):
    for name in DUMMY_ENV:
        env = {k: v for k, v in DUMMY_ENV.items() if k != name}
        with pytest.raises(KeyError, match=f"required variable {name} is missing a value: set {name}"):
            interpolate(raw_text, env)
        with pytest.raises(KeyError, match=name):
            interpolate(raw_text, {**env, name: ""})


def test_mlflow_server_uses_basic_auth_and_proxied_s3_artifacts(compose):
    from click import Context
    from mlflow.cli import server

    mlflow_service = compose["services"]["mlflow"]
    command = mlflow_service["command"]
    assert command[:2] == ["mlflow", "server"]
    args = command[2:]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert args[args.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts"
    assert "--serve-artifacts" in args
    # MLflow's own parser accepts every option (and the basic-auth choice) without running.
    context = server.make_context("server", list(args))
    assert isinstance(context, Context)
    assert context.params["app_name"] == "basic-auth"
    assert context.params["host"] == "0.0.0.0"  # inside the container; published on loopback only
    assert context.params["serve_artifacts"] is True
    # The backend URI comes from the entrypoint through this variable, not the command line.
    backend = next(p for p in server.params if p.name == "backend_store_uri")
    assert backend.envvar == "MLFLOW_BACKEND_STORE_URI"
    assert not any("postgresql" in str(a) for a in args)

    env = mlflow_service["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == DUMMY_ENV["MLFLOW_S3_ACCESS_KEY"]
    assert env["AWS_SECRET_ACCESS_KEY"] == DUMMY_ENV["MLFLOW_S3_SECRET_KEY"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == DUMMY_ENV["MLFLOW_ADMIN_USERNAME"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == DUMMY_ENV["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == DUMMY_ENV["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith("/run/mlflow/")
    assert env["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "READ"
    assert env["MLFLOW_AUTH_CACHE_TTL_SECONDS"] == "60"  # what the basic-auth test below runs with
    assert mlflow_service["tmpfs"] == ["/run/mlflow:uid=10001,gid=10001,mode=0700"]
    # MLflow never holds MinIO's root credentials.
    assert "MINIO_ROOT_PASSWORD" not in env
    dockerfile = (STACK / "Dockerfile").read_text()
    assert "useradd --create-home --uid 10001 mlflow" in dockerfile
    assert re.search(r'"mlflow\[auth,db\]==\$\{MLFLOW_VERSION\}"', dockerfile)
    from importlib.metadata import version

    assert mlflow_service["build"]["args"]["MLFLOW_VERSION"] == version("mlflow")


def test_the_tracking_server_sends_no_usage_statistics(compose):
    """README, "Security and privacy": the files in infra/ turn MLflow's telemetry off, the
    MLflow server's image and compose service included."""
    environment = compose["services"]["mlflow"]["environment"]
    assert (environment["MLFLOW_DISABLE_TELEMETRY"], environment["DO_NOT_TRACK"]) == ("true", "1")
    dockerfile = (STACK / "Dockerfile").read_text()
    assert re.search(r"^ENV (?:.*\\\n)*\s*MLFLOW_DISABLE_TELEMETRY=true\b", dockerfile, re.M), "Dockerfile"
    assert re.search(r"^ENV (?:.*\\\n)*\s*DO_NOT_TRACK=1\b", dockerfile, re.M), "Dockerfile"


def test_compose_spec_schema(raw_text, compose):
    """Validated against the compose-spec JSON schema that check-jsonschema vendors."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (vendors the compose-spec schema)")
    from importlib.resources import files

    import jsonschema

    schema = json.loads(
        (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text("utf-8")
    )
    validator = jsonschema.Draft202012Validator(schema)
    for document in (yaml.safe_load(raw_text), compose):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # The validator does reject a broken file (the check is not vacuous).
    broken = json.loads(json.dumps(compose))
    broken["services"]["mlflow"]["ports"] = [{"target": "not-a-port"}]
    broken["services"]["mlflow"]["healthcheck"]["intervall"] = "10s"
    assert len(list(validator.iter_errors(broken))) >= 2


def compose_command() -> list[str] | None:
    """``docker compose`` (plugin) or a v2 ``docker-compose`` binary, if either works here."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and re.search(r"\bv?2\.\d+", done.stdout):
            return command
    return None


def test_docker_compose_config(tmp_path):
    """The real Compose v2 parser: resolves the file offline (no daemon needed)."""
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 here (`docker compose` plugin or docker-compose v2 binary)")
    empty_env_file = tmp_path / "empty.env"  # never read a developer's real .env
    empty_env_file.write_text("")
    base = [*command, "--env-file", str(empty_env_file), "-f", str(COMPOSE)]
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    done = subprocess.run(
        [*base, "config", "--format", "json"],
        env={**clean, **DUMMY_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    for service in resolved["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port
    assert resolved["services"]["mlflow"]["command"][2:4] == ["--app-name", "basic-auth"]

    done = subprocess.run([*base, "config", "--quiet"], env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "required variable" in done.stderr and "is missing a value" in done.stderr, done.stderr


# --- the entrypoint ---------------------------------------------------------------------


def test_entrypoint_writes_a_private_auth_config_mlflow_reads(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.permissions import ALL_PERMISSIONS
    from sqlalchemy.engine import make_url

    entrypoint = load_entrypoint()
    env = entrypoint_env(tmp_path, MLFLOW_AUTH_CACHE_TTL_SECONDS="60")
    server_env = entrypoint.prepare(env)

    path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # MLflow's own reader, with the variables the container sets.
    for key in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.setenv(key, env[key])
    config = read_auth_config()
    assert config.default_permission == "READ"
    assert config.admin_username == "admin"
    assert config.admin_password == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"
    assert config.auth_cache_ttl_seconds == 60
    auth_url = make_url(config.database_uri)
    assert (auth_url.drivername, auth_url.host, auth_url.port) == ("postgresql+psycopg2", "postgres", 5432)
    assert (auth_url.username, auth_url.password, auth_url.database) == (
        "mlflow",
        env["POSTGRES_PASSWORD"],
        "mlflow_auth",
    )
    # The admin password is read by MLflow from the environment, never written to the file.
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] not in path.read_text()

    backend = make_url(server_env["MLFLOW_BACKEND_STORE_URI"])
    assert (backend.password, backend.database) == (env["POSTGRES_PASSWORD"], "mlflow")
    assert set(entrypoint.PERMISSIONS) <= set(ALL_PERMISSIONS)


def test_entrypoint_refuses_missing_or_invalid_settings(tmp_path):
    entrypoint = load_entrypoint()
    env = entrypoint_env(tmp_path, POSTGRES_PASSWORD="", MLFLOW_FLASK_SERVER_SECRET_KEY="")
    del env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    with pytest.raises(entrypoint.ConfigError) as raised:
        entrypoint.prepare(env)
    assert str(raised.value) == (
        "required environment variable(s) not set or empty: POSTGRES_PASSWORD, "
        "MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY"
    )
    with pytest.raises(entrypoint.ConfigError, match="MLFLOW_AUTH_DEFAULT_PERMISSION='WRITE'"):
        entrypoint.prepare(entrypoint_env(tmp_path, MLFLOW_AUTH_DEFAULT_PERMISSION="WRITE"))
    with pytest.raises(entrypoint.ConfigError, match="MLFLOW_AUTH_CACHE_TTL_SECONDS='1m'"):
        entrypoint.prepare(entrypoint_env(tmp_path, MLFLOW_AUTH_CACHE_TTL_SECONDS="1m"))
    assert not (tmp_path / "auth").exists()

    # As a process: exits non-zero with the names, and never runs the command.
    done = subprocess.run(
        [sys.executable, str(STACK / "entrypoint.py"), "touch", str(tmp_path / "ran")],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "entrypoint: required environment variable(s) not set or empty: POSTGRES_USER" in done.stderr
    assert not (tmp_path / "ran").exists()


# --- basic auth as the README describes it (slow) ------------------------------------------


@pytest.fixture
def basic_auth_server(tmp_path) -> Iterator[dict]:
    """``mlflow server --app-name basic-auth`` configured by the stack's entrypoint, with
    SQLite in place of PostgreSQL (the only change), on a free loopback port. The credential
    cache is on as in the compose file: without it each request re-hashes its password and
    the pipeline below takes minutes on two cores instead of seconds."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (mlflow[auth])")
    entrypoint = load_entrypoint()
    env = entrypoint.prepare({**os.environ, **entrypoint_env(tmp_path, MLFLOW_AUTH_CACHE_TTL_SECONDS="60")})
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    config = configparser.ConfigParser(interpolation=None)
    config.read(config_path)
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'auth.db'}"
    with config_path.open("w") as handle:
        config.write(handle)
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # not needed; saves 8 processes
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_")}
    port = free_port()
    log = tmp_path / "server.log"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        *["server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port)],
        *["--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
    ]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, env, tmp_path, log, f"{url}/health", timeout_s=120):
        yield {"url": url, "admin": ("admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"])}


@pytest.mark.slow
def test_pipeline_through_basic_auth_as_documented(
    basic_auth_server, lenient, prepared, tmp_path, monkeypatch
):
    import mlflow
    from mlflow.exceptions import MlflowException

    from tests.integration.pipeline import run_after_training

    url, admin = basic_auth_server["url"], basic_auth_server["admin"]
    name = lenient.registry.model_name
    search = f"{url}/api/2.0/mlflow/experiments/search"
    # No credentials, or wrong ones: 401. The admin from the environment gets in.
    assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
    wrong = requests.get(search, params={"max_results": 1}, auth=("admin", "not-the-password"), timeout=10)
    assert wrong.status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=admin, timeout=10).status_code == 200

    # The README's user creation: POST /api/2.0/mlflow/users/create as the admin.
    for user in ("alice", "bob"):
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": user, "password": f"{user}-password-123"},
            auth=admin,
            timeout=10,
        )
        assert created.status_code == 200, created.text
    too_short = requests.post(
        f"{url}/api/2.0/mlflow/users/create",
        json={"username": "carol", "password": "short"},
        auth=admin,
        timeout=10,
    )
    assert too_short.status_code == 400 and "at least 12 characters" in too_short.text
    not_admin = requests.post(
        f"{url}/api/2.0/mlflow/users/create",
        json={"username": "mallory", "password": "mallory-password-123"},
        auth=("alice", "alice-password-123"),
        timeout=10,
    )
    assert not_admin.status_code == 403

    # The pipeline authenticates through MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    # (What the stages and MLflow export into the environment goes back at monkeypatch's undo.)
    undo_mlflow_state_with(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)

    def as_user(user: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", f"{user}-password-123")

    try:
        as_user("alice")
        first = run_after_training(lenient, prepared, tmp_path / "alice", epochs=3)
        assert first["record"]["version"] == "1" and first["record"]["promoted"]
        experiment_id = first["ref"].experiment_id

        # With the default permission READ, a second user can read alice's experiment and
        # model but not log to them.
        as_user("bob")
        client = mlflow.MlflowClient(tracking_uri=url)
        assert client.get_experiment(experiment_id).name == lenient.tracking.experiment
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
        with pytest.raises(MlflowException, match="Permission denied"):
            run_after_training(lenient, prepared, tmp_path / "bob-denied", epochs=0)

        # The README's grants: EDIT on the experiment and on the registered model, by the admin.
        for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", name)):
            granted = requests.post(
                f"{url}/api/3.0/mlflow/users/permissions/grant",
                json={
                    "username": "bob",
                    "resource_type": resource_type,
                    "resource_id": resource_id,
                    "permission": "EDIT",
                },
                auth=admin,
                timeout=10,
            )
            assert granted.status_code == 200, granted.text
        second = run_after_training(lenient, prepared, tmp_path / "bob", epochs=0)
        assert second["record"]["aliases"] == ["challenger"]
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


# --- the Ray cluster (`ray up`) and the KubeRay RayJob -----------------------------------

RAY_CLUSTER = PROJECT_ROOT / "infra/ray/cluster.yaml"
RAYJOB = PROJECT_ROOT / "infra/kuberay/rayjob.yaml"
RAYJOB_SCHEMA = PROJECT_ROOT / "infra/kuberay/rayjob.schema.json"
KUBERNETES_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_ray_cluster_config_matches_the_installed_rays_schema(ray_cluster):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(ray_cluster, _ray_schema())
    # What `ray up` does before launching anything: merge the provider's defaults, then check.
    validate_config(prepare_config(ray_cluster))


def test_ray_schema_check_catches_a_typo(ray_cluster):
    import jsonschema

    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate({**ray_cluster, "max_worker": 3}, _ray_schema())


def test_ray_cluster_matches_the_project(ray_cluster):
    import ray

    assert ray_cluster["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    gpu = ray_cluster["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    setup = "\n".join(ray_cluster["setup_commands"])
    assert "-c ~/fairtrain/requirements.lock" in setup and "torch==2.13.0" in setup
    assert "FAIRTRAIN_RAY_STORAGE=" in setup  # multi-node checkpoints need shared storage
    head = " ".join(ray_cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard`, not exposed


def test_rayjob_matches_its_schema_and_the_schema_catches_typos(rayjob):
    import jsonschema

    schema = json.loads(RAYJOB_SCHEMA.read_text())
    jsonschema.validate(rayjob, schema)
    typo = json.loads(json.dumps(rayjob))
    typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        jsonschema.validate(typo, schema)


def test_rayjob_pod_templates_are_valid_kubernetes(rayjob):
    import kubernetes_validate

    spec = rayjob["spec"]["rayClusterSpec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(templates[1]))
    broken["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": broken},
            KUBERNETES_VERSION,
            strict=True,
        )


def test_rayjob_trains_on_gpus_with_secrets_from_the_cluster(rayjob):
    import ray

    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    workers = cluster["workerGroupSpecs"][0]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # One GPU worker per train.num_workers of params.yaml (the image's params must match).
    assert workers["replicas"] == workers["minReplicas"] >= _params()["train"]["num_workers"]
    # Credentials only by reference to Kubernetes secrets, never inline.
    for pod in _rayjob_containers(rayjob):
        env_names = {e["name"] for e in pod["env"]}
        assert not env_names & {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "DVC_REMOTE_URL"}
        assert {s["secretRef"]["name"] for s in pod["envFrom"]} == {"fairtrain-mlflow", "fairtrain-storage"}


# --- the RayJob's entrypoint, image, authentication and network policy -------------------

NETWORK_POLICY = PROJECT_ROOT / "infra/kuberay/networkpolicy.yaml"
PROJECT_DOCKERFILE = PROJECT_ROOT / "infra/kuberay/Dockerfile"
S3_LOCK = PROJECT_ROOT / "infra/requirements-s3.lock"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
WORKFLOW = PROJECT_ROOT / ".github/workflows/retrain.yml"
# The tag the manifest ships with and the documented sed that replaces it with the commit.
IMAGE_PLACEHOLDER = "GIT_SHA"
SED = re.compile(r'sed "s/:GIT_SHA\$/:\$\(git rev-parse --short=12 HEAD\)/" infra/kuberay/rayjob\.yaml')


def _params() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def _rayjob_containers(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for template in templates for c in template["spec"]["containers"]]


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a lock/constraints file, by normalised name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _fake_dvc(tmp_path: Path) -> tuple[Path, Path]:
    """A ``dvc`` on PATH that only records its arguments, one call a line."""
    bin_dir, log = tmp_path / "bin", tmp_path / "dvc-calls"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    fake.chmod(0o755)
    return bin_dir, log


def test_rayjob_entrypoint_runs_the_pipeline_against_the_team_services(rayjob, tmp_path):
    """The entrypoint as the head runs it: KubeRay hands it to `ray job submit -- ...`, which
    re-quotes it with shlex.join; run that with a stand-in dvc, with and without the secrets."""
    import shlex

    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["bash", "-c"] and len(words) == 3
    script = words[2]
    assert script.startswith("set -euo pipefail; cd /app;")
    command = shlex.join(["bash", "-c", script.replace("cd /app;", f"cd {shlex.quote(str(tmp_path))};", 1)])
    bin_dir, log = _fake_dvc(tmp_path)
    base = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    secrets = {"MLFLOW_TRACKING_URI": "https://mlflow.example.org", "DVC_REMOTE_URL": "s3://bucket/fairtrain"}

    for missing in secrets:
        env = {**base, **{k: v for k, v in secrets.items() if k != missing}}
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and missing in done.stderr, done.stderr
        assert not log.exists()  # nothing ran: no local store or remote that dies with the pod

    done = subprocess.run(
        ["bash", "-c", command], env={**base, **secrets}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "remote add --local --force --default team s3://bucket/fairtrain",
        "pull --allow-missing",
        "repro",  # the whole pipeline: train, evaluate, register, report
        "push --run-cache",  # outputs and the run cache, from which `dvc repro` rebuilds dvc.lock
    ]


def test_rayjob_image_is_pinned_to_a_commit(rayjob):
    text = RAYJOB.read_text()
    assert ":latest" not in text
    images = {c["image"] for c in _rayjob_containers(rayjob)}
    assert len(images) == 1, images  # head and workers run the same build
    (image,) = images
    assert image.endswith(f":{IMAGE_PLACEHOLDER}"), image
    for container in _rayjob_containers(rayjob):
        assert container["imagePullPolicy"] == "IfNotPresent"  # fine for an immutable commit tag
    # The documented sed turns every image line, and nothing else, into the commit's tag.
    assert SED.search(text), "rayjob.yaml must document the sed that sets the image tag"
    assert SED.search((PROJECT_ROOT / "infra/README.md").read_text())
    replaced = re.sub(r":GIT_SHA$", ":0123456789ab", text, flags=re.MULTILINE)
    changed = [(a, b) for a, b in zip(text.splitlines(), replaced.splitlines(), strict=True) if a != b]
    assert len(changed) == len(_rayjob_containers(rayjob))
    assert all(b.strip() == "image: ghcr.io/example/fairtrain:0123456789ab" for _, b in changed)


def test_rayjob_cluster_requires_ray_token_auth_and_says_who_can_reach_it(rayjob):
    import jsonschema

    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    head_params = cluster["headGroupSpec"]["rayStartParams"]
    assert head_params["num-cpus"] == "0"
    text = RAYJOB.read_text()
    assert "no Service exposes it" not in text  # KubeRay does create <cluster>-head-svc
    assert "head-svc" in text and "networkpolicy.yaml" in text
    # authOptions is in the schema, and a typo in it is caught.
    typo = json.loads(json.dumps(rayjob))
    typo["spec"]["rayClusterSpec"]["authOptions"] = {"mdoe": "token"}
    with pytest.raises(jsonschema.ValidationError, match="mdoe"):
        jsonschema.validate(typo, json.loads(RAYJOB_SCHEMA.read_text()))


def test_network_policy_admits_only_the_jobs_pods_and_the_operator(rayjob):
    import kubernetes_validate

    policy = yaml.safe_load(NETWORK_POLICY.read_text())
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    selector = spec["podSelector"]["matchLabels"]
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:  # the policy selects the head and every worker
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items(), labels
    among_themselves, to_dashboard = spec["ingress"]
    assert among_themselves == {"from": [{"podSelector": {"matchLabels": selector}}]}
    assert to_dashboard["ports"] == [{"protocol": "TCP", "port": 8265}]
    submitter, operator = to_dashboard["from"]
    # Kubernetes labels a Job's pods with the Job's name; KubeRay names the submitter Job
    # after the RayJob.
    assert submitter == {
        "podSelector": {"matchLabels": {"batch.kubernetes.io/job-name": rayjob["metadata"]["name"]}}
    }
    assert operator["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "kuberay-operator"}
    # No rule admits anything from everywhere (an empty `from`, or no `from` at all).
    for rule in spec["ingress"]:
        assert rule.get("from"), rule


def test_project_image_recipe_is_pinned_and_keeps_the_repository():
    import ray

    dockerfile = PROJECT_DOCKERFILE.read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert "COPY --chown=1000:100 . /app" in dockerfile  # the image's ray user writes dvc outputs
    assert "pip install --no-cache-dir --disable-pip-version-check torch==2.13.0" in dockerfile
    assert "-c requirements.lock -c infra/requirements-s3.lock -e ." in dockerfile
    assert f'"dvc-s3=={_pins(S3_LOCK)["dvc-s3"]}"' in dockerfile
    assert "git -C /app rev-parse HEAD" in dockerfile  # fails the build without .git (dvc needs it)


def test_s3_lock_agrees_with_the_project_lock_and_every_installer():
    s3, lock = _pins(S3_LOCK), _pins(PROJECT_ROOT / "requirements.lock")
    assert {"dvc-s3", "s3fs", "aiobotocore", "botocore"} <= set(s3)
    for name in set(s3) & set(lock):
        assert s3[name] == lock[name], name
    # s3fs is released in lockstep with fsspec and requires exactly its version.
    assert s3["s3fs"] == lock["fsspec"]
    pin = f"dvc-s3=={s3['dvc-s3']}"
    for path in (WORKFLOW, RAY_CLUSTER, PROJECT_DOCKERFILE, PROJECT_ROOT / "infra/README.md"):
        text = path.read_text()
        assert pin in text and "infra/requirements-s3.lock" in text, path
        assert not re.search(r"pip install[^\n]*\bdvc-s3\b(?!==)", text), f"{path}: unpinned dvc-s3"


# --- .dockerignore -------------------------------------------------------------------------


def _dockerignore_patterns(path: Path) -> list[tuple[bool, re.Pattern]]:
    """Docker's .dockerignore rules: `**` any number of directories, `*` and `?` within one
    name, leading `/` ignored, `!` re-includes; the last matching pattern wins, and a pattern
    that matches a directory matches everything under it."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = os.path.normpath(pattern.strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex + "(?:/.*)?")))
    return rules


def _docker_excludes(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    excluded = False
    for negate, regex in rules:
        if regex.fullmatch(path):
            excluded = not negate
    return excluded


SECRET_AND_STATE_PATHS = [
    ".env",
    "infra/mlflow/.env",
    "infra/mlflow/.env.local",
    ".dvc/config.local",
    ".dvc/cache/files/md5/ab/cdef",
    ".dvc/tmp/rwlock",
    "mlflow.db",
    "mlflow.db.lock",
    "mlruns/0/meta.yaml",
    "models/.ray-runs/fairtrain/checkpoint_000001/checkpoint.ckpt",
    "models/model/MLmodel",
    "models/mlflow_run.json",
    ".venv/bin/python",
    "src/fairtrain/__pycache__/cli.cpython-311.pyc",
    "data/validated/dataset.parquet",
    "data/prepared/train.parquet",
    "data/reference_stats.json",
    "retrain-out/decision.json",
]
PROJECT_PATHS = [
    ".git/HEAD",
    ".git/objects/pack/x.pack",
    ".dvc/config",
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    "pyproject.toml",
    "requirements.lock",
    "infra/requirements-s3.lock",
    "infra/mlflow/.env.example",
    "src/fairtrain/cli.py",
    "data/raw/adult.csv.gz",
    "metrics/evaluation.json",
]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    rules = _dockerignore_patterns(DOCKERIGNORE)
    for path in SECRET_AND_STATE_PATHS:
        assert _docker_excludes(rules, path), f"{path} would be copied into the image"
    for path in PROJECT_PATHS:
        assert not _docker_excludes(rules, path), f"{path} is needed in the image"
    # Whatever .env files exist in this checkout right now are excluded too.
    for found in PROJECT_ROOT.rglob(".env*"):
        relative = found.relative_to(PROJECT_ROOT).as_posix()
        if relative.startswith(".venv/") or found.name == ".env.example":
            continue
        assert _docker_excludes(rules, relative), relative
    # The server image's own context (infra/mlflow) keeps its .env out as well.
    mlflow_rules = _dockerignore_patterns(STACK / ".dockerignore")
    assert _docker_excludes(mlflow_rules, ".env") and not _docker_excludes(mlflow_rules, ".env.example")


def test_dockerignore_matcher_follows_docker_rules():
    rules = [
        (False, re.compile(r"(?:.*/)?\.env(?:/.*)?")),
    ]
    assert _docker_excludes(rules, "a/b/.env") and _docker_excludes(rules, ".env")
    assert not _docker_excludes(rules, "a/.envrc")
    parsed = _dockerignore_patterns(DOCKERIGNORE)
    assert not _docker_excludes(parsed, "infra/mlflow/.env.example")  # the `!` exception
    assert _docker_excludes(parsed, "infra/mlflow/.env.production")


# --- the `ray up` cluster: workers, environment, checkout ----------------------------------

# GPUs per instance of the types the cluster may use (Ray detects them on the node).
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.2xlarge": 1, "g6.xlarge": 1, "g4dn.xlarge": 1, "p3.2xlarge": 1}


def test_ray_cluster_starts_enough_workers_for_the_train_stage(ray_cluster):
    """The train stage checks ray.cluster_resources() before asking for workers, so the
    autoscaler never scales up for it: min_workers must already cover train.num_workers."""
    train = _params()["train"]
    head = ray_cluster["available_node_types"]["head"]
    assert head["resources"] == {"CPU": 0}
    gpu = ray_cluster["available_node_types"]["gpu_worker"]
    gpus = gpu["min_workers"] * GPUS_PER_INSTANCE[gpu["node_config"]["InstanceType"]]
    assert gpus >= train["num_workers"]  # use_gpu: true, one GPU per Ray Train worker
    assert gpu["min_workers"] >= train["num_workers"]  # use_gpu: false, >= 1 CPU per worker
    assert gpu["min_workers"] <= gpu["max_workers"] <= ray_cluster["max_workers"]


def test_ray_cluster_syncs_the_repository_but_no_secrets(ray_cluster):
    excluded = ray_cluster["rsync_exclude"]
    assert not any(".git" in pattern.split("/")[-1] for pattern in excluded)  # dvc needs .git
    assert {"**/.venv", "**/mlruns", "**/mlflow.db"} <= set(excluded)
    assert ray_cluster["rsync_filter"] == [".gitignore"]
    # ... which drops the secrets that the nested .gitignore files name.
    assert ".env" in (STACK / ".gitignore").read_text().split()
    assert "/config.local" in (PROJECT_ROOT / ".dvc/.gitignore").read_text().split()


def test_ray_cluster_environment_comes_from_a_file_outside_the_repo(ray_cluster, tmp_path):
    mounts = ray_cluster["file_mounts"]
    assert mounts["~/fairtrain"] == "."
    local = mounts["~/fairtrain-secrets/cluster.env"]
    assert local.startswith("~/") and not local.startswith("~/fairtrain")  # never in the checkout
    setup = ray_cluster["setup_commands"]
    assert "echo 'set -a; . ~/fairtrain-secrets/cluster.env; set +a' >> ~/.bashrc" in setup
    assert "chmod 600 ~/fairtrain-secrets/cluster.env" in setup

    # The head's setup as the node runs it: it refuses to go on without a tracking server or
    # a remote, then makes the remote the checkout's default.
    check, remote = ray_cluster["head_setup_commands"]
    (tmp_path / "fairtrain-secrets").mkdir()
    (tmp_path / "fairtrain").mkdir()
    env_file = tmp_path / "fairtrain-secrets/cluster.env"
    bin_dir, log = _fake_dvc(tmp_path)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    for content in ("MLFLOW_TRACKING_URI=https://mlflow.example.org\n", "DVC_REMOTE_URL=s3://b/f\n", ""):
        env_file.write_text(content)
        done = subprocess.run(["bash", "-c", check], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "must set MLFLOW_TRACKING_URI and DVC_REMOTE_URL" in done.stderr
    env_file.write_text("MLFLOW_TRACKING_URI=https://mlflow.example.org\nDVC_REMOTE_URL='s3://b/f'\n")
    for command in (check, remote):
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert log.read_text() == "remote add --local --force --default team s3://b/f\n"


# --- the retraining workflow: secrets per step ----------------------------------------------

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.([A-Z_]+)\s*\}\}")


@pytest.fixture(scope="module")
def workflow() -> dict:
    raw = yaml.safe_load(WORKFLOW.read_text())
    raw["on"] = raw.pop(True)  # PyYAML reads the key `on` as True (YAML 1.1)
    return raw


def test_workflow_secrets_reach_only_the_steps_that_use_them(workflow):
    job = workflow["jobs"]["retrain"]
    assert not SECRET_REF.search(json.dumps(job.get("env", {})))  # nothing job-wide
    by_step = {}
    for step in job["steps"]:
        # Secrets only as step env, never in a run script, a `with:` or a condition.
        outside_env = {k: v for k, v in step.items() if k != "env"}
        assert not SECRET_REF.search(json.dumps(outside_env)), step
        names = set(SECRET_REF.findall(json.dumps(step.get("env", {}))))
        if "uses" in step:
            assert not names, f"third-party action {step['uses']} gets secrets {names}"
        if "make setup" in step.get("run", ""):
            assert not names, "secrets during make setup (pip runs packages' build code)"
        by_step[step.get("name", step.get("uses"))] = names
    assert by_step["Point DVC at the team remote"] == {"DVC_REMOTE_URL"}
    assert by_step["Check the tracking server secret"] == {"MLFLOW_TRACKING_URI"}
    assert by_step["Drift check, retraining, push"] == {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    # The job's token: not persisted by checkout, handed to the one push that needs it.
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    push = next(s for s in job["steps"] if "git push" in s.get("run", ""))
    assert push["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert [s for s in job["steps"] if "github.token" in json.dumps(s)] == [push]


def test_workflow_runs_one_at_a_time_with_minimal_permissions(workflow):
    assert workflow["permissions"] == {"contents": "write"}
    assert workflow["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    setup = next(s for s in workflow["jobs"]["retrain"]["steps"] if "make setup" in s.get("run", ""))
    assert "-c requirements.lock -c infra/requirements-s3.lock" in setup["run"]


# --- the tracking server image: pinned base and packages --------------------------------------


def test_mlflow_server_image_is_pinned():
    from importlib.metadata import version

    dockerfile = (STACK / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base
    assert "COPY constraints.txt /tmp/constraints.txt" in dockerfile
    assert "-c /tmp/constraints.txt" in dockerfile and "pip check" in dockerfile
    constraints, lock = _pins(STACK / "constraints.txt"), _pins(PROJECT_ROOT / "requirements.lock")
    assert constraints["mlflow"] == version("mlflow") == lock["mlflow"]
    for name in ("psycopg2-binary", "boto3", "botocore", "flask-wtf", "sqlalchemy", "alembic"):
        assert name in constraints, name
    mismatched = {
        n: (constraints[n], lock[n]) for n in set(constraints) & set(lock) if constraints[n] != lock[n]
    }
    assert not mismatched, f"constraints.txt disagrees with requirements.lock: {mismatched}"
