#!/usr/bin/env bash
# Download the image's pinned wheels on the host into wheelhouse/<variant>/ for an offline build
# (--build-arg WHEELS=wheelhouse, or MNIST_WHEELS=wheelhouse for compose): pip inside `docker build` then
# runs with --no-index, hermetic and reproducible from the locks. CI uses it; machines without registry
# access need it. (The default build downloads the same locked wheels from the package index instead.)
# ($PYTHON, default python3, runs pip: any interpreter whose pip reaches the package index.)
# Usage: docker/ci/wheelhouse.sh cpu|gpu|train   (cpu ~60 MB; gpu: onnxruntime-gpu + CUDA/cuDNN, ~1.5 GB;
#                                                  train: torch with CUDA for docker/trainer.Dockerfile)
set -euo pipefail
cd "$(dirname "$0")/../.."
variant=${1:?usage: $0 cpu|gpu|train}
dest=wheelhouse/$variant
mkdir -p "$dest"
# The lock alone decides versions: a machine-wide pip constraint (e.g. a torch cap) must not veto it.
export PIP_CONSTRAINT=/dev/null
# Debian bookworm and python:3.11-slim have glibc 2.36: every manylinux tag up to 2_36 runs there.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
for lock in "docker/requirements/$variant.txt" docker/requirements/build.txt; do
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: --dest "$dest" \
        "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 -r "$lock"
done
du -sh "$dest"
