#!/usr/bin/env python3
"""Entrypoint of the MLflow tracking-server container.

Builds the PostgreSQL URIs of the tracking store and of the basic-auth user store from
environment variables (quoting the password, so any character works), writes MLflow's
basic-auth configuration file with owner-only permissions, and then replaces itself with
the command it was given (``mlflow server ... --app-name basic-auth``).

Nothing secret is read from a file baked into the image and nothing has a default: a missing
variable stops the container with a message naming it.

Environment (required):
  POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB   tracking store (and owner of the auth DB)
  MLFLOW_AUTH_DB                                  database of basic-auth users and permissions
  MLFLOW_AUTH_CONFIG_PATH                         where to write the basic-auth .ini
  MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY
                                                  read by MLflow itself; checked here early
Environment (optional):
  POSTGRES_HOST (postgres), POSTGRES_PORT (5432), MLFLOW_AUTH_DEFAULT_PERMISSION (READ),
  MLFLOW_AUTH_CACHE_TTL_SECONDS (0: every request re-hashes its password; see README.md)
"""

from __future__ import annotations

import configparser
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

REQUIRED = (
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MLFLOW_AUTH_DB",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
# MLflow does not check default_permission at start-up (an unknown name fails every request
# later), so it is checked here. Names from mlflow/server/auth/permissions.py.
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")


class ConfigError(Exception):
    pass


def check_environment(env: Mapping[str, str]) -> None:
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ConfigError(f"required environment variable(s) not set or empty: {', '.join(missing)}")
    permission = env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
    if permission not in PERMISSIONS:
        raise ConfigError(f"MLFLOW_AUTH_DEFAULT_PERMISSION={permission!r}; expected one of {PERMISSIONS}")
    ttl = env.get("MLFLOW_AUTH_CACHE_TTL_SECONDS", "0")
    if not ttl.isdigit():
        raise ConfigError(f"MLFLOW_AUTH_CACHE_TTL_SECONDS={ttl!r}; expected a whole number of seconds")


def postgres_uri(env: Mapping[str, str], database: str) -> str:
    user = quote(env["POSTGRES_USER"], safe="")
    password = quote(env["POSTGRES_PASSWORD"], safe="")
    host = env.get("POSTGRES_HOST", "postgres")
    port = env.get("POSTGRES_PORT", "5432")
    return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{quote(database, safe='')}"


def auth_config(env: Mapping[str, str]) -> str:
    """The basic-auth .ini (keys as in mlflow/server/auth/basic_auth.ini). The admin user name
    and password are not written: MLflow reads MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD itself, and
    uses them only to create the admin the first time it starts against an empty user store."""
    values = {
        "default_permission": env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"),
        "database_uri": postgres_uri(env, env["MLFLOW_AUTH_DB"]),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        # Seconds a verified (user, password) pair is trusted without re-hashing; 0 = off.
        "auth_cache_ttl_seconds": env.get("MLFLOW_AUTH_CACHE_TTL_SECONDS", "0"),
    }
    # MLflow reads the file with configparser's default (%-)interpolation, and a quoted
    # password is full of '%': each must be written as '%%'.
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (it holds the database password)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def prepare(env: Mapping[str, str]) -> dict[str, str]:
    """Check the environment, write the auth config; returns the environment for the server."""
    check_environment(env)
    write_private(Path(env["MLFLOW_AUTH_CONFIG_PATH"]), auth_config(env))
    # `mlflow server` reads --backend-store-uri from this variable, which keeps the password
    # out of the command line (and so out of `ps` and `docker inspect`).
    return {**env, "MLFLOW_BACKEND_STORE_URI": postgres_uri(env, env["POSTGRES_DB"])}


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("entrypoint: no command given (expected e.g. `mlflow server --app-name basic-auth ...`)")
    try:
        env = prepare(os.environ)
    except (ConfigError, OSError) as error:
        sys.exit(f"entrypoint: {error}")
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
