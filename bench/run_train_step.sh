#!/usr/bin/env bash
# One training step of each method, selfsup (examples/bench_train_step.rs) next to PyTorch
# (bench/train_step_reference.py), in one run on this machine; prints one combined table with
# the speed-ups (issue 4, "Speed": on an H100, >= 1.2x the best PyTorch eager configuration
# and >= 10x the usual pipeline, end to end).
#
#   bench/run_train_step.sh                                   # the issue's setting: batch 256, 96x96
#   bench/run_train_step.sh --batch 16 --size 64 --steps 3 --warmup 1   # a CPU-sized check
#
#   bench/run_train_step.sh --batch 64 --size 32 --steps 5 --warmup 2 --stem cifar   # issue 17's CPU setting
#
# Options (passed to both programs): --batch --size --steps --warmup --methods --stem.
# Environment: PYTHON (default python3, with torch and torchvision), BENCH_BIN (default: cargo
# builds target/release/examples/bench_train_step; without cargo, .bin/bench_train_step), COMPILE
# (1: add the torch.compile configuration; default 1 on CUDA, 0 on the CPU), OUT_DIR (where the
# JSON results go; default a temporary folder), CPU_BF16 (on the CPU: `auto` runs the bf16 rows
# of both programs when the CPU has native bf16 (avx512_bf16, amx_bf16, Arm bf16) and skips them
# otherwise; `force` runs them anyway, emulated and labelled so; `off` skips them), CONFIGS
# (the PyTorch configurations; default usual,eager[,compile] on CUDA, usual,eager,compute,compute_fused
# [,compute_bf16,compute_bf16_fused] on the CPU; `_fused`: torch.optim.SGD(fused=True)).
#
# On the CPU the rows are: selfsup fp32 and bf16 (end to end: augmentation included), PyTorch's
# usual pipeline, its batched augmentation (eager), and its compute-only step (fixed views, no
# augmentation) in fp32 and bf16; the combined table gives selfsup's ratio to each.
#
# On a GPU machine without Rust (docs/gpu.md): build here with
# `cargo build --release --example bench_train_step`, copy the binary into the git-ignored .bin/,
# carry .bin, and run this script there; it points LD_LIBRARY_PATH at that machine's torch/lib.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT"
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
COMPILE=${COMPILE:-$CUDA}
CPU_BF16=${CPU_BF16:-auto}
NATIVE_BF16=0
grep -qwE 'avx512_bf16|amx_bf16|bf16' /proc/cpuinfo 2>/dev/null && NATIVE_BF16=1
RUN_BF16=0
if [[ "$CUDA" == 0 && "$CPU_BF16" != off ]] && [[ "$NATIVE_BF16" == 1 || "$CPU_BF16" == force ]]; then
    RUN_BF16=1
fi
if [[ -z "${CONFIGS:-}" ]]; then
    if [[ "$CUDA" == 1 ]]; then
        CONFIGS=usual,eager
        [[ "$COMPILE" == 1 ]] && CONFIGS=usual,eager,compile
    else
        CONFIGS=usual,eager,compute,compute_fused
        [[ "$RUN_BF16" == 1 ]] && CONFIGS=$CONFIGS,compute_bf16,compute_bf16_fused
        [[ "$COMPILE" == 1 ]] && CONFIGS=$CONFIGS,compile
    fi
fi

echo "== machine: $(uname -n), $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), native bf16: $([[ $NATIVE_BF16 == 1 ]] && echo yes || echo no)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== selfsup, fp32"
"$BIN" "$@" --precision off --json "$OUT/selfsup_fp32.json"
if [[ "$CUDA" == 1 ]]; then
    echo "== selfsup, bf16 autocast + channels-last"
    "$BIN" "$@" --precision bf16 --channels-last --json "$OUT/selfsup_bf16.json"
elif [[ "$RUN_BF16" == 1 ]]; then
    echo "== selfsup, CPU bf16 autocast$([[ $NATIVE_BF16 == 0 ]] && echo ', EMULATED: this CPU has no native bf16')"
    SELFSUP_CPU_BF16=$([[ $NATIVE_BF16 == 1 ]] && echo auto || echo force) \
        "$BIN" "$@" --precision bf16 --json "$OUT/selfsup_bf16.json"
else
    echo "== CPU bf16 rows skipped: no native bf16 on this CPU (CPU_BF16=force runs them, emulated)"
fi
echo "== PyTorch ($CONFIGS)"
"$PY" bench/train_step_reference.py "$@" --configs "$CONFIGS" --json "$OUT/pytorch.json"

"$PY" - "$OUT" <<'EOF'
import glob, json, os, sys
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")), key=lambda p: "pytorch" in p):
    rows += json.load(open(path))  # selfsup first
r0 = rows[0]
print(f"\n# Training step, ResNet-18 ({r0.get('stem', 'imagenet')} stem), {r0['size']}x{r0['size']}, batch {r0['batch']}, two views, "
      f"{r0['steps']} steps after {r0['warmup']} warm-up; selfsup on {r0['device']}\n")
print("| implementation, configuration | method | median ms/step | p90 ms/step | images/s | CPU ms/step |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['config']} | {r['method']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
          f"{r['images_per_sec']:.0f} | {r['cpu_ms']:.0f} |")
print("\nCPU ms/step: this process, all threads (for the usual pipeline without its DataLoader workers).")

def pick(method, impl, pred):
    found = [r for r in rows if r["method"] == method and r["impl"] == impl and pred(r)]
    return found[0] if found else None

methods = list(dict.fromkeys(r["method"] for r in rows))
cuda = r0["device"].startswith("CUDA")
ratio = lambda theirs, ours: f"{theirs['median_ms'] / ours['median_ms']:.2f}x" if theirs and ours else "-"  # noqa: E731
print("\nSpeed-up of selfsup = PyTorch median ms/step / selfsup median ms/step (> 1: selfsup is faster).")
if cuda:
    print("\"selfsup best\": bf16 autocast + channels-last.\n")
    print("| method | selfsup best ms/step | vs PyTorch usual (target >= 10x) | vs PyTorch eager (target >= 1.2x) "
          "| vs torch.compile | selfsup fp32 vs PyTorch usual |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        fp32 = pick(m, "selfsup", lambda r: r["precision"] == "fp32")
        best = pick(m, "selfsup", lambda r: r["precision"] != "fp32") or fp32
        kind = lambda k: pick(m, "pytorch", lambda r: r.get("kind") == k)  # noqa: E731
        print(f"| {m} | {best['median_ms']:.1f} | {ratio(kind('usual'), best)} | {ratio(kind('eager'), best)} | "
              f"{ratio(kind('compile'), best)} | {ratio(kind('usual'), fp32)} |" if best else f"| {m} | - | - | - | - | - |")
else:
    print("On the CPU selfsup's step includes its augmentation; PyTorch \"compute\" has none (fixed views).")
    print("\"best\": the fastest row of each program (issue 17's goal: selfsup best >= 1.0x PyTorch best).\n")
    print("| method | selfsup fp32 vs PyTorch compute fp32 | selfsup bf16 vs PyTorch compute bf16 "
          "| selfsup fp32 vs PyTorch eager fp32 | selfsup best vs PyTorch best | PyTorch's best row |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        fp32 = pick(m, "selfsup", lambda r: r["precision"] == "fp32")
        bf16 = pick(m, "selfsup", lambda r: r["precision"] != "fp32")
        kind = lambda k: pick(m, "pytorch", lambda r: r.get("kind") == k)  # noqa: E731
        best = lambda impl: min((r for r in rows if r["method"] == m and r["impl"] == impl),  # noqa: E731
                                key=lambda r: r["median_ms"], default=None)
        print(f"| {m} | {ratio(kind('compute'), fp32)} | {ratio(kind('compute_bf16'), bf16)} | "
              f"{ratio(kind('eager'), fp32)} | {ratio(best('pytorch'), best('selfsup'))} | "
              f"{best('pytorch')['config'] if best('pytorch') else '-'} |")
EOF
