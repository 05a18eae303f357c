#!/usr/bin/env bash
# `make demo`: the whole stack on one machine with no server to install (the embedded queue):
# a worker and the service start, the reference recipe trains as a queued job on the CPU
# (~5 min on 2 cores), its model is served, and out/ receives a 7 and a 10x10 grid.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
STATE=${GANFORGE_DEMO_DIR:-$PWD/var/demo}
PORT=${PORT:-3000}
STEPS=${DEMO_STEPS:-$($BIN/python -c 'from ganforge.spec import TrainConfig; print(TrainConfig().steps)')}
mkdir -p "$STATE" out
export GANFORGE_VAR_DIR=$STATE GANFORGE_RUNS_DIR=$STATE/runs BENTOML_HOME=$STATE/bentoml
export GANFORGE_WORKER_METRICS_PORT=${GANFORGE_WORKER_METRICS_PORT:-0} BENTOML_DO_NOT_TRACK=true
unset GANFORGE_BROKER_URL GANFORGE_RESULT_BACKEND   # the embedded default: no Redis needed

pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

echo "== starting a worker and the service (logs in $STATE)"
$BIN/ganforge worker --queues cpu > "$STATE/worker.log" 2>&1 & pids+=($!)
$BIN/ganforge serve --port "$PORT" --host 127.0.0.1 > "$STATE/serve.log" 2>&1 & pids+=($!)
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 120); do curl -sf "$URL/readyz" >/dev/null && break; sleep 1; done
curl -sf "$URL/readyz" >/dev/null || { echo "the service did not start; see $STATE/serve.log"; exit 1; }

echo "== queueing the reference recipe: $STEPS steps on the CPU"
JOB=$($BIN/ganforge jobs submit --steps "$STEPS" --device cpu --seed 0)
echo "job $JOB"
$BIN/ganforge jobs watch "$JOB" || { $BIN/ganforge jobs status "$JOB"; exit 1; }
TAG=$($BIN/ganforge jobs status "$JOB" --json | $BIN/python -c \
  'import json, sys; print(json.load(sys.stdin)["result"]["tag"])')

echo "== sampling $TAG from the service"
for _ in $(seq 1 60); do
  curl -sf -o out/digit-7.png "$URL/generate?model=$TAG&digit=7&seed=7" && break; sleep 1
done
$BIN/python - "$URL" "$TAG" "$JOB" <<'PY'
import io, json, sys, urllib.request
import numpy as np, torch
from ganforge.images import make_grid, save_png, to_uint8
from trainer import classifier

from ganforge import jobs

url, tag, job = sys.argv[1], sys.argv[2], sys.argv[3]
digits = [d for d in range(10) for _ in range(10)]
body = json.dumps({"model": tag, "digits": digits, "seed": 1, "format": "npy"}).encode()
req = urllib.request.Request(f"{url}/generate", body, {"content-type": "application/json"})
images = np.load(io.BytesIO(urllib.request.urlopen(req).read()))
save_png(make_grid(to_uint8(images), nrow=10), "out/grid.png")
logits, _ = classifier.predict(classifier.load(), torch.from_numpy(images))
read = (logits.argmax(1).numpy() == np.array(digits)).mean()
print(f"out/digit-7.png and out/grid.png (one row per digit): the evaluator reads {read:.0%} "
      "of the grid's digits correctly")
r = jobs.status(job).result
m = r["metrics"]
print(f"model {r['tag']} ({r['stage']}): label accuracy {m['label_accuracy']:.4f}, class KL "
      f"{m['class_kl']:.4f}, FCD {m['fcd']:.2f} (real data: {m['fcd_baseline']:.2f}), "
      f"{r['steps']} steps trained in {r['train_seconds']:.0f} s")
PY
echo "== done; stopping the stack"
