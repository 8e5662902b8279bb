#!/bin/sh
# The image's entrypoint: the first argument names the process (the Procfile's names).
# `exec` so that the service is PID 1 and gets SIGTERM from `docker stop` (graceful shutdown).
set -e
role="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$role" in
    web|ingest) exec python -m ingest "$@" ;;
    worker) exec python -m worker "$@" ;;
    api) exec python -m api "$@" ;;
    migrate) exec entitled migrate "$@" ;;
    *) exec "$role" "$@" ;;
esac
