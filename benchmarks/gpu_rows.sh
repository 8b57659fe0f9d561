#!/usr/bin/env bash
# Every GPU row of the benchmarks in one run on a fresh GPU machine, one table at the end.
#
#   bash benchmarks/gpu_rows.sh [--root DATA] [--device cuda:0]   # installs, then runs
#   bash benchmarks/gpu_rows.sh --smoke                           # tiny sizes, CPU, no install
#
# Without --smoke: makes a virtual environment (.gpu-venv in the repository, or $GPU_VENV),
# installs torch 2.13.0 from the package index (the Linux wheels there are CUDA builds) and
# this package into it, checks that CUDA works, and runs benchmarks/gpu_rows.py (per-slice
# fitting of all slices at once, training to convergence, prediction throughput, the NLL
# forward + backward pass, EM), all within 8 minutes on one recent GPU (the timeout below).
# With --smoke: runs benchmarks/gpu_rows.py --smoke with the Python at hand ($PYTHON or
# python3), which must already have deepgmm importable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

if [[ "${1:-}" == "--smoke" ]]; then
    exec "${PYTHON:-python3}" "$here/gpu_rows.py" "$@"
fi

venv="${GPU_VENV:-$repo/.gpu-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet "$repo"
"$venv/bin/python" - <<'PY'
import sys
import torch
if not torch.cuda.is_available() or torch.version.cuda is None:
    sys.exit(f"error: torch {torch.__version__} sees no CUDA device (CUDA build: "
             f"{torch.version.cuda}); this script needs a GPU machine")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
exec timeout 480 "$venv/bin/python" "$here/gpu_rows.py" "$@"
