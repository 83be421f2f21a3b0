#!/usr/bin/env python3
"""Which FAISS index keeps rank-1 recall >= 0.995 on face-like data at 1e6 x 512?

Background for docs/benchmarks.md ("Choosing pq_rerank"), not part of the product or its tests.
Uses the faiss-cpu and numpy wheels from PyPI (AVX2 build):

    python3 -m venv /tmp/fv && /tmp/fv/bin/pip install faiss-cpu numpy
    /tmp/fv/bin/python scripts/ann-exploration.py 1000000 "PQ32x4fs;PQ64x4fs"
    /tmp/fv/bin/python scripts/ann-exploration.py 1000000 "IVF4096,PQ64x4fs" --nprobe 64,256,1024
    /tmp/fv/bin/python scripts/ann-exploration.py 200000 "HNSW32,Flat" --ef 32,128

Data as `biomatch::synthetic`: a random unit centre per identity plus noise (genuine cosine ~0.6);
one template per identity; probes are fresh samples of the first identities. Recall@1 is after
exact re-ranking of the index's top R candidates; throughput is the first stage, one batch.
"""
import argparse
import time

import faiss
import numpy as np


def data(n, d, nq, seed=1):
    rng = np.random.default_rng(seed)
    sigma = np.float32(np.sqrt(0.667 / d))

    def norm(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    x = np.empty((n, d), dtype=np.float32)
    q = None
    for s in range(0, n, 100_000):
        c = norm(rng.standard_normal((min(100_000, n - s), d), dtype=np.float32))
        if q is None:
            q = norm(c[:nq] + sigma * rng.standard_normal((nq, d), dtype=np.float32))
        x[s:s + len(c)] = norm(c + sigma * rng.standard_normal(c.shape, dtype=np.float32))
    return x, q


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int)
    p.add_argument("descriptions", help="FAISS factory strings separated by ';'")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nprobe", default="", help="IVF probes to try, comma separated")
    p.add_argument("--ef", default="", help="HNSW efSearch values to try, comma separated")
    p.add_argument("--rerank", default="16,64", help="candidates re-scored exactly")
    p.add_argument("--threads", default="1,2")
    a = p.parse_args()
    x, q = data(a.n, a.d, a.queries)
    mates = np.arange(a.queries)
    for description in a.descriptions.split(";"):
        faiss.omp_set_num_threads(2)
        index = faiss.index_factory(a.d, description, faiss.METRIC_INNER_PRODUCT)
        started = time.time()
        if not index.is_trained:
            index.train(x[:min(a.n, 160_000)])
        index.add(x)
        print(f"{description}: build {time.time() - started:.1f} s", flush=True)
        settings = [("", None)]
        if a.nprobe and "IVF" in description:
            settings = [("nprobe", int(v)) for v in a.nprobe.split(",")]
        elif a.ef and "HNSW" in description:
            settings = [("efSearch", int(v)) for v in a.ef.split(",")]
        for name, value in settings:
            if name:
                faiss.ParameterSpace().set_index_parameter(index, name, value)
            for threads in (int(t) for t in a.threads.split(",")):
                faiss.omp_set_num_threads(threads)
                for r in (int(v) for v in a.rerank.split(",")):
                    started = time.time()
                    _, ids = index.search(q, r)
                    qps = a.queries / (time.time() - started)
                    best = [row[row >= 0][np.argmax(x[row[row >= 0]] @ q[i])] if (row >= 0).any() else -1
                            for i, row in enumerate(ids)]
                    recall = np.mean(np.array(best) == mates)
                    print(f"  {name} {value if value else ''} threads {threads} R {r}: "
                          f"recall@1 {recall:.4f}, {qps:.0f} QPS", flush=True)


if __name__ == "__main__":
    main()
