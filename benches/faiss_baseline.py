#!/usr/bin/env python3
"""faiss-cpu baseline for `cargo bench --bench index`: the same files, the same parameters.

Reads the raw little-endian f32 files the Rust bench wrote into DIR, times faiss's IndexFlatL2
(nq = all FLAT queries, and nq = 1) and IndexIVFFlat (train + add, then nprobe search in one batch
and one query at a time), and prints `key value` lines for the Rust side to parse. It also writes
faiss's exact top-k ids so the Rust bench can check that both exact searches agree.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

try:
    import faiss
except ImportError:
    sys.exit("faiss is not installed: run benches/run-index-bench.sh (it pip-installs faiss-cpu)")


def load(path, dim, dtype="<f4"):
    return np.ascontiguousarray(np.fromfile(path, dtype=dtype).reshape(-1, dim))


def timings(fn, reps, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def report(key, times):
    """`key` is the median, `key_best` the fastest run (what an undisturbed run gets)."""
    print(key, statistics.median(times))
    print(key + "_best", min(times))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--build-reps", type=int, default=2)
    p.add_argument("--single", type=int, default=20, help="single queries timed for nq=1")
    p.add_argument("--skip-flat", action="store_true")
    p.add_argument("--skip-ivf", action="store_true")
    a = p.parse_args()
    d, k = a.dim, a.k
    print("faiss_version", faiss.__version__)
    print("faiss_threads", faiss.omp_get_max_threads())

    if not a.skip_flat:
        xb = load(os.path.join(a.dir, "flat_base.f32"), d)
        xq = load(os.path.join(a.dir, "flat_query.f32"), d)
        index = faiss.IndexFlatL2(d)
        index.add(xb)
        report("flat_batch", timings(lambda: index.search(xq, k), a.reps))
        index.search(xq[:1], k)  # warm-up
        singles = []
        for i in range(min(a.single, len(xq))):
            singles += timings(lambda: index.search(xq[i : i + 1], k), 1, warmup=False)
        report("flat_single", singles)
        _, ids = index.search(xq, k)
        ids.astype("<i8").tofile(os.path.join(a.dir, "flat_faiss_ids.i64"))

    if not a.skip_ivf:
        xb = load(os.path.join(a.dir, "ivf_base.f32"), d)
        xq = load(os.path.join(a.dir, "ivf_query.f32"), d)
        gt = np.fromfile(os.path.join(a.dir, "ivf_gt.i64"), dtype="<i8").reshape(-1, k)
        built = []

        def build():
            quantizer = faiss.IndexFlatL2(d)
            ivf = faiss.IndexIVFFlat(quantizer, d, a.nlist, faiss.METRIC_L2)
            ivf.train(xb)
            ivf.add(xb)
            built[:] = [quantizer, ivf]  # the index does not own its quantizer

        report("ivf_build", timings(build, a.build_reps, warmup=False))
        ivf = built[1]
        ivf.nprobe = a.nprobe
        report("ivf_batch", timings(lambda: ivf.search(xq, k), a.reps))

        def one_by_one():
            for i in range(len(xq)):
                ivf.search(xq[i : i + 1], k)

        report("ivf_single_total", timings(one_by_one, (a.reps + 1) // 2))
        _, ids = ivf.search(xq, k)
        hits = sum(len(set(ids[q]) & set(gt[q])) for q in range(len(xq)))
        print("ivf_recall", hits / gt.size)


if __name__ == "__main__":
    main()
