"""300,000 simulated cells from disk: the threaded scheduler against a 2-worker process LocalCluster.

Writes the cells to an .h5ad (write_simulated), then runs tl.fit and tl.contributions(store=zarr)
on X read lazily (chunks of 8,192 cells), first on threads, then under
Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True)), and compares the models.
n_steps=500 to keep the run short (training is on the client either way).

    python benchmarks/cluster_300k.py     # about 6 minutes on 2 cores; 1.1 GB in /tmp/gbumap_cluster
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np

import gbumap
from gbumap.datasets import write_simulated

ROOT = Path("/tmp/gbumap_cluster")
N_CELLS = 300_000


def lazy(path):
    f = h5py.File(path, "r")
    return ad.AnnData(X=ad.experimental.read_elem_lazy(f["X"], chunks=(8192, -1)), obs=ad.io.read_elem(f["obs"]),
                      var=ad.io.read_elem(f["var"]))


def run(path, store) -> tuple[ad.AnnData, dict]:
    shutil.rmtree(store, ignore_errors=True)
    adata = lazy(path)
    t0 = time.perf_counter()
    gbumap.tl.fit(adata, n_steps=500, verbose=False)
    t1 = time.perf_counter()
    gbumap.tl.contributions(adata, store=store, verbose=False)
    t2 = time.perf_counter()
    timings = {k: round(float(v), 1) for k, v in adata.uns["gbumap"]["timings"].items()}
    return adata, {"fit_s": round(t1 - t0, 1), "contributions_s": round(t2 - t1, 1), "stages": timings}


def main() -> None:
    from distributed import Client, LocalCluster

    ROOT.mkdir(exist_ok=True)
    path = ROOT / f"sim_{N_CELLS}.h5ad"
    if not path.exists():
        write_simulated(path, N_CELLS, 2000, random_state=0)
    # threads, cluster, cluster, threads: the machine's speed drifts by 10-20% over minutes, so each
    # scheduler gets one early and one late run, and the ratio compares their sums
    threaded, t_threads = run(path, ROOT / "threads.zarr")
    with Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)):
        cluster, t_cluster = run(path, ROOT / "cluster.zarr")
        _, t_cluster_2 = run(path, ROOT / "cluster.zarr")
    _, t_threads_2 = run(path, ROOT / "threads_2.zarr")
    a, b = threaded.uns["gbumap"], cluster.uns["gbumap"]

    def total(t: dict) -> float:
        return t["fit_s"] + t["contributions_s"]

    out = {
        "n_cells": N_CELLS,
        "threads": t_threads,
        "local_cluster_2_workers": t_cluster,
        "local_cluster_2_workers_second": t_cluster_2,
        "threads_second": t_threads_2,
        "cluster_over_threads": round((total(t_cluster) + total(t_cluster_2)) / (total(t_threads) + total(t_threads_2)), 3),
        "embedding_bitwise_equal": bool(np.array_equal(threaded.obsm["X_gbumap"], cluster.obsm["X_gbumap"])),
        "components_max_abs_diff": float(np.abs(a["projection"]["components"] - b["projection"]["components"]).max()),
        "jacobians_bitwise_equal": bool(np.array_equal(np.asarray(threaded.obsm["gbumap_jacobian"]),
                                                        np.asarray(cluster.obsm["gbumap_jacobian"]))),
        "max_rel_gap": [a["reconstruction_error"]["max_rel"], b["reconstruction_error"]["max_rel"]],
    }
    print(json.dumps(out, indent=1))
    Path(__file__).parent.joinpath("results", "cluster_300k.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
