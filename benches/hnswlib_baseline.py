#!/usr/bin/env python3
"""hnswlib baseline for the HNSW part of `cargo bench --bench index`: the same files, the same
parameters.

Reads the clustered base/query files and the exact top-k ids the Rust bench wrote into DIR,
builds hnswlib's index (all cores, as hnswlib's add_items does by default), then for each ef times
one batch knn_query over all queries (all cores) and measures recall@k. Prints `key value` lines
for the Rust side to parse.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

try:
    import hnswlib
except ImportError:
    sys.exit("hnswlib is not installed: run benches/run-index-bench.sh (it pip-installs hnswlib)")


def load(path, dim, dtype="<f4"):
    return np.ascontiguousarray(np.fromfile(path, dtype=dtype).reshape(-1, dim))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", default="16,32,64,128,256", help="comma-separated search ef values")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--build-reps", type=int, default=1)
    p.add_argument("--seed", type=int, default=100)
    a = p.parse_args()
    d, k = a.dim, a.k
    try:
        from importlib.metadata import version

        print("hnswlib_version", version("hnswlib"))
    except Exception:  # the module has no __version__; a source install may lack metadata
        print("hnswlib_version", "?")
    print("hnswlib_threads", os.cpu_count())
    xb = load(os.path.join(a.dir, "ivf_base.f32"), d)
    xq = load(os.path.join(a.dir, "ivf_query.f32"), d)
    gt = np.fromfile(os.path.join(a.dir, "ivf_gt.i64"), dtype="<i8").reshape(-1, k)
    labels = np.arange(len(xb), dtype=np.int64)

    builds = []
    index = None
    for _ in range(max(1, a.build_reps)):
        t0 = time.perf_counter()
        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=len(xb), M=a.m, ef_construction=a.ef_construction, random_seed=a.seed)
        index.add_items(xb, labels)
        builds.append(time.perf_counter() - t0)
    print("hnsw_build", statistics.median(builds))
    print("hnsw_build_best", min(builds))

    for ef in [int(e) for e in a.ef.split(",") if e]:
        index.set_ef(max(ef, k))
        index.knn_query(xq, k=k)  # warm-up
        times = []
        for _ in range(max(1, a.reps)):
            t0 = time.perf_counter()
            index.knn_query(xq, k=k)
            times.append(time.perf_counter() - t0)
        ids, _ = index.knn_query(xq, k=k)
        hits = sum(len(set(ids[q]) & set(gt[q])) for q in range(len(xq)))
        print(f"hnsw_batch_ef{ef}", statistics.median(times))
        print(f"hnsw_batch_ef{ef}_best", min(times))
        print(f"hnsw_recall_ef{ef}", hits / gt.size)


if __name__ == "__main__":
    main()
