#!/usr/bin/env bash
# make test-containers: the containers for real. Builds the images, brings the compose stack up (MongoDB,
# PostgreSQL, the sync, the CSV ETL, the API), checks that the sync wrote rows into PostgreSQL, that the ETL
# completed, that /health and /read/first-chunk answer from the host, runs the tests inside the development
# container, and tears everything down (docker-compose down -v), whatever happened.
# Needs docker and docker-compose (on a machine without a registry: ../shared/containers/build-standins.sh).
#   CONTAINER_TESTS=all  the whole suite with coverage (make test) instead of the default subset; =none: no tests
#   KEEP=1               leave the stack up for a look (tear it down with the command printed)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
project="gigsterpg-test-$$"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Host ports of our own, so that the stack never collides with servers already listening on this machine.
export GIGSTERPG_API_PORT=${GIGSTERPG_API_PORT:-$(free_port)} GIGSTERPG_PG_PORT=$(free_port) \
  GIGSTERPG_MONGO_PORT=$(free_port)
compose() { docker-compose -p "$project" -f docker-compose.yml -f docker-compose.dev.yml "$@"; }
prod() { docker-compose -p "$project" -f docker-compose.yml "$@"; }
log() { echo "[test-containers $(( $(date +%s) - started ))s] $*" >&2; }
fail() {
  echo "FAILED: make test-containers, $*, see the services' logs above" >&2
  prod logs --no-color --tail 40 >&2 || true
  exit 1
}
teardown() {
  if [[ "${KEEP:-0}" == 1 ]]; then
    log "left up: docker-compose -p $project -f docker-compose.yml -f docker-compose.dev.yml down -v"
    return
  fi
  compose --profile dev down -v --remove-orphans >/dev/null 2>&1 || true
}
trap teardown EXIT
wait_for() {  # wait_for SECONDS WHAT COMMAND...: the command's success, or a failure naming WHAT
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || fail "waited for $what"
    sleep 1
  done
}
exited_ok() {  # exited_ok SERVICE: the service's container has exited with status 0 (1 when still running)
  local id; id=$(prod ps -q "$1")
  [[ -n "$id" ]] || return 1
  [[ "$(docker inspect -f '{{.State.Status}}' "$id")" == exited ]] || return 1
  local code; code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
  [[ "$code" == 0 ]] || fail "the $1 service exited with status $code"
}
psql_count() { prod exec -T pg psql -U future_gigster -d data-practical -tAc "$1" | tr -d '[:space:]'; }

if ! command -v curl >/dev/null 2>&1; then  # the brief's own check is a curl; CI machines may lack it
  command -v apt-get >/dev/null 2>&1 || fail "curl is missing, install it"
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi
log "building the production and development images"
prod build --quiet 2>&1 | grep -v "legacy builder\|buildx\|docs.docker.com\|^ *$" >&2 || true
compose build --quiet dev 2>&1 | grep -v "legacy builder\|buildx\|docs.docker.com\|^ *$" >&2 || true
docker image inspect gigsterpg gigsterpg-dev >/dev/null || fail "an image did not build"
user=$(docker run --rm --entrypoint id gigsterpg -un)
[[ "$user" != root ]] || fail "the production image runs as root"
if docker run --rm --entrypoint test gigsterpg -e /app/tests; then fail "the production image holds the tests"; fi

log "MongoDB and PostgreSQL, then generated documents for the sync to copy"
prod up -d mongo pg
wait_for 120 "PostgreSQL and MongoDB to be healthy" \
  bash -c "[[ \$(docker inspect -f '{{.State.Health.Status}}' \$(docker-compose -p $project ps -q pg)) == healthy &&
            \$(docker inspect -f '{{.State.Health.Status}}' \$(docker-compose -p $project ps -q mongo)) == healthy ]]"
prod run --rm -T gigsterpg generate --users 300 --gigs 600 --messy-rate 0 >&2

log "the sync, the ETL and the API (which waits for the ETL to complete)"
prod up -d || fail "docker-compose up did not start every service"
wait_for 300 "the sync to finish" exited_ok gigsterpg
wait_for 300 "the ETL to finish" exited_ok etl
users=$(psql_count "SELECT count(*) FROM users")
[[ "$users" == 300 ]] || fail "the sync wrote $users users into PostgreSQL, not 300"
rows=$(psql_count "SELECT count(*) FROM datasets.earliest_trade")
[[ "$rows" == 5 ]] || fail "the ETL's transform wrote $rows rows, not 5"
log "sync: $users users in PostgreSQL; ETL: $rows rows in datasets.earliest_trade"

api="http://127.0.0.1:$GIGSTERPG_API_PORT"
wait_for 120 "the API to answer /health" curl -fsS "$api/health"
health=$(curl -fsS "$api/health")
[[ "$health" == *'"status":"ok"'* ]] || fail "/health answered $health"
chunk=$(curl -fsS -v "$api/read/first-chunk" 2>/tmp/test-containers-curl.$$ || true)
grep -q "< HTTP/1.1 200" /tmp/test-containers-curl.$$ || { cat /tmp/test-containers-curl.$$ >&2; fail "/read/first-chunk did not answer 200"; }
rm -f /tmp/test-containers-curl.$$
python3 -c 'import json, sys; rows = json.loads(sys.argv[1]); assert len(rows) == 5 and rows[0]["person_id"] == 1 \
  and rows[0]["first_trade_id"] == 102, rows' "$chunk" || fail "/read/first-chunk answered $chunk"
log "/health: ok; curl $api/read/first-chunk: 5 typed rows"
# The job routes are closed without a token: the read routes alone are public.
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/users")
[[ "$code" == 401 ]] || fail "/users answered $code without a token, not 401"

log "the tests inside the development container (${CONTAINER_TESTS:-subset})"
if [[ "${CONTAINER_TESTS:-subset}" == none ]]; then
  log "no tests (CONTAINER_TESTS=none)"
elif [[ "${CONTAINER_TESTS:-subset}" == all ]]; then
  compose run --rm -T dev make test || fail "the suite failed inside the development container"
else
  # Lint of everything, and the modules of the containers' own paths (CSV, transform, read API, config, CLI,
  # migrations), on the embedded servers inside the container: the whole suite takes too long for CI twice.
  compose run --rm -T dev sh -c "make lint && python -m pytest -q -p no:cacheprovider tests/test_csv_sources.py \
    tests/test_read_api.py tests/test_csvsource.py tests/test_config.py tests/test_migrations.py" \
    || fail "lint or the tests failed inside the development container"
fi
log "passed in $(( $(date +%s) - started )) s"
