#!/usr/bin/env bash
# Regenerate the pinned, hashed requirement locks the image installs from (Linux x86_64, CPython 3.11),
# from pyproject.toml's dependencies. Needs `uv` (pip install uv). Commit the resulting *.txt files.
set -euo pipefail
cd "$(dirname "$0")/../.."
compile=(uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
    --no-header --custom-compile-command "docker/requirements/lock.sh")
"${compile[@]}" pyproject.toml --extra cuda -o docker/requirements/gpu.txt
"${compile[@]}" pyproject.toml docker/requirements/cpu.in --no-emit-package onnxruntime-gpu \
    -o docker/requirements/cpu.txt
"${compile[@]}" pyproject.toml --extra train -o docker/requirements/train.txt
"${compile[@]}" docker/requirements/build.in -o docker/requirements/build.txt
