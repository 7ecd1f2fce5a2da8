"""Stability across seeds: marker recovery on pbmc68k_reduced and attribution AUROC on the simulator.

    OMP_NUM_THREADS=1 python benchmarks/stability.py     # about 5 minutes on 2 cores

1. pbmc68k_reduced (log data, default steps): ``tl.fit`` then
   ``tl.stability(n_models=5, groupby="bulk_labels", n_top=20)``; the time of
   the four extra runs against one training, the alignment residuals and the
   per-cell spread, and which canonical monocyte, NK and B markers are among
   each group's stable top 20 genes (``top_fraction >= 0.8``).
2. The simulator (3,000 cells × 1,000 genes): the attribution AUROC and
   precision, against the true programs, of one run's top-n list and of the
   stability-filtered list (genes in the top n in at least 80% of runs).

Writes ``results/stability.json``.
"""
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import torch
from sklearn.metrics import roc_auc_score

import gbumap
from gbumap._registry import encode_record, read_record

torch.set_num_threads(1)
MARKERS = {
    "CD14+ Monocyte": "LYZ S100A8 S100A9 FCN1 CST3 TYROBP FCER1G LST1 AIF1".split(),
    "CD56+ NK": "NKG7 GNLY GZMB PRF1 CTSW GZMA".split(),
    "CD19+ B": "CD79A CD79B MS4A1 CD74 HLA-DRA".split(),
}
out = {}


def all_ranks(adata, groupby, key_st):
    """(models, groups, genes) ranks: the reference and every rebuilt run, each by tl.rank_features."""
    record = read_record(adata, "gbumap")
    genes = record.feature_names
    check = adata.copy()
    gbumap.tl.rank_features(check, groupby, key_added="r")
    results = [check.uns["r"]]
    for m in gbumap.get.stability_models(adata, key=key_st):
        check.uns["m"] = encode_record(record.replace(model=m))
        gbumap.tl.rank_features(check, groupby, key="m", key_added="r")
        results.append(check.uns["r"])
    groups = list(results[0]["names"].dtype.names)
    ranks = np.stack([[pd.Index(np.asarray(r["names"][g]).astype(str)).get_indexer(genes) + 1 for g in groups]
                      for r in results])
    return ranks, groups, genes


# ---------------------------------------------------------------- pbmc
adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
t0 = time.perf_counter()
gbumap.tl.fit(adata, verbose=False, random_state=0)
fit_wall = time.perf_counter() - t0
t0 = time.perf_counter()
gbumap.tl.stability(adata, 5, groupby="bulk_labels", n_top=20, verbose=False)
st_wall = time.perf_counter() - t0
res = adata.uns["stability_gbumap"]
tim = res["timings"]
pbmc = {
    "n_steps": int(adata.uns["gbumap"]["training"]["n_steps"]),
    "fit_wall_s": fit_wall,
    "reference_training_s": float(tim["reference_training"]),
    "graph_s": float(tim["graph"]),
    "run_training_s": [float(x) for x in tim["training"]],
    "stability_wall_s": st_wall,
    "alignment_residual": [float(x) for x in res["alignment"]["residual"]],
    "alignment_scale": [float(x) for x in res["alignment"]["scale"]],
    "spread_quantiles": np.quantile(adata.obs["stability_gbumap_spread"], [0.1, 0.5, 0.9]).tolist(),
    "map_extent": float(np.ptp(adata.obsm["X_gbumap"], axis=0).max()),
}
ranks, groups, genes = all_ranks(adata, "bulk_labels", "stability_gbumap")
for group, markers in MARKERS.items():
    df = gbumap.get.rank_features_df(adata, group, key="stability_gbumap")
    stable = df[df["top_fraction"] >= 0.8]
    gi = groups.index(group)
    ref_top = set(genes[ranks[0, gi] <= 20])
    per_run = [len(set(genes[ranks[m, gi] <= 20]) & set(markers)) for m in range(ranks.shape[0])]
    pbmc[group] = {
        "n_markers": len(markers),
        "n_stable_genes": int(len(stable)),
        "markers_in_stable_top20": sorted(set(stable["names"]) & set(markers)),
        "markers_in_reference_top20": sorted(ref_top & set(markers)),
        "markers_in_top20_per_run": per_run,
        "stable_genes": stable["names"].tolist(),
    }
out["pbmc"] = pbmc
print(json.dumps(pbmc, indent=1), flush=True)

# ---------------------------------------------------------------- simulator
from gbumap.datasets import truth_matrix  # noqa: E402

sim = gbumap.datasets.simulate(3000, 1000, random_state=0)  # 500 genes is below the simulator's minimum of 870
truth = truth_matrix(sim)
t0 = time.perf_counter()
gbumap.tl.fit(sim, mask_var=False, verbose=False, random_state=0)
sim_fit = time.perf_counter() - t0
t0 = time.perf_counter()
gbumap.tl.stability(sim, 5, groupby="cell_type", n_top=20, verbose=False)
sim_st = time.perf_counter() - t0
ranks, groups, genes = all_ranks(sim, "cell_type", "stability_gbumap")
truth = truth.reindex(genes).fillna(False).astype(bool)
rows = []
for n in (20, 50, 90):
    for gi, group in enumerate(groups):
        y = truth[group].to_numpy()
        single = [(ranks[m, gi] <= n).astype(float) for m in range(ranks.shape[0])]
        stable = ((ranks[:, gi] <= n).mean(0) >= 0.8).astype(float)
        rows.append({
            "n": n, "group": group,
            "auroc_single_ref": roc_auc_score(y, single[0]),
            "auroc_single_mean_over_runs": float(np.mean([roc_auc_score(y, s) for s in single])),
            "auroc_stable": roc_auc_score(y, stable),
            "precision_single_ref": float(y[single[0] > 0].mean()),
            "precision_stable": float(y[stable > 0].mean()) if stable.any() else float("nan"),
            "size_stable": int(stable.sum()),
            "auroc_continuous_ref_rank": roc_auc_score(y, -ranks[0, gi]),
            "auroc_continuous_median_rank": roc_auc_score(y, -np.median(ranks[:, gi], 0)),
        })
table = pd.DataFrame(rows)
summary = table.groupby("n").mean(numeric_only=True)
out["simulator"] = {
    "fit_wall_s": sim_fit, "stability_wall_s": sim_st,
    "timings": {k: (np.asarray(v).tolist()) for k, v in sim.uns["stability_gbumap"]["timings"].items()},
    "summary": summary.to_dict(orient="index"),
}
pd.set_option("display.width", 250)
print(table.to_string(), flush=True)
print(summary.to_string())
print(json.dumps(out["simulator"]["timings"]), sim_fit, sim_st)
with open(Path(__file__).resolve().parent / "results" / "stability.json", "w") as f:
    json.dump(out, f, indent=1, default=float)
