#!/bin/sh
# Creates or upgrades Temporal's schemas in the `temporal` and `temporal_visibility` databases
# (created by deploy/postgres/temporal-init.sql on the first start of their PostgreSQL).
# Run by the `temporal-schema` service (image temporalio/admin-tools) before the server starts.
# Safe to run again: setup-schema skips a schema already past 0.0, update-schema applies only
# the versions the database lacks. UNTESTED here: see deploy/README.md.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${PORT}"
until nc -z -w 5 "${POSTGRES_SEEDS}" "${PORT}"; do sleep 2; done

for pair in "temporal:temporal" "temporal_visibility:visibility"; do
  db="${pair%%:*}"
  dir="${pair##*:}"
  echo "schema of ${db}"
  temporal-sql-tool --plugin postgres12 --ep "${POSTGRES_SEEDS}" -p "${PORT}" -u "${POSTGRES_USER}" \
    --db "${db}" setup-schema -v 0.0
  temporal-sql-tool --plugin postgres12 --ep "${POSTGRES_SEEDS}" -p "${PORT}" -u "${POSTGRES_USER}" \
    --db "${db}" update-schema -d "${SCHEMA}/${dir}/versioned"
done
echo "Temporal schemas are up to date"
