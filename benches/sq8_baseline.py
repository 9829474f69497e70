#!/usr/bin/env python3
"""faiss-cpu anchor for `cargo bench --bench index_sq8`: IndexIVFScalarQuantizer(QT_8bit) on the same files.

Reads the clustered base/query files and the exact top-k ids the Rust bench wrote into DIR
(raw little-endian f32 / i64, as benches/faiss_baseline.py), builds faiss's IVF_SQ8 (train + add,
all cores) `--build-reps` times and prints `build <seconds>` for each. Then it answers commands on
stdin, one per line, so the Rust side can alternate its own runs with faiss's on a shared machine:
`nprobe N` times `--reps` batch searches of all queries after a warm-up and prints
`curve anchor N <recall> <qps median> <qps best>`; `quit` ends.
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
    sys.exit("faiss is not installed: pip install faiss-cpu numpy (see benches/index_sq8.rs)")


def load(path, dim, dtype="<f4"):
    return np.ascontiguousarray(np.fromfile(path, dtype=dtype).reshape(-1, dim))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--metric", choices=["l2", "ip"], default="l2")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--build-reps", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234, help="k-means seed (faiss's default 1234)")
    a = p.parse_args()
    d, k = a.dim, a.k
    print("faiss_version", faiss.__version__, flush=True)
    print("faiss_threads", faiss.omp_get_max_threads(), flush=True)
    xb = load(os.path.join(a.dir, "ivf_base.f32"), d)
    xq = load(os.path.join(a.dir, "ivf_query.f32"), d)
    gt = np.fromfile(os.path.join(a.dir, "ivf_gt.i64"), dtype="<i8").reshape(-1, k)
    metric = faiss.METRIC_L2 if a.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    built = []
    for _ in range(max(1, a.build_reps)):
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlatL2(d) if a.metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, a.nlist, faiss.ScalarQuantizer.QT_8bit, metric)
        index.cp.seed = a.seed
        index.train(xb)
        index.add(xb)
        print("build", time.perf_counter() - t0, flush=True)
        built[:] = [quantizer, index]  # the index does not own its quantizer
    index = built[1]
    # codes + ids, as faiss's ArrayInvertedLists holds them
    print("memory_bytes", index.ntotal * (index.code_size + 8), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        nprobe = int(cmd[1])
        index.nprobe = nprobe
        index.search(xq, k)  # warm-up
        times = []
        for _ in range(max(1, a.reps)):
            t0 = time.perf_counter()
            index.search(xq, k)
            times.append(time.perf_counter() - t0)
        _, ids = index.search(xq, k)
        hits = sum(len(set(ids[q]) & set(gt[q])) for q in range(len(xq)))
        nq = len(xq)
        print(
            "curve anchor", nprobe, hits / gt.size, nq / statistics.median(times), nq / min(times),
            flush=True,
        )


if __name__ == "__main__":
    main()
