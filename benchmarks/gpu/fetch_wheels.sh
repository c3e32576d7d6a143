#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that a GPU machine without internet
# needs to run medgan from the source tree (its image already has torch, scipy, scikit-image,
# click, safetensors, tensorboard, tqdm, pyyaml, matplotlib, pillow, pytest): MONAI, nibabel,
# pydicom and pydantic for CPython 3.12 on x86-64 Linux. Writes them to .whl/ in the repo root
# (ignored by git through .git/info/exclude); run_checks.sh installs them from there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY_VERSION="${PY_VERSION:-3.12}"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  "monai==1.6.1" "nibabel==5.4.2" "pydicom==3.0.2" \
  "pydantic==2.14.4" "pydantic_core==2.50.5" "typing-inspection==0.4.5" "annotated-types==0.8.0"
ls -l .whl
