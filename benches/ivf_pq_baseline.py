#!/usr/bin/env python3
"""faiss-cpu IndexIVFPQ anchor for `cargo bench --bench index_ivf_pq`, driven over stdin.

Reads the raw little-endian files the Rust bench wrote into DIR (ivf_base.f32, ivf_query.f32,
ivf_gt.i64: the layout of benches/faiss_baseline.py), then answers one command per line so the
bench can alternate our runs and faiss's on the same machine state:

  build M NBITS        -> "build SECONDS"        (IndexIVFPQ(IndexFlatL2, d, nlist, M, NBITS), train + add)
  search NPROBE REPS   -> "search NPROBE RECALL MEDIAN_S BEST_S"   (all queries as one batch)
  single NPROBE        -> "single NPROBE SECONDS"  (every query alone, one after another)
  adopt PATH WHAT      -> "adopt SECONDS"        (an IndexIVFPQ on the quantizers of our serialized
                          index at PATH, then add: WHAT = "both" takes our coarse centroids and PQ
                          codebooks, so recall is ours and the searches compare speed alone;
                          WHAT = "coarse" takes our centroids and trains faiss's own PQ on them)
  quit

Every answer is one line on stdout, flushed.
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
    sys.exit("faiss is not installed: pip install faiss-cpu numpy")


def load(path, dim, dtype="<f4"):
    return np.ascontiguousarray(np.fromfile(path, dtype=dtype).reshape(-1, dim))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--seed", type=int, help="k-means seed of the coarse quantizer and the PQ (faiss's default 1234)")
    a = p.parse_args()
    d, k = a.dim, a.k
    xb = load(os.path.join(a.dir, "ivf_base.f32"), d)
    xq = load(os.path.join(a.dir, "ivf_query.f32"), d)
    gt = np.fromfile(os.path.join(a.dir, "ivf_gt.i64"), dtype="<i8").reshape(-1, k)
    print("hello", faiss.__version__, faiss.omp_get_max_threads(), flush=True)
    index = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "build":
            m, nbits = int(cmd[1]), int(cmd[2])
            t0 = time.perf_counter()
            quantizer = faiss.IndexFlatL2(d)
            ivf = faiss.IndexIVFPQ(quantizer, d, a.nlist, m, nbits)
            if a.seed is not None:
                ivf.cp.seed = a.seed
                ivf.pq.cp.seed = a.seed
            ivf.train(xb)
            ivf.add(xb)
            secs = time.perf_counter() - t0
            index = (quantizer, ivf)  # the index does not own its quantizer
            print("build", secs, flush=True)
        elif cmd[0] == "adopt":
            path, what = cmd[1], cmd[2]
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                head = f.read(56)  # magic, version, metric, then dim, nlist, m, nbits, len (u64)
                dim, nlist, m, nbits, _ = np.frombuffer(head[16:56], dtype="<u8")
                dim, nlist, m, nbits = int(dim), int(nlist), int(m), int(nbits)
                centroids = np.frombuffer(f.read(nlist * dim * 4), dtype="<f4").reshape(nlist, dim)
                codebooks = np.frombuffer(f.read((1 << nbits) * dim * 4), dtype="<f4")
            quantizer = faiss.IndexFlatL2(d)
            quantizer.add(np.ascontiguousarray(centroids))
            ivf = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits)
            if what == "both":
                faiss.copy_array_to_vector(np.ascontiguousarray(codebooks), ivf.pq.centroids)
                ivf.pq.sync_transposed_centroids()
                ivf.is_trained = True
                ivf.precompute_table()
            else:
                if a.seed is not None:
                    ivf.pq.cp.seed = a.seed
                ivf.train(xb)  # the quantizer is complete: only the PQ is trained
            ivf.add(xb)
            index = (quantizer, ivf)
            print("adopt", time.perf_counter() - t0, flush=True)
        elif cmd[0] == "search":
            nprobe, reps = int(cmd[1]), int(cmd[2])
            ivf = index[1]
            ivf.nprobe = nprobe
            ivf.search(xq, k)  # warm-up
            times = []
            for _ in range(max(1, reps)):
                t0 = time.perf_counter()
                _, ids = ivf.search(xq, k)
                times.append(time.perf_counter() - t0)
            hits = sum(len(set(ids[q]) & set(gt[q])) for q in range(len(xq)))
            print("search", nprobe, hits / gt.size, statistics.median(times), min(times), flush=True)
        elif cmd[0] == "single":
            nprobe = int(cmd[1])
            ivf = index[1]
            ivf.nprobe = nprobe
            ivf.search(xq[:1], k)  # warm-up
            t0 = time.perf_counter()
            for i in range(len(xq)):
                ivf.search(xq[i : i + 1], k)
            print("single", nprobe, time.perf_counter() - t0, flush=True)
        else:
            print("error unknown command", line.strip(), flush=True)


if __name__ == "__main__":
    main()
