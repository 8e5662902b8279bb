#!/bin/sh
# What the postgres image's entrypoint does, in short: on an empty data directory, initdb with
# POSTGRES_USER / POSTGRES_PASSWORD and create POSTGRES_DB; then run the server.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$pwfile"
    "$bin/initdb" -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "${POSTGRES_DB}" != "postgres" ]; then
        echo "CREATE DATABASE \"${POSTGRES_DB}\";" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec "$bin/postgres" -D "$PGDATA" -p "${PGPORT:-5432}" -k /tmp \
    -c listen_addresses="${LISTEN_ADDRESSES:-*}"
