"""RNA + protein in one exact map: RNA-only, protein-only and joint gbumap maps, against muon's WNN + umap-learn.

Data: the simulator with surface proteins (``simulate(..., n_proteins=40)``): lineages marked
by proteins and RNA, types within a lineage that differ in RNA only, and two types split into
subtypes that differ in protein only (``obs["subtype"]``). Two settings: the simulator's
defaults, and ``OTHER`` (four lineages, weaker type programs, noisier genes, more housekeeping
genes, a wider depth spread, weaker protein markers), which no default was chosen on. X holds
log-normalised RNA and CLR proteins, as a user's CITE-seq file after preparation.

The cells are split 80/20: maps are fitted on the 80% and the 20% are mapped as queries with
``tl.transform``: with both modalities, and with RNA only, the proteins at the baseline
(``fill_missing="baseline"``) or their block imputed from the RNA block (``fill_missing="impute"``).

Maps (all on the same cells):

* ``rna``: gbumap on the genes (50-PC PCA);
* ``protein``: gbumap on the proteins (as they are);
* ``concatenated``: gbumap on genes and proteins in one matrix, no ``modality_key`` (the
  issue's starting point);
* ``joint_neighbors`` / ``joint_variance``: gbumap with ``modality_key="feature_types"`` and each
  weighting rule;
* ``wnn_umap``: muon's weighted-nearest-neighbour graph (``mu.pp.neighbors`` on per-modality
  PCAs: 50 for RNA, 30 for proteins) drawn by umap-learn (``mu.tl.umap``): the anchor;
* ``joint_on_wnn``: the joint gbumap encoder (default weighting) trained on that WNN graph
  (``neighbors_key=..., neighbors_any_rep=True``; time: the fit alone, the graph given).

Per map: label kNN accuracy (5-fold, 15 neighbours; 3,000 sampled cells) of the subtypes; of
the protein-only split (among the split types' cells: chance is 0.5); of the RNA-only types
(within each lineage, averaged over lineages); wall time; for joint gbumap the reconstruction
error and the median protein share. Queries: the median distance between a query cell's
RNA-only and full-profile positions, in units of the map's median distance to the 15th
neighbour, and the accuracy of labels transferred from the reference (15 nearest reference
cells) for each.

Writes ``benchmarks/results/multimodal.json``, ``multimodal.md`` and ``multimodal_<setting>_<n>.png``.

    python benchmarks/multimodal.py                       # 10k and 90k cells, both settings
    python benchmarks/multimodal.py --sizes 10000         # a subset
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "default": {},
    "other": dict(
        n_lineages=4, types_per_lineage=3, type_lfc=1.2, n_housekeeping=150, noise_dispersion=3.0, depth_sigma=0.5,
        protein_lfc=1.5, protein_background=50.0,
    ),
}
SAMPLE = 3_000
MAPS = ("rna", "protein", "concatenated", "joint_neighbors", "joint_variance", "wnn_umap", "joint_on_wnn")


def simulated(n_cells: int, setting: str, seed: int = 0):
    import gbumap

    params = dict(SETTINGS[setting])
    n_lineages = params.get("n_lineages", 3)
    adata = gbumap.datasets.simulate(n_cells, 2000, n_proteins=max(40, 3 * n_lineages + 12), random_state=seed + 7,
                                     n_jobs=2, **params)
    return adata


def label_scores(adata, emb: np.ndarray, seed: int) -> dict:
    from gbumap._layout_metrics import label_accuracy

    rng = np.random.default_rng(seed)
    n = adata.n_obs
    sample = rng.choice(n, min(n, SAMPLE), replace=False)
    subtype = adata.obs["subtype"].astype(str).to_numpy()
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    lineage = adata.obs["lineage"].astype(str).to_numpy()
    split = adata.obs["subtype"].astype(str).str.contains("_P").to_numpy()
    within = []
    for name in np.unique(lineage):
        cells = np.flatnonzero(lineage == name)
        sub = cells if len(cells) <= SAMPLE else rng.choice(cells, SAMPLE, replace=False)
        within.append(label_accuracy(emb[cells], cell_type[cells], np.searchsorted(cells, np.sort(sub))))
    split_cells = np.flatnonzero(split)
    sub = split_cells if len(split_cells) <= SAMPLE else rng.choice(split_cells, SAMPLE, replace=False)
    return {
        "subtype_accuracy": label_accuracy(emb, subtype, sample),
        "protein_only_accuracy": label_accuracy(emb[split_cells], subtype[split_cells],
                                                np.searchsorted(split_cells, np.sort(sub))),
        "rna_only_accuracy": float(np.mean(within)),
    }


def gbumap_map(adata, which: str, seed: int) -> tuple[np.ndarray, dict, object]:
    import gbumap

    work = adata
    params = {}
    if which == "rna":
        work = adata[:, adata.var["feature_types"] == "GEX"].copy()
    elif which == "protein":
        work = adata[:, adata.var["feature_types"] == "ADT"].copy()
        params["n_pcs"] = 0
    elif which == "joint_on_wnn":
        work = adata.copy()
        params.update(modality_key="feature_types", neighbors_key="wnn", neighbors_any_rep=True)
    elif which.startswith("joint"):
        params.update(modality_key="feature_types", modality_weighting=which.split("_")[1])
    else:
        work = adata.copy()
    started = time.perf_counter()
    gbumap.tl.glassbox_umap(work, mask_var=False, random_state=seed, verbose=False, **params)
    seconds = time.perf_counter() - started
    info = {"seconds": seconds, "reconstruction_error_rel": float(work.uns["gbumap"]["reconstruction_error"]["max_rel"])}
    if which == "joint_variance":
        info["protein_marker_auroc"] = protein_marker_auroc(work)
    if which.startswith("joint"):
        parts = gbumap.get.modality_contributions(work)
        info["median_protein_share"] = float(parts["share_ADT"].median())
        info["weights"] = {str(k): float(v) for k, v in zip(work.uns["gbumap"]["modalities"]["names"],
                                                             work.uns["gbumap"]["modalities"]["scales"])}
        info["max_modality_sum_error"] = float(np.abs(
            parts[["GEX_1", "GEX_2"]].to_numpy() + parts[["ADT_1", "ADT_2"]].to_numpy() - work.obsm["X_gbumap"]
        ).max())
    return np.asarray(work.obsm["X_gbumap"]), info, work


def protein_marker_auroc(adata) -> dict:
    """AUROC of the protein ranking (``tl.rank_features(modality="ADT")``) against the simulated markers.

    For each protein-defined subtype, the truth is every protein up in it: its own markers and its lineage's.
    """
    from sklearn.metrics import roc_auc_score

    import gbumap

    gbumap.tl.rank_features(adata, "subtype", modality="ADT", key_added="rank_adt")
    truth = adata.uns["simulation"]["protein_truth"]
    lineage_of = dict(zip(adata.obs["subtype"].astype(str), adata.obs["lineage"].astype(str)))
    out = {}
    for group in sorted(g for g in truth if "_P" in g):
        table = gbumap.get.rank_features_df(adata, group, key="rank_adt")
        up = set(truth[group]) | set(truth[lineage_of[group]])
        out[group] = float(roc_auc_score(table["names"].isin(up), table["scores"]))
    return out


def wnn_map(adata, seed: int) -> tuple[np.ndarray, dict]:
    import mudata as md
    import muon as mu
    import scanpy as sc

    rna = adata[:, adata.var["feature_types"] == "GEX"].copy()
    prot = adata[:, adata.var["feature_types"] == "ADT"].copy()
    prot.X = prot.X.toarray()  # muon 0.1.9's WNN fails on a sparse representation (it builds a 3-D row)
    started = time.perf_counter()
    sc.pp.pca(rna, n_comps=50, random_state=seed)
    sc.pp.neighbors(rna, random_state=seed)
    sc.pp.pca(prot, n_comps=min(30, prot.n_vars - 1), random_state=seed)
    sc.pp.neighbors(prot, random_state=seed)
    mdata = md.MuData({"rna": rna, "prot": prot})
    mu.pp.neighbors(mdata, random_state=seed)
    mu.tl.umap(mdata, random_state=seed)
    seconds = time.perf_counter() - started
    # the WNN graph, for the joint gbumap encoder to follow
    adata.obsp["wnn_connectivities"] = mdata.obsp["connectivities"]
    adata.uns["wnn"] = {"connectivities_key": "wnn_connectivities", "params": {"method": "wnn"}}
    return np.asarray(mdata.obsm["X_umap"]), {"seconds": seconds}


def query_scores(reference, query, seed: int) -> dict:
    """RNA-only queries against full-profile queries on the joint map (tl.transform)."""
    from sklearn.neighbors import NearestNeighbors

    import gbumap

    full = query.copy()
    gbumap.tl.transform(full, reference, contributions=False)
    genes = (query.var["feature_types"] == "GEX").to_numpy()
    rna_only = query[:, genes].copy()
    gbumap.tl.transform(rna_only, reference, fill_missing="baseline", contributions=False)
    imputed = query[:, genes].copy()
    gbumap.tl.transform(imputed, reference, fill_missing="impute", contributions=False)
    ref_emb = np.asarray(reference.obsm["X_gbumap"])
    index = NearestNeighbors(n_neighbors=16).fit(ref_emb)
    radius, _ = index.kneighbors(ref_emb[: min(len(ref_emb), SAMPLE)])
    scale = float(np.median(radius[:, -1]))  # the 15th neighbour (the first is the cell itself)
    out = {}
    for name, q in (("rna_only", rna_only), ("imputed", imputed)):
        shift = np.linalg.norm(np.asarray(q.obsm["X_gbumap"]) - np.asarray(full.obsm["X_gbumap"]), axis=1)
        out[f"{name}_median_shift_in_knn_radii"] = float(np.median(shift) / scale)
        out[f"{name}_p90_shift_in_knn_radii"] = float(np.quantile(shift, 0.9) / scale)
    for name, q in (("full", full), ("rna_only", rna_only), ("imputed", imputed)):
        idx = index.kneighbors(np.asarray(q.obsm["X_gbumap"]), n_neighbors=15, return_distance=False)
        for label in ("subtype", "cell_type"):
            ref_labels = reference.obs[label].astype(str).to_numpy()
            votes = ref_labels[idx]
            pred = np.array([max(set(row), key=list(row).count) for row in votes])
            out[f"{name}_{label}_transfer"] = float(np.mean(pred == query.obs[label].astype(str).to_numpy()))
        split = query.obs["subtype"].astype(str).str.contains("_P").to_numpy()
        votes = reference.obs["subtype"].astype(str).to_numpy()[idx[split]]
        pred = np.array([max(set(row), key=list(row).count) for row in votes])
        out[f"{name}_protein_only_transfer"] = float(np.mean(pred == query.obs["subtype"].astype(str).to_numpy()[split]))
    return out


def run(n_cells: int, setting: str, seed: int = 0) -> tuple[dict, dict]:
    adata = simulated(n_cells, setting, seed)
    rng = np.random.default_rng(seed)
    is_query = rng.random(adata.n_obs) < 0.2
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    out, maps = {"n_cells": int(reference.n_obs), "n_query": int(query.n_obs), "setting": setting}, {}
    for which in MAPS:
        if which == "wnn_umap":
            emb, info = wnn_map(reference, seed)
        else:
            emb, info, work = gbumap_map(reference, which, seed)
            if which == "joint_variance":  # the default weighting
                out["query"] = query_scores(work, query, seed)
        info.update(label_scores(reference, emb, seed))
        out[which] = info
        maps[which] = emb
        print(f"  {setting} {n_cells}: {which}: " + ", ".join(
            f"{k} {v:.3g}" for k, v in info.items() if isinstance(v, float)), flush=True)
    return out, {"maps": maps, "labels": reference.obs["subtype"].astype(str).to_numpy()}


def plot(result: dict, pictures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "rna": "gbumap, RNA only", "protein": "gbumap, proteins only", "concatenated": "gbumap, one matrix (no modality_key)",
        "joint_neighbors": "gbumap joint (neighbors weights)", "joint_variance": "gbumap joint (variance weights)",
        "wnn_umap": "muon WNN + umap-learn", "joint_on_wnn": "gbumap joint on the WNN graph",
    }
    codes = np.unique(pictures["labels"], return_inverse=True)[1]
    fig, axes = plt.subplots(2, 4, figsize=(14.5, 7.4))
    for ax, which in zip(axes.ravel(), MAPS):
        emb = pictures["maps"][which]
        ax.scatter(emb[:, 0], emb[:, 1], c=codes, cmap="tab20", s=max(0.2, 8000 / len(emb)), linewidths=0,
                   rasterized=True)
        ax.set_xticks([])
        ax.set_yticks([])
        r = result[which]
        ax.set_title(f"{titles[which]}\n{r['seconds']:.1f} s; subtype acc. {r['subtype_accuracy']:.3f}, "
                     f"protein-only {r['protein_only_accuracy']:.3f}", fontsize=8)
    axes.ravel()[-1].axis("off")
    fig.suptitle(f"Simulated CITE-seq ({result['setting']} setting), {result['n_cells']:,} cells, colour: subtype",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: list[dict]) -> str:
    import datetime
    import os

    import torch

    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} ({os.cpu_count()} cores), torch "
        f"{torch.__version__}, one run of `python benchmarks/multimodal.py`. Label kNN accuracy (5-fold, 15 "
        "neighbours) on the reference cells (80%); protein-only: the split types' subtypes (chance 0.5); "
        "RNA-only: the types within each lineage; s: wall time of the map (gbumap with contributions; WNN: "
        "per-modality PCA and neighbours, WNN and umap-learn).", "",
        "| setting | cells | map | subtype acc. | protein-only acc. | RNA-only acc. | s | exactness (rel.) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for which in MAPS:
            m = r[which]
            err = m.get("reconstruction_error_rel")
            lines.append(
                f"| {r['setting']} | {r['n_cells']:,} | {which} | {m['subtype_accuracy']:.3f} | "
                f"{m['protein_only_accuracy']:.3f} | {m['rna_only_accuracy']:.3f} | {m['seconds']:.1f} | "
                f"{'—' if err is None else f'{err:.1e}'} |"
            )
    lines += ["", "**Joint maps: protein share and modality sums**", "",
              "| setting | cells | weighting | median protein share | max abs(Σ modalities − embedding) |",
              "|---|---:|---|---:|---:|"]
    for r in results:
        for which in ("joint_variance", "joint_neighbors", "joint_on_wnn"):
            m = r[which]
            lines.append(f"| {r['setting']} | {r['n_cells']:,} | {which.split('_', 1)[1]} | "
                         f"{m['median_protein_share']:.3f} | {m['max_modality_sum_error']:.1e} |")
    lines += ["", "**Protein markers** recovered by the joint map's protein ranking (`tl.rank_features(modality=\"ADT\")`, "
              "default weighting): AUROC of the scores against the proteins up in each protein-defined subtype", "",
              "| setting | cells | " + " | ".join(sorted(results[0]["joint_variance"]["protein_marker_auroc"])) + " |",
              "|---|---:|" + "---:|" * len(results[0]["joint_variance"]["protein_marker_auroc"])]
    for r in results:
        auroc = r["joint_variance"]["protein_marker_auroc"]
        lines.append(f"| {r['setting']} | {r['n_cells']:,} | " + " | ".join(f"{auroc[g]:.3f}" for g in sorted(auroc))
                     + " |")
    lines += ["", "**Queries** mapped onto the joint map (default weighting, `tl.transform`), held-out 20%: with both "
              "modalities, with RNA only and the proteins at the baseline (`fill_missing=\"baseline\"`), and with RNA "
              "only and the protein block imputed (`fill_missing=\"impute\"`). Shift: distance to the full profile's "
              "position, in units of the map's median distance to the 15th neighbour.", "",
              "| setting | cells | rule | median shift | 90th pct. shift | subtype transfer | protein-only split "
              "transfer | cell type transfer |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        q = r["query"]
        for rule, name in (("both modalities", "full"), ("RNA only, baseline", "rna_only"),
                           ("RNA only, impute", "imputed")):
            shift = "—" if name == "full" else f"{q[f'{name}_median_shift_in_knn_radii']:.2f}"
            p90 = "—" if name == "full" else f"{q[f'{name}_p90_shift_in_knn_radii']:.2f}"
            lines.append(
                f"| {r['setting']} | {r['n_query']:,} | {rule} | {shift} | {p90} | {q[f'{name}_subtype_transfer']:.3f} | "
                f"{q[f'{name}_protein_only_transfer']:.3f} | {q[f'{name}_cell_type_transfer']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 90_000])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results = []
    for n in args.sizes:
        for setting in args.settings:
            if n > 10_000 and setting != "default":
                continue  # the large size in the default setting only (time)
            result, pictures = run(n, setting)
            plot(result, pictures, RESULTS / f"multimodal_{setting}_{n}.png")
            results.append(result)
            payload = {"machine": platform.platform(), "results": results}
            (RESULTS / "multimodal.json").write_text(json.dumps(payload, indent=1))
            (RESULTS / "multimodal.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
