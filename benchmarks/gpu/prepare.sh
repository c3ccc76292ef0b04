#!/usr/bin/env bash
# Prepare, on a machine with network access, what a GPU machine without network needs to run run.sh:
# the Python packages medgen uses that its image lacks, as manylinux/pure-Python wheels for Python 3.12,
# in the git-ignored folder .whl/ at the repository root (the folder run.sh installs from).
#
#   bash benchmarks/gpu/prepare.sh            # then carry .whl/ with the tree to the GPU machine
#
# The GPU image has torch, numpy, scipy, scikit-image, scikit-learn, matplotlib, tqdm, safetensors,
# tensorboard, pyyaml and einops, but not MONAI or nibabel. SimpleITK and nilearn are not carried:
# medgen imports them only for DICOM/NRRD input and the brain phantom, which the GPU check does not use.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .whl
rm -f .whl/*.whl
# Versions: the ones this project is tested with (pip show in the project's environment), else the latest.
pin() { "$PY" -m pip show "$1" 2>/dev/null | awk '/^Version:/{print "=="$2}'; }
for pkg in monai nibabel; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$pkg$(pin "$pkg")"
done
ls -l .whl
du -ch .whl/*.whl | tail -1
