#!/usr/bin/env bash
# selfsup's CPU training step against PyTorch's, in alternating rounds (ABBA: selfsup first in odd
# rounds, PyTorch first in even ones), for a ratio that one run cannot settle on a shared VM: the
# spread between runs there is as large as the differences (BENCHMARKS.md, issue 17). Prints each
# round, a table of the rounds with the ratios, their medians, and the median parts of each step.
#
#   bench/alternate_train_step.sh                      # 8 rounds, SimCLR, batch 64 at 32 px, ImageNet stem
#   ROUNDS=4 bench/alternate_train_step.sh --batch 256 --size 32 --methods simclr --stem imagenet
#
# Arguments go to both programs (default: --batch 64 --size 32 --steps 20 --warmup 3 --methods simclr
# --stem imagenet; one method). Environment: ROUNDS (8), CONFIGS (PyTorch's, default
# compute,compute_fused,eager,eager_fused), PYTHON (python3 with torch), BENCH_BIN (as run_train_step.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
ARGS=("$@")
[[ ${#ARGS[@]} -eq 0 ]] && ARGS=(--batch 64 --size 32 --steps 20 --warmup 3 --methods simclr --stem imagenet)
CONFIGS=${CONFIGS:-compute,compute_fused,eager,eager_fused}
LOG=$(mktemp)
kit() { "$BIN" "${ARGS[@]}" 2>&1 | grep -E "ms/step \(loss|^\| selfsup.*\| [0-9.]+ \([0-9]+%\)"; }
pt() { "$PY" bench/train_step_reference.py "${ARGS[@]}" --configs "$CONFIGS" 2>&1 | grep "ms/step (loss"; }
echo "== machine: $(uname -n), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for r in $(seq 1 "${ROUNDS:-8}"); do
    echo "## round $r $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    if (( r % 2 )); then kit; pt; else pt; kit; fi
done | tee "$LOG"
"$PY" - "$LOG" <<'PYEOF'
import re, statistics, sys
rounds, cur = [], None
for line in open(sys.argv[1]):
    if line.startswith("## round"):
        cur = {"hdr": line.split()}
        rounds.append(cur)
        continue
    m = re.match(r"selfsup, [^:]*: \S+ ([\d.]+) ms/step", line)
    if m:
        cur["selfsup"] = float(m.group(1))
    m = re.match(r"\| selfsup[^|]*\| \S+ \| ([\d.]+) \(\d+%\) \| [\d.]+ \(\d+%\) \| ([\d.]+) \(\d+%\) \| ([\d.]+) \(\d+%\) \| ([\d.]+)", line)
    if m:
        cur["selfsup parts"] = tuple(map(float, m.groups()))
    m = re.match(r"PyTorch (compute only|eager|usual|torch.compile)(.*?)(, fused SGD)?: \S+ ([\d.]+) ms/step.*?(views ([\d.]+), forward ([\d.]+), backward ([\d.]+), optimizer ([\d.]+))?\)", line)
    if m:
        name = {"compute only": "compute", "torch.compile": "compile"}.get(m.group(1), m.group(1))
        name += " bf16" if "bf16" in m.group(2) else ""
        name += ", fused SGD" if m.group(3) else ""
        cur[name] = float(m.group(4))
        if m.group(5):
            cur[name + " parts"] = tuple(float(m.group(i)) for i in (6, 7, 8, 9))
rounds = [r for r in rounds if "selfsup" in r]
if not rounds:
    sys.exit("no complete round")
names = [k for k in rounds[0] if k not in ("hdr", "selfsup", "selfsup parts") and not k.endswith(" parts")]
med = statistics.median
print("\n| round (UTC, load) | selfsup | " + " | ".join(f"PyTorch {n}" for n in names) + " | PyTorch best / selfsup |")
print("|---" * (3 + len(names)) + "|")
ratios = {n: [] for n in names + ["best"]}
for r in rounds:
    best = min(r[n] for n in names if n in r)
    for n in names:
        if n in r:
            ratios[n].append(r[n] / r["selfsup"])
    ratios["best"].append(best / r["selfsup"])
    print(f"| {r['hdr'][2]} {r['hdr'][3]} ({r['hdr'][5]}) | {r['selfsup']:.1f} | "
          + " | ".join(f"{r.get(n, float('nan')):.1f}" for n in names) + f" | {ratios['best'][-1]:.2f}x |")
print(f"| median | {med(r['selfsup'] for r in rounds):.1f} | "
      + " | ".join(f"{med(r[n] for r in rounds if n in r):.1f}" for n in names) + f" | {med(ratios['best']):.2f}x |")
print("\nPyTorch / selfsup, median over the rounds (> 1: selfsup is faster): "
      + ", ".join(f"{n} {med(ratios[n]):.2f}x" for n in names))
print("\nMedian parts, ms (views = augmentation; PyTorch's compute rows have fixed views):")
print("| program | views | forward | backward | optimizer |\n|---|---|---|---|---|")
for key in ["selfsup parts"] + [n + " parts" for n in names]:
    ps = [r[key] for r in rounds if key in r]
    if ps:
        print(f"| {key[:-6]} | " + " | ".join(f"{med(p[i] for p in ps):.1f}" for i in range(4)) + " |")
PYEOF
rm -f "$LOG"
