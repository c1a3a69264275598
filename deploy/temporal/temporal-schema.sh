#!/bin/sh
# Create Temporal's two PostgreSQL databases and bring their schemas to the versions shipped in
# this admin-tools image (the same tag as the server). Idempotent: on a re-run (or after an
# image upgrade) existing databases are kept and update-schema applies only what is missing.
# The password comes from POSTGRES_PWD (env_file), handed to the tool as SQL_PASSWORD so it
# never appears on a command line.
set -eu
: "${POSTGRES_SEEDS:?POSTGRES_SEEDS names the PostgreSQL host}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${POSTGRES_PWD:?POSTGRES_PWD is required (deploy/compose/postgres.env)}"
SQL_PASSWORD="$POSTGRES_PWD"
export SQL_PASSWORD
schemas=/etc/temporal/schema/postgresql/v12

tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  dir="${pair##*:}"
  if tool --db "$db" create-database; then
    echo "created database $db"
    tool --db "$db" setup-schema -v 0.0
  else
    echo "database $db exists: keeping it"
  fi
  tool --db "$db" update-schema -d "$schemas/$dir/versioned"
done
echo "Temporal schemas are up to date"
