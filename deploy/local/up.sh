#!/usr/bin/env bash
# `make up`: Redis (the one at GANFORGE_BROKER_URL), a worker and the service in the foreground;
# Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
export GANFORGE_BROKER_URL=${GANFORGE_BROKER_URL:-redis://127.0.0.1:6379/0}
export GANFORGE_RESULT_BACKEND=${GANFORGE_RESULT_BACKEND:-$GANFORGE_BROKER_URL}
export BENTOML_DO_NOT_TRACK=true
# the job endpoints (and the playground's jobs panel) need a token: a fresh one per `make up`
# unless one is set
export GANFORGE_API_TOKEN=${GANFORGE_API_TOKEN:-$($BIN/python -c "import secrets; print(secrets.token_urlsafe(18))")}
if ! $BIN/python -c "import redis, os; redis.Redis.from_url(os.environ['GANFORGE_BROKER_URL']).ping()" 2>/dev/null; then
  echo "No Redis answers at $GANFORGE_BROKER_URL. Start one, e.g.:"
  echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
  echo "or run 'make demo', which needs no server."
  exit 1
fi
pids=()
stop() { trap - INT TERM EXIT; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; }
trap stop INT TERM EXIT
$BIN/ganforge worker & pids+=($!)
$BIN/ganforge serve --port "${PORT:-3000}" & pids+=($!)
echo "worker and service up (Ctrl-C stops):"
echo "  playground  http://127.0.0.1:${PORT:-3000}/   (API token for its jobs panel: $GANFORGE_API_TOKEN)"
echo "  a digit     http://127.0.0.1:${PORT:-3000}/generate?digit=7"
wait -n
