"""Neighbour search at scale: time and recall of each search on the PCs of simulated cells.

    python benchmarks/knn_scale.py                     # 100k and 300k cells, about 8 minutes on 2 cores
    python benchmarks/knn_scale.py --sizes 100000      # one size

For each size: ``gbumap.datasets.simulate(n, 2000, random_state=0)``, the
model's 50-PC projection (``GlassBoxUMAP._fit_projection``, as ``fit`` uses
it), then the 15-nearest-neighbour search by

* gbumap's clustered search as it was before the cap (every second-nearest list probed),
* gbumap's clustered search now (``gbumap._knn``, the default above 20,000 cells),
* pynndescent (as ``umap-learn`` and ``sc.pp.neighbors`` use it; timed after a JIT warm-up),
* FAISS HNSW (M=16, efConstruction=64, efSearch=48) and IVF-Flat (4·√n lists, 32 probed),
  when ``faiss-cpu`` is installed (it is not a gbumap dependency).

Recall: the share of the exact 15 nearest neighbours (torch ``cdist``) found,
over 2,000 random cells. Writes ``results/knn_scale.json`` and ``results/knn_scale.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import gbumap._knn as knn
from gbumap import GlassBoxUMAP
from gbumap.datasets import simulate

K = 15
RESULTS = Path(__file__).parent / "results"


def projection(n: int) -> np.ndarray:
    adata = simulate(n, 2000, random_state=0, n_jobs=2)
    est = GlassBoxUMAP(pca_components=50)
    est._check_params()
    return est._fit_projection(adata.X, None, 0)


def recall(Z: np.ndarray, indices: np.ndarray, sample: np.ndarray) -> float:
    exact = torch.cdist(torch.from_numpy(Z[sample]), torch.from_numpy(Z)).topk(K, largest=False).indices.numpy()
    return float(np.mean([len(set(exact[i]) & set(indices[c])) / K for i, c in enumerate(sample)]))


def clustered_uncapped(Z):
    saved = knn.MAX_EXTRA_LISTS
    knn.MAX_EXTRA_LISTS = 1 << 30
    try:
        return knn._clustered_knn(Z, K, "euclidean", 0)[0]
    finally:
        knn.MAX_EXTRA_LISTS = saved


def pynndescent(Z):
    knn._pynndescent_knn(Z[:5000], K, "euclidean", 0, False)  # numba compilation, not timed below
    start = time.perf_counter()
    indices = knn._pynndescent_knn(Z, K, "euclidean", 0, False)[0]
    return indices, time.perf_counter() - start


def faiss_searches():
    try:
        import faiss
    except ImportError:
        return {}
    faiss.omp_set_num_threads(torch.get_num_threads())

    def hnsw(Z):
        index = faiss.IndexHNSWFlat(Z.shape[1], 16)
        index.hnsw.efConstruction = 64
        index.add(Z)
        index.hnsw.efSearch = 48
        return index.search(Z, K)[1]

    def ivf(Z):
        n_lists = int(4 * np.sqrt(len(Z)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(Z.shape[1]), Z.shape[1], n_lists)
        rng = np.random.default_rng(0)
        index.train(Z[rng.choice(len(Z), min(len(Z), 64 * n_lists), replace=False)])
        index.add(Z)
        index.nprobe = 32
        return index.search(Z, K)[1]

    return {"faiss HNSW (M=16, ef=48)": hnsw, "faiss IVF-Flat (4√n lists, 32 probed)": ivf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        Z = np.ascontiguousarray(projection(n))
        sample = np.random.default_rng(0).choice(n, 2000, replace=False)
        searches = {
            "gbumap clustered, uncapped (before)": clustered_uncapped,
            "gbumap clustered (now)": lambda Z: knn._clustered_knn(Z, K, "euclidean", 0)[0],
            "pynndescent": pynndescent,
            **faiss_searches(),
        }
        for name, search in searches.items():
            start = time.perf_counter()
            result = search(Z)
            seconds = time.perf_counter() - start
            if isinstance(result, tuple):
                result, seconds = result
            rows.append({"cells": n, "search": name, "seconds": seconds, "recall": recall(Z, result, sample)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knn_scale.json").write_text(json.dumps(rows, indent=1))
    lines = ["| cells | search | seconds | recall@15 |", "|---:|---|---:|---:|"]
    lines += [f"| {r['cells']:,} | {r['search']} | {r['seconds']:.1f} | {r['recall']:.3f} |" for r in rows]
    (RESULTS / "knn_scale.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
