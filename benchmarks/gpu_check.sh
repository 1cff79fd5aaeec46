#!/usr/bin/env bash
# The GPU check: ONE command on a machine with a CUDA GPU, under 8 minutes, writing a summary file.
#
#   benchmarks/gpu_check.sh                    the check: versions, the CUDA-only tests, bf16 vs fp32 losses,
#                                              step ratios (paper preset, a small net), GPU utilisation while
#                                              `shrink train` runs the paper preset for 90 s, a kill-and-resume
#                                              on CUDA (a test), two workers on one GPU
#   benchmarks/gpu_check.sh --train-gpu-preset studies/presets/gpu.toml on .gpu-data/{train,dev}; best.ckpt
#                                              comes back for `shrink eval` on Kodak anywhere
#   benchmarks/gpu_check.sh --fetch-wheels [core]  (here, with PyPI) the wheels the GPU image lacks -> .whl/
#   benchmarks/gpu_check.sh --fetch-data       (here) copy ../shared/data/{train,dev} -> .gpu-data/
#
# Results go to $OUT (the device tool's folder) or runs/gpu_check/: summary.md, and the logs.
# Where `shrink` is not installed, the wheels in .whl/ are installed into a scratch folder and the project is
# imported from this checkout (PYTHONPATH), so the device tool's copy of the working tree runs as it is:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}

# The wheels for Python 3.12 on x86-64 that the GPU image (torch, numpy, pillow, scipy, scikit-image,
# safetensors, tqdm, pytest are there) lacks: training needs the first line, workers the second.
CORE_WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
pyjpegli==0.3.2 pytorch-msssim==1.0.0"
SEARCH_WHEELS="optuna==5.1.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3 \
psycopg==3.3.9 optuna-dashboard==0.21.0 bottle==0.13.5 plotly==7.1.0"

exclude() { grep -qx "/$1/" .git/info/exclude 2>/dev/null || echo "/$1/" >>.git/info/exclude; }

case "${1:-}" in
--fetch-wheels)  # [core]: the training wheels only (3 MB), to carry beside .gpu-data
    exclude .whl
    wheels="$CORE_WHEELS"
    [ "${2:-}" = core ] || wheels="$wheels $SEARCH_WHEELS"
    # shellcheck disable=SC2086
    exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $wheels
    ;;
--fetch-data)
    exclude .gpu-data
    mkdir -p .gpu-data && cp -r ../shared/data/train ../shared/data/dev .gpu-data/ && du -sh .gpu-data
    exit
    ;;
esac

OUT_DIR=${OUT:-runs/gpu_check}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/summary.md
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import shrink.compression.trainer" 2>/dev/null; then
    SITE=$WORK/site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 2
    mkdir -p "$SITE/shrink"  # the package-dir mapping of pyproject.toml, as links to this checkout
    for folder in compression search dashboards; do ln -s "$REPO/$folder" "$SITE/shrink/$folder"; done
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
SHRINK=("$PY" -m shrink.search.cli)
# A dry run on a machine without a GPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_TRAIN_S=20 benchmarks/gpu_check.sh
DEVICE=${GPU_CHECK_DEVICE:-cuda}
TRAIN_S=${GPU_CHECK_TRAIN_S:-90}
SAMPLES=(--set data.train=samples:train --set data.dev=samples:dev --set data.dev_max_images=3)

say() { echo "$*" | tee -a "$SUMMARY"; }
section() { say ""; say "## $*"; }
# stage NAME SECONDS COMMAND...: run with a time limit; its output goes to NAME.log and into the summary
stage() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    local code=$?
    say '```'
    tail -n 25 "$OUT_DIR/$name.log" | tee -a "$SUMMARY"
    say '```'
    say "($name: exit $code, $((SECONDS - start)) s)"
}

: >"$SUMMARY"
if [ "${1:-}" = --train-gpu-preset ]; then
    say "# gpu.toml trained on $(hostname), $(date -u +%FT%TZ)"
    stage train_gpu_preset 560 "${SHRINK[@]}" train --config studies/presets/gpu.toml \
        --set data.train="$REPO/.gpu-data/train" --set data.dev="$REPO/.gpu-data/dev" --out "$WORK/gpu"
    cp "$WORK/gpu/best.ckpt" "$OUT_DIR/gpu_best.ckpt" && say "best.ckpt: $(du -h "$OUT_DIR/gpu_best.ckpt" | cut -f1)"
    exit
fi

say "# GPU check, $(hostname), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
section "Versions"
say '```'
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN', \
torch.backends.cudnn.version(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" \
    2>&1 | tee -a "$SUMMARY"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
say '```'

section "CUDA-only tests (bf16 turns, kill and resume) and the device-safety tests"
stage tests 200 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_device_safety.py tests/test_pipeline.py \
    tests/test_jpeg_proxy.py

section "bf16 autocast vs fp32: losses and gradients"
stage bf16_paper 90 "$PY" benchmarks/bf16_agreement.py --config studies/presets/paper.toml "${SAMPLES[@]}" \
    --set device.device="$DEVICE"

section "Step time: identity codec, real codec serial, real codec pipelined"
stage steps_paper 120 "$PY" benchmarks/step_overhead.py --config studies/presets/paper.toml "${SAMPLES[@]}" \
    --set device.device="$DEVICE" --steps 10 --repeats 4
stage steps_small 90 "$PY" benchmarks/step_overhead.py --config studies/presets/demo.toml \
    --set device.device="$DEVICE" --set training.batch_size=32 --steps 10 --repeats 4

section "GPU utilisation while shrink train runs the paper preset for $TRAIN_S s"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    >"$OUT_DIR/nvidia_smi.csv" 2>&1 &
SMI=$!
stage train_paper 150 "${SHRINK[@]}" train --config studies/presets/paper.toml "${SAMPLES[@]}" \
    --set training.time_budget_s="$TRAIN_S" --set training.steps_per_epoch=500 --set device.device="$DEVICE" \
    --out "$WORK/paper"
kill "$SMI" 2>/dev/null
"$PY" - "$OUT_DIR/nvidia_smi.csv" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.strip() and line[0].isdigit()]
busy = [float(r[0]) for r in rows]
first = next((i for i, b in enumerate(busy) if b > 0), len(busy))  # from the first kernel on
running = busy[first:]
if running:
    print(f"GPU busy: mean {sum(running) / len(running):.1f} % over {len(running)} samples (0.5 s) from the "
          f"first kernel on; >= 85 %: {100 * sum(b >= 85 for b in running) / len(running):.0f} % of samples; "
          f"memory up to {max(float(r[1]) for r in rows):.0f} MiB")
else:
    print("GPU busy: no samples (nvidia-smi gave none)")
EOF

section "Two workers on one GPU (shrink launch --gpus 0 --workers-per-gpu 2)"
STORAGE=sqlite:///$WORK/launch.db
"${SHRINK[@]}" study create studies/demo.toml --storage "$STORAGE" --set budget.n_trials=4 \
    >"$OUT_DIR/launch_create.log" 2>&1
stage launch 150 "${SHRINK[@]}" launch --storage "$STORAGE" --study-name demo --gpus 0 --workers-per-gpu 2
"$PY" - "$STORAGE" "$OUT_DIR/launch.log" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import sys
import optuna
study = optuna.load_study(study_name="demo", storage=sys.argv[1])
states = [t.state.name for t in study.get_trials(deepcopy=False)]
log = open(sys.argv[2]).read()
print(f"trials: {states.count('COMPLETE')} COMPLETE, {states.count('PRUNED')} PRUNED, {states.count('FAIL')} FAIL, "
      f"{states.count('RUNNING')} RUNNING; lines from [gpu0.0]: {log.count('[gpu0.0]')}, "
      f"[gpu0.1]: {log.count('[gpu0.1]')}")
EOF
say ""
say "total: $SECONDS s"
rm -rf "$WORK"
