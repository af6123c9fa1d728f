#!/usr/bin/env bash
# GPU readiness, in one go on a machine with an NVIDIA GPU (issue 27). Writes JSON into $OUT (default gpu_out/):
#   1. trainer_cuda.json  the app's training process (forkserver child) trains on CUDA; the app's own process and
#                         the forkserver never initialise CUDA (the sentinel of tests/test_gpu_readiness.py)
#   2. cuda_graph.txt     the CUDA-graph step equals the eager one, lazy R1 steps included (tests/test_fast_path.py)
#   3. bench.json         python -m dcgan bench (the fast loop, graphs on) and bench_trainer.json (--trainer)
#   4. crowd_gpu.json     the app serving 30 visitors (pictures fetched, 3 processes) while its run trains on CUDA
# DEVICE=cpu runs the same steps on the CPU (a dry run of the script itself). Each step's exit code is in status.json.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python}
PORT=${PORT:-7877}
USERS=${USERS:-30}
SECONDS_=${CROWD_SECONDS:-60}
mkdir -p "$OUT"
export PYTHONPATH=$PWD GRADIO_ANALYTICS_ENABLED=False
declare -A status

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>&1

# 1. the training process on CUDA, and no CUDA in the app's process or the forkserver before the run
timeout 300 "$PY" - "$OUT" "$DEVICE" <<'PY' > "$OUT/trainer_cuda.log" 2>&1
import json, sys, time
import multiprocessing.forkserver as forkserver
import tests.cuda_sentinel as sentinel
import torch
from dcgan import worker
from dcgan.trainer import FINISHED, Trainer
from tests.conftest import tiny_config
out, device = sys.argv[1], sys.argv[2]
ctx = worker.context()
ctx.set_forkserver_preload(["tests.cuda_sentinel", *forkserver._forkserver._preload_modules])
trainer = Trainer(metric_fn=sentinel.seen)
t0 = time.perf_counter()
trainer.start(tiny_config(steps=400, metric_every=400, device=device, precision="auto", out_dir=f"{out}/runs",
                          batch_size=64, ngf=32, ndf=32, r1_gamma=1.0))
started_s = time.perf_counter() - t0
trainer.wait(240)
st = trainer.status()
rows = trainer.metrics.since(0)
result = {"state": str(st.state), "device": st.device, "precision": st.precision, "iteration": st.iteration,
          "start_s": round(started_s, 2), "images_per_s_last": rows[-1]["images_per_s"] if rows else None,
          "child_before_metrics": trainer.history()[0] if trainer.history() else None,
          "app_cuda_calls": len(sentinel.CALLS), "app_cuda_initialized": torch.cuda.is_initialized(),
          "error": st.error}
json.dump(result, open(f"{out}/trainer_cuda.json", "w"), indent=2)
print(result)
ok = (st.state == FINISHED and st.device.startswith(device) and not result["app_cuda_calls"]
      and not result["app_cuda_initialized"])
sys.exit(0 if ok else 1)
PY
status[trainer]=$?

# 2. the CUDA-graph step against the eager one (lazy R1 included); skipped without a GPU
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_fast_path.py -k cuda_graph -rs > "$OUT/cuda_graph.txt" 2>&1
status[cuda_graph]=$?

# 3. the bench: the fast loop (CUDA graphs) and the app's training process
timeout 300 "$PY" -m dcgan bench --device "$DEVICE" --image-size 28 --channels 1 --batch 64,128 --steps 200 \
    --out "$OUT/bench.json" > "$OUT/bench.log" 2>&1
status[bench]=$?
timeout 300 "$PY" -m dcgan bench --device "$DEVICE" --image-size 28 --channels 1 --batch 64 --steps 200 --trainer \
    --out "$OUT/bench_trainer.json" > "$OUT/bench_trainer.log" 2>&1
status[bench_trainer]=$?

# 4. the crowd against the app while its run trains on the GPU (the default digits recipe, fresh checkpoints)
"$PY" - "$OUT" "$DEVICE" "$PORT" <<'PY' > "$OUT/app.log" 2>&1 &
import sys
import app
from dcgan.config import TrainConfig
from dcgan.data import load_dataset
from ui.state import Studio
out, device, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
studio = Studio(root=f"{out}/app_runs")
demo = app.build_app(studio)
cfg = TrainConfig(dataset="digits", image_size=28, channels=1, steps=10**7, device=device, out_dir=f"{out}/app_runs")
studio.trainer.start(cfg, data=load_dataset(cfg))
app.launch(demo, studio, "127.0.0.1", port)
PY
APP=$!
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/" > /dev/null && break; sleep 1; done
timeout 400 "$PY" -m dcgan crowd --url "http://127.0.0.1:$PORT" --users "$USERS" --seconds "$SECONDS_" \
    --processes 3 --json --out "$OUT/crowd_gpu.json" > "$OUT/crowd_gpu.log" 2>&1
status[crowd]=$?
kill -TERM "$APP"; wait "$APP"

{ echo "{"; for k in "${!status[@]}"; do echo "  \"$k\": ${status[$k]},"; done; echo "  \"device\": \"$DEVICE\"}"; } \
    > "$OUT/status.json"
cat "$OUT/status.json"
