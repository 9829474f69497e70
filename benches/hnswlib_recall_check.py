#!/usr/bin/env python3
"""hnswlib's recall@10 on the data of the HNSW recall tests (crates/mishards-node/src/index/hnsw/tests.rs).

Write the data first (the ignored test prints our figures too):
    MISHARDS_HNSW_DUMP=/tmp/hnswdata cargo test -p mishards-node --release --lib hnsw_dump_recall_data -- --ignored --nocapture
then:
    python3 benches/hnswlib_recall_check.py /tmp/hnswdata
Each figure is the mean over 6 build seeds (hnswlib's add_items on all cores), with the range.
"""
import sys

import numpy as np

import hnswlib

DIM, K = 16, 10
PARAMS = [(16, 100, 64), (8, 40, 64)]


def main():
    d = sys.argv[1]
    for name in ("far", "sorted"):
        xb = np.fromfile(f"{d}/{name}_base.f32", dtype="<f4").reshape(-1, DIM)
        xq = np.fromfile(f"{d}/{name}_query.f32", dtype="<f4").reshape(-1, DIM)
        dist = ((xq[:, None, :].astype(np.float64) - xb[None, :, :].astype(np.float64)) ** 2).sum(-1)
        gt = np.argsort(dist, axis=1, kind="stable")[:, :K]
        for m, efc, ef in PARAMS:
            rs = []
            for seed in range(6):
                index = hnswlib.Index(space="l2", dim=DIM)
                index.init_index(max_elements=len(xb), M=m, ef_construction=efc, random_seed=100 + seed)
                index.add_items(xb, np.arange(len(xb)))
                index.set_ef(ef)
                ids, _ = index.knn_query(xq, k=K)
                rs.append(sum(len(set(ids[q]) & set(gt[q])) for q in range(len(xq))) / gt.size)
            print(f"{name} M {m} efC {efc} ef {ef}: hnswlib mean {np.mean(rs):.3f} (range {min(rs):.3f}-{max(rs):.3f})")


if __name__ == "__main__":
    main()
