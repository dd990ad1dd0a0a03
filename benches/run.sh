#!/usr/bin/env bash
# Runs the throughput benchmark (and the console worklist benchmark) with a throw-away local
# PostgreSQL as baseline B and as the PostgreSQL store (P: C and G beside sled), then the
# takeover time of two servers on it.
# Installs PostgreSQL from Debian packages if it is missing (needs root and apt).
# Usage: benches/run.sh            (extra env: CELLTRAIL_BENCH_CHAINS, _EVENTS, _STREAMS, _MILLION)
#        CELLTRAIL_BENCH_ONLY=P benches/run.sh   only C and G on sled and on PostgreSQL, then
#                                                the takeover (no V, M, B, console)
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PGBIN" ]; then
  echo "installing PostgreSQL (Debian package)..." >&2
  if apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
fi
if [ -n "$PGBIN" ]; then
  PGDIR=$(mktemp -d /tmp/celltrail-pg.XXXXXX)
  chown postgres "$PGDIR" 2>/dev/null || true
  RUN=""; [ "$(id -u)" = 0 ] && RUN="runuser -u postgres --"
  $RUN "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >/dev/null
  $RUN "$PGBIN/pg_ctl" -D "$PGDIR/data" -o "-p 54329 -k $PGDIR -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c max_connections=300" -l "$PGDIR/log" -w start >/dev/null
  trap '$RUN "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null; rm -rf "$PGDIR"' EXIT
  export CELLTRAIL_BENCH_PG="host=127.0.0.1 port=54329 user=postgres dbname=postgres"
  echo "baseline: $("$PGBIN/postgres" --version) on 127.0.0.1:54329, synchronous_commit=on, fsync=on" >&2
else
  echo "PostgreSQL not available: baseline B will be skipped" >&2
fi
if [ "${CELLTRAIL_BENCH_MILLION:-}" = 1 ]; then
  cargo build --release --bin celltrail   # the 1 M-entry run starts the release server process
fi
cargo bench --bench throughput
# The QA console's worklist for 10,000 chains (goal < 200 ms).
if [ -z "${CELLTRAIL_BENCH_ONLY:-}" ]; then cargo bench --bench console; fi
if [ -n "$PGBIN" ]; then
  # Takeover: two `celltrail serve` processes on one throw-away database, appends under load,
  # kill -9 of the writer; the time until the standby acknowledges (tests/pg_failover.rs).
  # Lease timing bounds it (2 s lease, 250 ms rounds), not code speed: the test build will do.
  CELLTRAIL_PG_BIN="$PGBIN" cargo test --test pg_failover kill_9 -- --nocapture 2>&1 \
    | grep '^takeover:' || echo "takeover: the failover run failed (see cargo test --test pg_failover)"
fi
