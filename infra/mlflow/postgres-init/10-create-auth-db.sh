#!/bin/sh
# Runs once, when the PostgreSQL volume is initialised: a separate database for MLflow's
# basic-auth users and permissions, owned by the same role as the tracking database.
# (On a volume created before this script existed, run the CREATE DATABASE by hand; see README.)
set -eu
: "${MLFLOW_AUTH_DB:?MLFLOW_AUTH_DB is not set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v auth_db="$MLFLOW_AUTH_DB" -v owner="$POSTGRES_USER" <<'SQL'
CREATE DATABASE :"auth_db" OWNER :"owner";
SQL
