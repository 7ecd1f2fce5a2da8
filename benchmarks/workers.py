"""One benchmark measurement, run in a fresh process: ``python workers.py TOOL DATA OUTDIR``.

Each worker loads the data, then times the tool's own work (its imports
included, as a user starting a fresh process would pay them), records peak
resident memory, and saves the embedding plus per-cell-type gene scores for
the attribution check. Nothing here is imported by the gbumap package.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

_PEAK_RESET = False


def _reset_peak_rss() -> None:
    """Forget the peak reached while reading the data (Linux: ``clear_refs`` 5 resets VmHWM)."""
    global _PEAK_RESET
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _PEAK_RESET = True
    except OSError:
        _PEAK_RESET = False


def _peak_rss_mb() -> float:
    """Peak resident memory since the data was loaded (whole process if the reset is unavailable)."""
    if _PEAK_RESET:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _type_scores(values_per_cell, labels: np.ndarray, categories: list[str]) -> np.ndarray:
    """Mean per-gene score of each cell type: ``(n_types, n_genes)``."""
    return np.stack([np.asarray(values_per_cell[labels == c].mean(axis=0)).ravel() for c in categories])


def _ranking_scores(ranking, var_names) -> tuple[list[str], np.ndarray]:
    """Per-group gene scores of a rank_genes_groups-format result as ``(n_groups, n_vars)``."""
    categories = list(ranking["names"].dtype.names)
    scores = np.zeros((len(categories), len(var_names)))
    var_index = {g: i for i, g in enumerate(var_names)}
    for ci, c in enumerate(categories):
        idx = [var_index[g] for g in ranking["names"][c]]
        scores[ci, idx] = np.asarray(ranking["scores"][c], dtype=np.float64)
    return categories, scores


def _gbumap(adata, query, out: Path, baseline: str, reuse_graph: bool) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    import gbumap

    if reuse_graph:
        import scanpy as sc

        t0 = time.perf_counter()
        sc.pp.pca(adata, n_comps=50)
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca")
        timings["scanpy_pca_neighbors_untimed"] = time.perf_counter() - t0
        start = time.perf_counter()
        gbumap.tl.glassbox_umap(
            adata, use_rep="X_pca", neighbors_key="neighbors", baseline=baseline, verbose=False
        )
    else:
        gbumap.tl.glassbox_umap(adata, mask_var=False, n_pcs=50, baseline=baseline, verbose=False)
    timings["total"] = time.perf_counter() - start
    # stages as recorded by gbumap itself (fit: pca, graph, training, embed; then contributions)
    timings.update({f"stage_{k}": float(v) for k, v in adata.uns["gbumap"]["timings"].items()})
    peak = _peak_rss_mb()

    t0 = time.perf_counter()
    gbumap.tl.transform(query, adata)
    timings["transform_query_with_contributions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gbumap.tl.rank_features(adata, "cell_type")
    timings["rank_features"] = time.perf_counter() - t0
    categories, scores = _ranking_scores(adata.uns["rank_features_gbumap"], adata.var_names)
    np.save(out / "embedding.npy", adata.obsm["X_gbumap"])
    np.save(out / "type_scores.npy", scores)
    return {
        "timings": timings,
        "peak_rss_mb": peak,
        "categories": categories,
        "reconstruction_error": float(adata.uns["gbumap"]["reconstruction_error"]["max_rel"]),
        "n_steps": int(adata.uns["gbumap"]["training"]["n_steps"]),
        "n_genes_scored": len(adata.uns["gbumap"]["feature_names"]),
    }


def _scanpy(adata, out: Path) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    import scanpy as sc

    t0 = time.perf_counter()
    sc.pp.pca(adata, n_comps=50)
    timings["pca"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.pp.neighbors(adata, n_neighbors=15)
    timings["neighbors"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.tl.umap(adata)
    timings["umap"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    peak = _peak_rss_mb()

    t0 = time.perf_counter()
    sc.tl.rank_genes_groups(adata, "cell_type", method="t-test", n_genes=adata.n_vars)
    timings["rank_genes_groups"] = time.perf_counter() - t0
    categories, scores = _ranking_scores(adata.uns["rank_genes_groups"], adata.var_names)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    np.save(out / "embedding.npy", adata.obsm["X_umap"])
    np.save(out / "type_scores.npy", scores)
    np.save(out / "mean_expression_scores.npy", _type_scores(adata.X, labels, categories))
    return {"timings": timings, "peak_rss_mb": peak, "categories": categories}


def _reference(adata, out: Path, epochs: int) -> dict:
    """glass-box-umap 0.1.0, installed in the benchmark environment only."""
    timings: dict[str, float] = {}
    X = adata.X.toarray().astype(np.float32)
    start = time.perf_counter()
    from glass_box_umap import GlassBoxUMAP

    model = GlassBoxUMAP(pca_components=50, epochs=epochs, random_state=0, quiet=True)
    model.fit(X)
    timings["fit"] = time.perf_counter() - start
    t0 = time.perf_counter()
    embedding = model.transform(X)
    timings["transform"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    l2 = model.compute_contributions(X, reduction="l2")
    timings["contributions"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    peak = _peak_rss_mb()
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    categories = [str(c) for c in adata.obs["cell_type"].cat.categories]
    np.save(out / "embedding.npy", np.asarray(embedding))
    np.save(out / "type_scores.npy", _type_scores(l2, labels, categories))
    return {"timings": timings, "peak_rss_mb": peak, "categories": categories, "epochs": epochs}


def main(argv: list[str]) -> None:
    tool, data_path, out_dir = argv[:3]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import anndata as ad

    adata = ad.read_h5ad(data_path)
    query = ad.read_h5ad(str(data_path).replace(".h5ad", "_query.h5ad"))
    rss_loaded = _rss_now_mb()
    _reset_peak_rss()
    if tool == "gbumap":
        result = _gbumap(adata, query, out, "mean", reuse_graph=False)
    elif tool == "gbumap_zero":
        result = _gbumap(adata, query, out, "zero", reuse_graph=False)
    elif tool == "gbumap_reuse":
        result = _gbumap(adata, query, out, "mean", reuse_graph=True)
    elif tool == "scanpy":
        result = _scanpy(adata, out)
    elif tool.startswith("reference_"):
        result = _reference(adata, out, epochs=int(tool.split("_")[1]))
    else:
        raise SystemExit(f"unknown tool {tool}")
    result["rss_after_loading_mb"] = rss_loaded
    result["peak_excludes_loading"] = _PEAK_RESET
    result["tool"] = tool
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
