# Sourced by the training-step benchmarks (run_train_step.sh, alternate_train_step.sh): the python
# with torch (PYTHON, default python3), its torch/lib on LD_LIBRARY_PATH, tch's autocast warnings
# silenced, and BIN, selfsup's bench_train_step: BENCH_BIN if set; else built with cargo (a no-op
# when up to date: an old binary would time old code); else the binary carried to a GPU machine
# without Rust (.bin/bench_train_step, docs/gpu.md).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
TORCH_LIB=$("$PY" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TORCH_CPP_LOG_LEVEL=${TORCH_CPP_LOG_LEVEL:-ERROR}
BIN=${BENCH_BIN:-}
if [[ -z "$BIN" ]]; then
    if command -v cargo >/dev/null; then
        LIBTORCH_USE_PYTORCH=1 cargo build --release --example bench_train_step
        BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_train_step"
    elif [[ -x .bin/bench_train_step ]]; then
        BIN=.bin/bench_train_step
    else
        echo "no cargo and no .bin/bench_train_step: build it with cargo build --release --example bench_train_step" >&2
        exit 2
    fi
fi
