#!/usr/bin/env bash
# Starts evcxr_jupyter for the "Rust (selfsup)" kernel with a persistent, warm build folder.
#
# evcxr compiles every cell; with a fresh temporary folder per kernel (its default) the first
# `:dep selfsup` recompiles tch and its C++ wrapper each time (minutes). A persistent
# EVCXR_TMPDIR keeps those artefacts, but two kernels must never share one at the same time, so
# each kernel takes the first free "slot" folder, held by a lock for the kernel's lifetime.
set -euo pipefail
build="${SELFSUP_EVCXR_BUILD:?the kernelspec sets SELFSUP_EVCXR_BUILD}"
# Runs that ./kit prepare trained into the cache, unless the caller chose otherwise: set but
# empty (the notebook tests, the homework grader) means none.
export SELFSUP_PREPARED_RUNS="${SELFSUP_PREPARED_RUNS-${SELFSUP_CACHE_RUNS:-}}"
mkdir -p "$build"
for slot in 0 1 2 3 4 5 6 7; do
    exec {lock}>"$build/slot-$slot.lock"
    if flock -n "$lock"; then
        export EVCXR_TMPDIR="$build/slot-$slot"
        mkdir -p "$EVCXR_TMPDIR"
        # The lock stays held by the open descriptor, inherited by evcxr_jupyter. cargo's build
        # log goes to a file, not over the terminal that started Jupyter; compile errors still
        # reach the notebook.
        exec "$SELFSUP_EVCXR_BIN" --control_file "$1" >"$EVCXR_TMPDIR/kernel.log" 2>&1
    fi
    exec {lock}>&-
done
# Eight kernels already running: this one builds in a temporary folder (cold, but correct).
exec "$SELFSUP_EVCXR_BIN" --control_file "$1"
