"""Atlas scale: the whole pipeline from disk, 300k to 2M cells × 2,000 genes, in a fresh process each.

    python benchmarks/atlas.py                                   # about 20 minutes on 2 cores, 12 GB of disk
    python benchmarks/atlas.py --sizes 300000 --memory-sizes 300000   # one size, both paths

1. ``gbumap.datasets.write_simulated`` writes ``n`` cells × 2,000 genes
   (log-normalised CSR, ~22 % non-zero) to ``<dir>/sim_<n>.h5ad`` piece by
   piece (100k cells at a time), unless the file is already there.
2. A fresh Python process per run reads it and runs
   ``gbumap.tl.glassbox_umap`` (fit: means, PCA, projection, kNN, graph,
   training, embedding; then the Jacobians of every cell with the
   reconstruction check):

   * ``dask``: ``X`` as a Dask array over the file
     (``anndata.experimental.read_elem_lazy``, chunks of 8,192 cells), the
     Jacobians written chunk by chunk to ``<dir>/jac_<n>.zarr``;
   * ``memory``: ``anndata.read_h5ad`` loads ``X`` first (the load is timed
     separately), the Jacobians go to memory.

   The kernel's page cache is emptied first (where allowed), so the first pass
   reads the file from disk; before that, the file is read whole, cold, to
   record the storage's own speed (a small file may come from the host's cache
   much faster per byte than a large one). Recorded: seconds per stage (from the model registry), the process's peak
   resident memory (``VmHWM``), and the layout's quality on a random 20,000-cell
   sample (kNN preservation@15 against the 50 PCs, kNN-classifier accuracy of
   the cell types, both within the sample, so the figures compare across sizes).
3. Log-log slopes of each stage's time from the smallest to the largest size.

Writes ``results/atlas.json`` and ``results/atlas.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CHUNK_ROWS = 8192
SAMPLE = 20_000
STAGES = ["pca_means", "pca_svd", "pca_projection", "graph_knn", "graph_fuzzy", "training", "embed", "contributions"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root on Linux), so the run reads its file from disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1")
        return True
    except OSError:
        return False


def cold_read_seconds(path: Path) -> float | None:
    """Seconds to read the whole file sequentially from disk (page cache emptied first): the storage's own speed."""
    if not drop_page_cache():
        return None
    started = time.perf_counter()
    with open(path, "rb") as fh:
        while fh.read(1 << 26):
            pass
    return time.perf_counter() - started


def run_one(path: Path, mode: str, store: Path) -> dict:
    """One pipeline run in this (fresh) process, its file read cold from disk when the page cache can be dropped."""
    import anndata as ad
    import h5py

    cold = drop_page_cache()

    import gbumap
    from gbumap._layout_metrics import knn_preservation, label_accuracy
    from gbumap._view import model_view

    base_rss = _status_kib("VmRSS") / 2**20
    started = time.perf_counter()
    if mode == "dask":
        handle = h5py.File(path, "r")
        adata = ad.AnnData(
            X=ad.experimental.read_elem_lazy(handle["X"], chunks=(CHUNK_ROWS, -1)),
            obs=ad.io.read_elem(handle["obs"]),
            var=ad.io.read_elem(handle["var"]),
        )
    else:
        adata = ad.read_h5ad(path)
        del adata.layers
    load = time.perf_counter() - started
    t0 = time.perf_counter()
    gbumap.tl.glassbox_umap(adata, store=store if mode == "dask" else None, verbose=False)
    wall = time.perf_counter() - t0
    peak = _status_kib("VmHWM") / 2**20

    timings = dict(adata.uns["gbumap"]["timings"])
    stages = {name: float(timings[name]) for name in STAGES if name in timings}
    stages["graph_fuzzy"] = float(timings["graph"] - timings["graph_knn"])

    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(adata.n_obs, size=min(SAMPLE, adata.n_obs), replace=False))
    view = model_view(adata)
    est = view.estimator
    X_sample = adata.X[sample]
    X_sample = X_sample.compute() if hasattr(X_sample, "compute") else X_sample
    pcs = est._offset_projection(X_sample, slice(0, len(sample)))
    emb = np.asarray(adata.obsm["X_gbumap"])[sample]
    within = np.arange(len(sample))
    quality = {
        "knn_preservation": knn_preservation(pcs, emb, within[:5000]),
        "label_accuracy": label_accuracy(emb, adata.obs["cell_type"].to_numpy()[sample], within),
    }
    return {
        "cells": int(adata.n_obs),
        "mode": mode,
        "load_seconds": load,
        "pipeline_seconds": wall,
        "stages": stages,
        "peak_rss_gib": peak,
        "rss_after_imports_gib": base_rss,
        "reconstruction_max_rel": float(adata.uns["gbumap"]["reconstruction_error"]["max_rel"]),
        "quality_sample": quality,
        "n_steps": int(est.training_info_["n_steps"]),
        "page_cache_dropped": cold,
    }


def slope(rows: list[dict], mode: str, key) -> float | None:
    sel = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["cells"])
    if len(sel) < 2:
        return None
    a, b = sel[0], sel[-1]
    return float(np.log(key(b) / key(a)) / np.log(b["cells"] / a["cells"]))


def report(rows: list[dict], writes: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "atlas.json").write_text(json.dumps({"runs": rows, "writes": writes}, indent=1))
    lines = [
        "| cells | path | load s | " + " | ".join(STAGES) + " | pipeline s | peak RSS GiB | kNN pres. | label acc. | max rel. gap |",
        "|---:|---|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["mode"], r["cells"])):
        cells = " | ".join(f"{r['stages'].get(s, float('nan')):.1f}" for s in STAGES)
        q = r["quality_sample"]
        lines.append(
            f"| {r['cells']:,} | {r['mode']} | {r['load_seconds']:.1f} | {cells} | {r['pipeline_seconds']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {q['knn_preservation']:.4f} | {q['label_accuracy']:.3f} | "
            f"{r['reconstruction_max_rel']:.1e} |"
        )
    lines += ["", "Reading each file whole from disk, page cache emptied (`cat`-like, 64 MiB reads): the storage's speed, "
              "which the first pass (pca_means) pays:", ""]
    for r in sorted(rows, key=lambda r: (r["mode"], r["cells"])):
        if r.get("cold_read_seconds") is not None:
            lines.append(f"- {r['cells']:,} cells ({r['mode']} run): {r['cold_read_seconds']:.1f} s")
    lines += ["", "Log-log slopes of time, smallest to largest size:", ""]
    for mode in ("dask", "memory"):
        parts = []
        for s in STAGES:
            value = slope(rows, mode, lambda r, s=s: max(r["stages"].get(s, np.nan), 1e-3))
            if value is not None:
                parts.append(f"{s} {value:.2f}")
        whole = slope(rows, mode, lambda r: r["pipeline_seconds"])
        if whole is not None:
            lines.append(f"- {mode}: " + ", ".join(parts) + f"; whole pipeline {whole:.2f}")
    lines += ["", "Writing the simulations (not part of the pipeline):", ""]
    lines += [f"- {n:,} cells: {w['seconds']:.0f} s, {w['gb']:.1f} GB on disk" for n, w in sorted(writes.items())]
    (RESULTS / "atlas.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[300_000, 1_000_000, 2_000_000])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[300_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/gbumap_atlas"))
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="dask", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        store = args.dir / f"jac_{args.one.stem}.zarr"
        args.out.write_text(json.dumps(run_one(args.one, args.mode, store)))
        return

    from gbumap.datasets import write_simulated

    args.dir.mkdir(parents=True, exist_ok=True)
    previous = json.loads((RESULTS / "atlas.json").read_text()) if (RESULTS / "atlas.json").exists() else {}
    rows = [r for r in previous.get("runs", [])]
    writes = {int(k): v for k, v in previous.get("writes", {}).items()}
    for n in sorted(set(args.sizes) | set(args.memory_sizes)):
        path = args.dir / f"sim_{n}.h5ad"
        if not path.exists():
            t0 = time.perf_counter()
            write_simulated(path, n, 2000, chunk_size=100_352, n_jobs=2, random_state=0)
            writes[n] = {"seconds": time.perf_counter() - t0, "gb": path.stat().st_size / 1e9}
            print(f"wrote {path} in {writes[n]['seconds']:.0f} s", flush=True)
        for mode, sizes in (("dask", args.sizes), ("memory", args.memory_sizes)):
            if n not in sizes:
                continue
            read = cold_read_seconds(path)
            out = args.dir / f"run_{n}_{mode}.json"
            cmd = [sys.executable, __file__, "--one", str(path), "--mode", mode, "--out", str(out), "--dir", str(args.dir)]
            subprocess.run(cmd, check=True)
            row = json.loads(out.read_text())
            row["cold_read_seconds"] = read
            rows = [r for r in rows if not (r["cells"] == n and r["mode"] == mode)] + [row]
            print(json.dumps(row), flush=True)
            report(rows, writes)
    report(rows, writes)


if __name__ == "__main__":
    main()
