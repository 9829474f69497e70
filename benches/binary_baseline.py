#!/usr/bin/env python3
"""faiss-cpu baseline for `cargo bench --bench index_binary`: the same files, the same parameters.

Reads the packed binary vectors the Rust bench wrote into DIR (`base.u8`, `query.u8`, row-major,
DIM/8 bytes per vector) and the exact top-k Hamming distances (`gt_dist.i32`), then times faiss's
IndexBinaryFlat (nq = 1 one query at a time, and one batch of --flat-nq queries) and
IndexBinaryIVF (train + add, then one batch of all queries per nprobe), and with --centroids
the same IndexBinaryIVF on our centroids (same lists, so equal recall by construction). Prints `key value` lines
for the Rust side. The IVF index is saved to DIR/faiss_ivf.index after the first build, and later
rounds (--reuse-index) load it instead of training again.

Recall is tie-aware (Hamming distances are integers, so ties at the k-th distance are common): a
result row scores the hits strictly closer than the exact k-th distance, plus as many hits at
that distance as the exact top-k holds.
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
    sys.exit("faiss is not installed: python3 -m venv /work/venv-h && /work/venv-h/bin/pip install faiss-cpu numpy")


def timings(fn, reps, warmup=True):
    if warmup:
        fn()
    out = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def report(key, times):
    print(key, statistics.median(times))
    print(key + "_best", min(times))


def tie_recall(dist, gt):
    k = gt.shape[1]
    hits = 0
    for d, g in zip(dist, gt):
        kth = g[k - 1]
        hits += int((d < kth).sum()) + min(int((d == kth).sum()), int((g == kth).sum()))
    return hits / gt.size


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True, help="bits")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--flat-nq", type=int, default=100)
    p.add_argument("--single", type=int, default=20)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--reuse-index", action="store_true")
    p.add_argument("--train-seed", type=int, help="faiss's k-means seed (cp.seed; faiss's default 1234 without it)")
    p.add_argument("--centroids", help="our serialized BIN_IVF_FLAT index: also time faiss on its centroids")
    p.add_argument("--skip-flat", action="store_true")
    p.add_argument("--skip-ivf", action="store_true")
    a = p.parse_args()
    d, k, code = a.dim, a.k, a.dim // 8
    print("faiss_version", faiss.__version__)
    print("faiss_threads", faiss.omp_get_max_threads())
    xb = np.fromfile(os.path.join(a.dir, "base.u8"), dtype=np.uint8).reshape(-1, code)
    xq = np.fromfile(os.path.join(a.dir, "query.u8"), dtype=np.uint8).reshape(-1, code)
    gt = np.fromfile(os.path.join(a.dir, "gt_dist.i32"), dtype="<i4").reshape(-1, k)

    if not a.skip_flat:
        flat = faiss.IndexBinaryFlat(d)
        flat.add(xb)
        fq = xq[: a.flat_nq]
        report("flat_batch", timings(lambda: flat.search(fq, k), a.reps))
        singles = []
        for i in range(min(a.single, len(xq))):
            singles += timings(lambda: flat.search(xq[i : i + 1], k), 1, warmup=(i == 0))
        report("flat_single", singles)
        dist, _ = flat.search(fq, k)
        print("flat_recall", tie_recall(dist, gt[: len(fq)]))

    if not a.skip_ivf:
        path = os.path.join(a.dir, "faiss_ivf.index")
        if a.reuse_index and os.path.exists(path):
            ivf = faiss.read_index_binary(path)
        else:
            t0 = time.perf_counter()
            quantizer = faiss.IndexBinaryFlat(d)
            ivf = faiss.IndexBinaryIVF(quantizer, d, a.nlist)
            if a.train_seed is not None:
                ivf.cp.seed = a.train_seed
            ivf.train(xb)
            ivf.add(xb)
            print("ivf_build", time.perf_counter() - t0)
            ivf.own_fields = True
            quantizer.this.disown()
            faiss.write_index_binary(ivf, path)
        sizes = sorted(ivf.invlists.list_size(l) for l in range(ivf.nlist))
        n = len(sizes)
        empty = sum(1 for x in sizes if x == 0)
        print("faiss lists: min", sizes[0], "p50", sizes[n // 2], "p99", sizes[n * 99 // 100], "max", sizes[-1], "empty", empty, file=sys.stderr)
        for nprobe in [int(x) for x in a.nprobe.split(",")]:
            ivf.nprobe = nprobe
            report(f"ivf_{nprobe}_batch", timings(lambda: ivf.search(xq, k), a.reps))
            dist, _ = ivf.search(xq, k)
            print(f"ivf_{nprobe}_recall", tie_recall(dist, gt))
        if a.centroids:
            # The same partition as ours (faiss assigns by Hamming, ties to the lower list, as
            # we do): the two searches then differ only in speed, not in k-means luck.
            with open(a.centroids, "rb") as f:
                head = f.read(40)
                nlist = int.from_bytes(head[24:32], "little")
                cent = np.frombuffer(f.read(nlist * code), dtype=np.uint8).reshape(nlist, code)
            q2 = faiss.IndexBinaryFlat(d)
            q2.add(cent)
            same = faiss.IndexBinaryIVF(q2, d, nlist)
            same.add(xb)
            for nprobe in [int(x) for x in a.nprobe.split(",")]:
                same.nprobe = nprobe
                report(f"same_{nprobe}_batch", timings(lambda: same.search(xq, k), a.reps))
                dist, _ = same.search(xq, k)
                print(f"same_{nprobe}_recall", tie_recall(dist, gt))


if __name__ == "__main__":
    main()
