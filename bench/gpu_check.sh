#!/usr/bin/env bash
# The prepared GPU check of issue 14: one command, no arguments (make gpu-check).
#
# Without CUDA: one line saying so, exit 0, nothing run. With CUDA: installs the packages the
# machine lacks (captum, grad-cam, torchcam, pycocotools, ttach) from the wheels in
# .gpu-bundle/wheels into a temporary folder, runs loupe from this source tree
# (PYTHONPATH=src) with LOUPE_ASSETS=.gpu-bundle/assets (both made by `make gpu-bundle`), and
# hands over to bench/gpu_check.py, which writes gpu-check.md and gpu-check.log to $OUT (when
# set) or runs/gpu-check/ and exits 1 naming the failed steps. PYTHON (default python3) is the
# interpreter that holds torch; LOUPE_GPU_BUNDLE moves the bundle folder.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python3}

if ! cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null); then
  echo "gpu-check: step setup FAILED: $PYTHON cannot import torch" >&2
  exit 1
fi
if [ "$cuda" != 1 ]; then
  echo "gpu-check: no CUDA device visible to $PYTHON; nothing run"
  exit 0
fi

bundle=${LOUPE_GPU_BUNDLE:-.gpu-bundle}
site=$(mktemp -d "${TMPDIR:-/tmp}/loupe-gpu-site.XXXXXX") || exit 1
wheels=()
for pair in captum:captum grad_cam:pytorch_grad_cam torchcam:torchcam pycocotools:pycocotools \
            ttach:ttach; do
  dist=${pair%%:*} module=${pair#*:}
  "$PYTHON" -c "import $module" 2>/dev/null && continue
  found=$(ls "$bundle"/wheels/"$dist"-*.whl 2>/dev/null | head -n 1)
  if [ -z "$found" ]; then
    echo "gpu-check: step install FAILED: $module is missing and $bundle/wheels has no" \
         "$dist wheel (make gpu-bundle)" >&2
    exit 1
  fi
  wheels+=("$found")
done
if [ ${#wheels[@]} -gt 0 ]; then
  echo "gpu-check: installing ${wheels[*]##*/}"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
       --target "$site" "${wheels[@]}"; then
    echo "gpu-check: step install FAILED: pip could not install the bundled wheels" >&2
    exit 1
  fi
fi

export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export LOUPE_ASSETS="${LOUPE_ASSETS:-$PWD/$bundle/assets}"
exec "$PYTHON" bench/gpu_check.py
