"""Integrated maps side by side: umap-learn, Harmony + umap-learn, BBKNN + umap-learn, gbumap with and without batch_key.

Data (all offline):

* the simulator with batches (``gbumap.datasets.simulate(n_batches=3)``) at 10k and 90k cells,
  and a second setting not used to choose anything (4 batches shifting 40% of the genes by about
  e^±0.6, a wider depth spread, noisier genes, 150 housekeeping genes, weaker lineage and type programs);
* ``pbmc68k_reduced`` (log-normalised, 700 cells) and scikit-learn's digits (1,797 images), each
  split at random into pseudo-batches with an injected multiplicative effect on 30% of the features.

Per map: batch mixing (30 neighbours), label kNN accuracy, scib-metrics' iLISI / cLISI / batch and
label ASW / graph connectivity / NMI / ARI, wall time of the whole pipeline from the same input.
For gbumap: exactness after an ``.h5ad`` round trip, the batch signal of batch-only genes (simulator),
the program AUROC (simulator), and mapping a held-out batch with ``tl.transform`` (label accuracy,
seconds per 10k cells, and a reference that lacks one cell type).

Writes ``benchmarks/results/integration.json``, ``integration.md`` and ``integration_<data>.png``.

    python benchmarks/integration.py            # everything (about 25 minutes on 2 cores)
    python benchmarks/integration.py --quick    # 10k simulator and the real data only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))  # workers.py: the ranking-score reader shared with run.py
HARMONY_ROUNDS = {"max_iter_harmony": 20, "epsilon_harmony": 1e-4}  # what gbumap's correction runs


# ---------------------------------------------------------------- data
def simulated(n_cells: int, variant: str = "default", seed: int = 0):
    import gbumap

    if variant == "default":
        adata = gbumap.datasets.simulate(n_cells, 2000, n_batches=3, random_state=seed, n_jobs=2)
    else:  # a setting nothing was chosen on
        adata = gbumap.datasets.simulate(
            n_cells, 2000, n_batches=4, batch_lfc=0.6, batch_gene_fraction=0.4, batch_depth_sigma=0.4,
            depth_sigma=0.5, n_housekeeping=150, noise_dispersion=5.0, lineage_lfc=0.8, type_lfc=1.3,
            random_state=seed + 11, n_jobs=2,
        )
    adata.obs["label"] = adata.obs["cell_type"].astype(str)
    return adata


def pseudo_batches(adata, n_batches: int = 2, fraction: float = 0.3, lfc: float = 0.8, seed: int = 0,
                   log_scale: bool = True):
    """Split cells at random into batches and multiply a random 30% of the features per batch.

    ``log_scale``: the values are log1p of normalised counts, so the effect multiplies ``expm1(x)``.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float64)
    batch = rng.integers(n_batches, size=adata.n_obs)
    effect = np.zeros((n_batches, adata.n_vars))
    for b in range(n_batches):
        genes = rng.choice(adata.n_vars, int(fraction * adata.n_vars), replace=False)
        effect[b, genes] = rng.choice([-1.0, 1.0], len(genes)) * lfc * rng.uniform(0.7, 1.3, len(genes))
    factor = np.exp(effect[batch])
    X = np.log1p(np.expm1(X) * factor) if log_scale else X * factor
    out = ad.AnnData(X=X.astype(np.float32), obs=adata.obs.copy(), var=adata.var[[]].copy())
    out.obs["batch"] = pd.Categorical([f"B{b}" for b in batch])
    out.var["batch_gene"] = (effect != 0).any(axis=0)
    return out


def pbmc():
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    adata.obs["label"] = adata.obs["bulk_labels"].astype(str)
    return pseudo_batches(adata, seed=1)


def digits():
    import anndata as ad
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    adata = ad.AnnData(X=X.astype(np.float32))
    adata.obs_names = [f"img{i}" for i in range(len(y))]
    adata.var_names = [f"px{i}" for i in range(X.shape[1])]
    adata.obs["label"] = y.astype(str)
    return pseudo_batches(adata, seed=2, log_scale=False)


# ---------------------------------------------------------------- tools
def _pca(adata):
    import scanpy as sc

    sc.pp.pca(adata, n_comps=min(50, adata.n_vars - 1, adata.n_obs - 1), random_state=0)


def _harmony(adata, rounds: dict | None):
    import harmonypy

    out = harmonypy.run_harmony(adata.obsm["X_pca"], adata.obs, "batch", random_state=0, verbose=False,
                                **(rounds or {}))
    Z = np.asarray(out.Z_corr)
    adata.obsm["X_pca_harmony"] = Z if Z.shape[0] == adata.n_obs else Z.T


def run_tool(tool: str, data):
    """The tool's map of ``data`` (a fresh copy), its wall time, and the AnnData it wrote into."""
    import scanpy as sc

    import gbumap

    adata = data.copy()
    t0 = time.perf_counter()
    if tool == "umap":
        _pca(adata)
        sc.pp.neighbors(adata, random_state=0)
        sc.tl.umap(adata, random_state=0)
        emb = adata.obsm["X_umap"]
    elif tool in ("harmony_default+umap", "harmony+umap"):
        _pca(adata)
        _harmony(adata, None if tool == "harmony_default+umap" else HARMONY_ROUNDS)
        sc.pp.neighbors(adata, use_rep="X_pca_harmony", random_state=0)
        sc.tl.umap(adata, random_state=0)
        emb = adata.obsm["X_umap"]
    elif tool == "bbknn+umap":
        import bbknn

        _pca(adata)
        bbknn.bbknn(adata, batch_key="batch")
        sc.tl.umap(adata, random_state=0)
        emb = adata.obsm["X_umap"]
    elif tool == "gbumap":
        gbumap.tl.glassbox_umap(adata, verbose=False)
        emb = adata.obsm["X_gbumap"]
    elif tool.startswith("gbumap+batch"):
        method = "baseline" if tool.endswith("baseline)") else "harmony"
        gbumap.tl.glassbox_umap(adata, batch_key="batch", batch_correction=method, verbose=False)
        emb = adata.obsm["X_gbumap"]
    else:
        raise ValueError(tool)
    return np.asarray(emb, dtype=np.float64), time.perf_counter() - t0, adata


TOOLS = ["umap", "harmony_default+umap", "harmony+umap", "bbknn+umap", "gbumap", "gbumap+batch (harmony)",
         "gbumap+batch (baseline)"]


# ---------------------------------------------------------------- measures
def map_scores(emb: np.ndarray, data) -> dict:
    from gbumap import _layout_metrics as m

    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(data.n_obs, size=min(10_000, data.n_obs), replace=False))
    labels = data.obs["label"].to_numpy().astype(str)
    batches = data.obs["batch"].to_numpy().astype(str)
    out = {
        "batch_mixing": m.batch_mixing(emb, batches, sample, 30),
        "label_accuracy": m.label_accuracy(emb, labels, sample, 15),
    }
    out.update(m.integration_scores(emb[sample], batches[sample], labels[sample]))
    return out


def batch_signal(adata, genes: np.ndarray) -> float:
    """Σ over batch-only genes of the spread of their per-batch mean contribution vectors, over the map's scale."""
    import gbumap

    emb = adata.obsm["X_gbumap"].astype(np.float64)
    scale = float(np.sqrt(((emb - emb.mean(0)) ** 2).sum(1).mean()))
    C = gbumap.get.contributions(adata, genes=list(genes)).astype(np.float64)  # (cells, axes, genes)
    batches = adata.obs["batch"].to_numpy().astype(str)
    overall = C.mean(axis=0)
    spread = np.zeros(len(genes))
    for b in np.unique(batches):
        spread += ((C[batches == b].mean(axis=0) - overall) ** 2).sum(axis=0)
    spread = np.sqrt(spread / len(np.unique(batches)))
    return float(spread.sum() / scale)


def program_auroc(adata) -> float:
    """Mean over cell types of the AUROC with which the type's ``tl.rank_features`` scores separate its program
    genes from the rest (the attribution-recovery yardstick of ``benchmarks/run.py``)."""
    from sklearn.metrics import roc_auc_score
    from workers import _ranking_scores

    import gbumap

    truth = gbumap.datasets.truth_matrix(adata)
    gbumap.tl.rank_features(adata, "cell_type")
    categories, scores = _ranking_scores(adata.uns["rank_features_gbumap"], adata.var_names)
    values = []
    for ci, t in enumerate(categories):
        y = truth.loc[adata.var_names, t].to_numpy()
        if y.any() and not y.all():
            values.append(roc_auc_score(y, scores[ci]))
    return float(np.mean(values))


def round_trip_error(adata) -> float:
    import anndata as ad

    import gbumap

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "map.h5ad"
        adata.write_h5ad(path)
        return gbumap.get.reconstruction_error(ad.read_h5ad(path))["max_rel"]


def query_mapping(data, drop_type: str | None = None) -> dict:
    """Fit on batches B0, B1 (optionally without one type), map batch B2 with tl.transform."""
    from sklearn.neighbors import KNeighborsClassifier

    import gbumap

    ref = data[data.obs["batch"].isin(["B0", "B1"])].copy()
    if drop_type is not None:
        ref = ref[ref.obs["label"] != drop_type].copy()
    query = data[data.obs["batch"] == "B2"].copy()
    gbumap.tl.glassbox_umap(ref, batch_key="batch", verbose=False)
    t0 = time.perf_counter()
    gbumap.tl.transform(query, ref)
    seconds = time.perf_counter() - t0
    known = query.obs["label"].to_numpy() != (drop_type or "")
    clf = KNeighborsClassifier(15).fit(ref.obsm["X_gbumap"], ref.obs["label"].to_numpy())
    predicted = clf.predict(query.obsm["X_gbumap"])
    out = {
        "query_cells": int(query.n_obs),
        "seconds_per_10k": seconds / query.n_obs * 10_000,
        "label_accuracy_known_types": float((predicted[known] == query.obs["label"].to_numpy()[known]).mean()),
        "query_exactness": gbumap.get.reconstruction_error(query)["max_rel"],
    }
    if drop_type is not None:  # do the unseen type's cells keep to themselves?
        from sklearn.neighbors import NearestNeighbors

        combined = np.vstack([ref.obsm["X_gbumap"], query.obsm["X_gbumap"]])
        novel = np.concatenate([np.zeros(ref.n_obs, bool), ~known])
        idx = NearestNeighbors(n_neighbors=16).fit(combined).kneighbors(combined[novel], return_distance=False)[:, 1:]
        out["novel_type_neighbours_novel"] = float(novel[idx].mean())
        out["novel_type_cells"] = int((~known).sum())
    return out


# ---------------------------------------------------------------- report
def plot(maps: dict, data, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = list(maps)
    fig, axes = plt.subplots(2, len(tools), figsize=(3.1 * len(tools), 6.2))
    rng = np.random.default_rng(0)
    keep = rng.permutation(data.n_obs)[:30_000]
    for row, key in enumerate(("batch", "label")):
        values = data.obs[key].astype(str).to_numpy()[keep]
        cats = sorted(set(values))
        cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
        colors = np.array([cmap(cats.index(v) % cmap.N) for v in values])
        for col, tool in enumerate(tools):
            ax = axes[row, col]
            emb = maps[tool][keep]
            ax.scatter(emb[:, 0], emb[:, 1], s=1.5 if len(keep) > 5000 else 4, c=colors, linewidths=0, rasterized=True)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(tool, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"coloured by {'batch' if key == 'batch' else 'cell type / label'}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_data(name: str, data, simulated_data: bool, out: dict, mapping: bool) -> None:
    print(f"== {name}: {data.n_obs:,} cells × {data.n_vars:,} features", flush=True)
    rows, maps = {}, {}
    for tool in TOOLS:
        emb, seconds, fitted = run_tool(tool, data)
        maps[tool] = emb
        row = {"seconds": seconds, **map_scores(emb, data)}
        if tool.startswith("gbumap"):
            row["exactness"] = float(fitted.uns["gbumap"]["reconstruction_error"]["max_rel"])
            row["exactness_after_h5ad"] = round_trip_error(fitted)
            if simulated_data:
                row["batch_signal"] = batch_signal(fitted, fitted.var_names[fitted.var["batch_only"].to_numpy()])
                row["program_auroc"] = program_auroc(fitted)
        rows[tool] = row
        print(f"   {tool:26s} {seconds:7.1f} s  mixing {row['batch_mixing']:.3f}  labels {row['label_accuracy']:.3f}"
              + (f"  signal {row['batch_signal']:.3f}  auroc {row['program_auroc']:.3f}" if "batch_signal" in row else ""),
              flush=True)
    entry = {"n_cells": int(data.n_obs), "n_features": int(data.n_vars), "tools": rows}
    if mapping:
        entry["query"] = query_mapping(data)
        entry["query_without_type"] = query_mapping(data, drop_type=sorted(set(data.obs["label"]))[0])
        print("   query", entry["query"], entry["query_without_type"], flush=True)
    out[name] = entry
    plot(maps, data, f"{name}: {data.n_obs:,} cells, coloured by batch (top) and label (bottom)",
         RESULTS / f"integration_{name}.png")


def markdown(results: dict) -> str:
    lines = ["# Integration benchmark (`benchmarks/integration.py`)", "",
             f"Machine: {results['machine']}. One process, tools run one after another on the same input.", ""]
    cols = ["seconds", "batch_mixing", "label_accuracy", "ilisi", "clisi", "batch_asw", "label_asw",
            "graph_connectivity", "nmi", "ari", "exactness_after_h5ad", "batch_signal", "program_auroc"]
    for name, entry in results["data"].items():
        lines += [f"## {name} ({entry['n_cells']:,} cells × {entry['n_features']:,} features)", "",
                  "| tool | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for tool, row in entry["tools"].items():
            cells = []
            for c in cols:
                v = row.get(c)
                cells.append("—" if v is None else (f"{v:.2e}" if c.startswith("exact") else
                                                    f"{v:.1f}" if c == "seconds" else f"{v:.3f}"))
            lines.append(f"| {tool} | " + " | ".join(cells) + " |")
        for key in ("query", "query_without_type"):
            if key in entry:
                lines.append("")
                lines.append(f"- `{key}`: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in entry[key].items()))
        lines += ["", f"![{name}](integration_{name}.png)", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    import os
    import platform

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k simulator and the real data only")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    # warm-up: numba's compilation (umap-learn, pynndescent) and torch's import are not timed
    warm = simulated(5_000)  # above 4,096 cells: scanpy and pynndescent compile their large-data paths too
    for tool in ("umap", "bbknn+umap", "gbumap+batch (harmony)"):
        run_tool(tool, warm)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "data": {}}
    run_data("simulated_10k", simulated(10_000), True, results["data"], mapping=True)
    run_data("simulated_10k_other_setting", simulated(10_000, "other"), True, results["data"], mapping=False)
    run_data("pbmc68k_reduced", pbmc(), False, results["data"], mapping=False)
    run_data("digits", digits(), False, results["data"], mapping=False)
    if not args.quick:
        run_data("simulated_90k", simulated(90_000), True, results["data"], mapping=True)
    name = "integration_quick" if args.quick else "integration"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
