#!/usr/bin/env bash
# One prepared GPU run (issue 18), under 8 minutes on one modern NVIDIA GPU: txt2img through noodlebox
# against diffusers' pipeline built from the same weights, same sigmas and same noise (bench/txt2img.py),
# SD1.5 at 512x512 and SDXL at 1024x1024, 20 euler steps, fp16, batch 1 and 4 eager, batch 1 compiled.
# Each run's JSON goes to $OUT (or ./gpu-bench-out), one file per run, plus a summary of the ratios.
#
# On a machine that cannot reach a package index, first run scripts/gpu_wheels.sh here and take
# .gpu-wheels/ along: the packages the image lacks are installed from it into a private folder.
#   bench/gpu.sh                 # uses python3 (a CUDA torch) and $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-bench-out}
mkdir -p "$out"
py=${PYTHON:-python3}
deps=${TMPDIR:-/tmp}/noodlebox-gpu-deps
if [ -d .gpu-wheels ]; then
    "$py" -m pip install -q --no-index --no-deps --target "$deps" .gpu-wheels/*.whl >"$out/pip.log" 2>&1 \
        || { echo "wheel install failed, see $out/pip.log"; exit 1; }
fi
export PYTHONPATH="$PWD:$deps${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export HOME=${BENCH_HOME:-${TMPDIR:-/tmp}/noodlebox-gpu-home}  # the random checkpoints are written under it once
"$py" - <<'PY' | tee "$out/machine.json"
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY
run() {  # name, arch, size, batch, compile
    local name=$1
    echo "== $name"
    timeout 420 "$py" bench/txt2img.py --arch "$2" --size "$3" --steps 20 --batch "$4" --compile "$5" \
        --parts auto,diffusers --baseline-precision fp16 >"$out/$name.json" 2>"$out/$name.err" \
        || echo "   $name failed: $(tail -c 300 "$out/$name.err")"
}
run sd15-512-b1 sd15 512 1 off
run sd15-512-b4 sd15 512 4 off
run sd15-512-b1-compiled sd15 512 1 on
run sdxl-1024-b1 sdxl 1024 1 off
run sdxl-1024-b4 sdxl 1024 4 off
run sdxl-1024-b1-compiled sdxl 1024 1 on
"$py" - "$out" <<'PY' | tee "$out/summary.json"
import json, pathlib, sys
rows = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("s*.json")):
    try:
        report = json.loads(path.read_text())
    except ValueError:
        rows[path.stem] = "no JSON (see its .err)"
        continue
    auto, base = report.get("auto", {}), report.get("diffusers", {})
    rows[path.stem] = {"comparison": {k: round(v, 3) for k, v in report.get("comparison", {}).items()
                                      if isinstance(v, float)},
                       "auto_total_s": auto.get("total_s"), "diffusers_total_s": base.get("total_s"),
                       "errors": {p: r["error"][-300:] for p, r in report.items() if isinstance(r, dict) and "error" in r}}
print(json.dumps(rows, indent=1))
PY
