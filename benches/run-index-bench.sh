#!/usr/bin/env bash
# FLAT / IVF_FLAT kernels vs faiss-cpu, HNSW vs hnswlib (see BENCHMARKS.md).
# Creates or reuses .venv, installs numpy, faiss-cpu and hnswlib into it if missing, then runs
# `cargo bench --bench index` with any arguments given here (e.g. --rows 50000 --skip-ivf).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${MISHARDS_BENCH_PYTHON:-}" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
    fi
    MISHARDS_BENCH_PYTHON="$PWD/.venv/bin/python"
fi
export MISHARDS_BENCH_PYTHON

if ! "$MISHARDS_BENCH_PYTHON" -c 'import numpy, faiss' 2>/dev/null; then
    "$MISHARDS_BENCH_PYTHON" -m pip install --quiet numpy faiss-cpu
fi
if ! "$MISHARDS_BENCH_PYTHON" -c 'import hnswlib' 2>/dev/null; then
    "$MISHARDS_BENCH_PYTHON" -m pip install --quiet hnswlib
fi

exec cargo bench --bench index -- "$@"
