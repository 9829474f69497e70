#!/usr/bin/env python3
"""Spotify Annoy baseline for `cargo bench --bench index_annoy`: the same files, driven line by
line so the Rust side can alternate its own runs with these on a shared, noisy machine.

Reads the clustered base/query files and the exact top-k ids the Rust bench wrote into DIR
(`ivf_base.f32`, `ivf_query.f32`, `ivf_gt.i64`, the layout of benches/faiss_baseline.py), prints
`ready`, then answers commands on stdin, one line each:

  build T       add every row, build T trees with n_jobs=-1 (all cores)
                -> `built <add+build seconds> <build seconds>`
  query SK      one pass over all queries, one get_nns_by_vector(q, k, search_k=SK) call each
                (Annoy's Python API queries one vector at a time; single-threaded)
                -> `query <seconds> <recall@k>`
  quit

Metric 'euclidean' (Annoy's Euclidean, what Milvus 1.1 uses for L2).
"""
import argparse
import os
import sys
import time

import numpy as np

try:
    import annoy
except ImportError:
    sys.exit("annoy is not installed: pip install annoy numpy")


def load(path, dim, dtype="<f4"):
    return np.ascontiguousarray(np.fromfile(path, dtype=dtype).reshape(-1, dim))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    d, k = a.dim, a.k
    xb = load(os.path.join(a.dir, "ivf_base.f32"), d)
    xq = load(os.path.join(a.dir, "ivf_query.f32"), d)
    gt = np.fromfile(os.path.join(a.dir, "ivf_gt.i64"), dtype="<i8").reshape(-1, k)
    gt_sets = [set(row.tolist()) for row in gt]
    queries = [q.tolist() for q in xq]
    try:
        from importlib.metadata import version

        ver = version("annoy")
    except Exception:
        ver = "?"
    print(f"ready annoy {ver} threads {os.cpu_count()}", flush=True)
    index = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "build":
            t0 = time.perf_counter()
            index = annoy.AnnoyIndex(d, "euclidean")
            index.set_seed(a.seed)
            for i, v in enumerate(xb):
                index.add_item(i, v)
            t1 = time.perf_counter()
            index.build(int(cmd[1]), n_jobs=-1)
            t2 = time.perf_counter()
            print(f"built {t2 - t0} {t2 - t1}", flush=True)
        elif cmd[0] == "query":
            sk = int(cmd[1])
            get = index.get_nns_by_vector
            t0 = time.perf_counter()
            res = [get(q, k, search_k=sk) for q in queries]
            t = time.perf_counter() - t0
            hits = sum(len(gt_sets[i].intersection(r)) for i, r in enumerate(res))
            print(f"query {t} {hits / gt.size}", flush=True)
        elif cmd[0] == "quit":
            break
        else:
            print(f"error unknown command {cmd[0]}", flush=True)


if __name__ == "__main__":
    main()
