"""Explaining the map: speed at 90k cells, and what the contrast recovers on simulated and real data.

    python benchmarks/explain_map.py            # about 6 minutes on 2 cores
    python benchmarks/explain_map.py --quick    # the recovery parts only (about 2 minutes)

1. Speed (issue 18 targets), on the benchmark's 90,000 simulated cells × 2,000
   genes (``run.py``'s data) fitted with ``tl.glassbox_umap`` (Jacobians
   stored): ``tl.contrast`` of one type against the rest and against another
   type, ``tl.gene_set_contributions`` of 50 random sets (20-200 genes) with
   and without ``groupby``, ``tl.perturb`` of one gene in all cells, and
   ``tl.rank_knockouts`` for one group. Each is timed twice; the faster run
   is reported.
2. Recovery on the simulator (4,000 cells × 1,000 genes, 1,000 steps): for
   each pair of cell types of one lineage, the AUROC of the two types'
   program genes against the shared lineage program, ranking by the
   absolute difference part and by the absolute whole term.
3. Recovery on ``pbmc68k_reduced`` (default steps): how many canonical
   markers are among the top 20 genes of four contrasts, by both scores.

Writes ``results/explain_map.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info, make_data  # noqa: E402

MARKERS = {
    "CD14+ Monocyte": {"LYZ", "S100A8", "S100A9", "FCN1", "CST3", "TYROBP", "FCER1G", "LST1", "AIF1", "FTL", "CFD"},
    "CD19+ B": {"CD79A", "CD79B", "MS4A1", "CD74", "HLA-DRA", "HLA-DRB1", "HLA-DPB1", "HLA-DQA1", "HLA-DPA1", "CD37",
                "TCL1A"},
    "CD56+ NK": {"NKG7", "GNLY", "GZMB", "PRF1", "CTSW", "GZMA", "FGFBP2", "KLRD1", "CST7", "CCL5"},
}


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(cache: Path) -> dict:
    import anndata as ad

    import gbumap

    fitted = cache / "explain_map_90000.h5ad"
    if not fitted.exists():
        adata = ad.read_h5ad(make_data(90_000, cache))
        gbumap.tl.glassbox_umap(adata, verbose=False)
        adata.write_h5ad(fitted)
    adata = ad.read_h5ad(fitted)
    types = [str(t) for t in adata.obs["cell_type"].cat.categories if str(t) != "progenitor"]
    rng = np.random.default_rng(0)
    genes = np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str)
    sets = {f"set{i}": list(rng.choice(genes, size=int(rng.integers(20, 201)), replace=False)) for i in range(50)}
    gene = str(adata.var_names[adata.var["role"].astype(str) == "type"][0])
    out = {"n_cells": adata.n_obs, "n_genes": len(genes), "n_set_genes": sum(len(s) for s in sets.values())}
    out["contrast_rest_s"] = best_of(lambda: gbumap.tl.contrast(adata, "cell_type", types[0]))
    out["contrast_reference_s"] = best_of(lambda: gbumap.tl.contrast(adata, "cell_type", types[0], reference=types[1]))
    out["gene_sets_s"] = best_of(lambda: gbumap.tl.gene_set_contributions(adata, sets))
    out["gene_sets_groupby_s"] = best_of(lambda: gbumap.tl.gene_set_contributions(adata, sets, groupby="cell_type"))
    out["perturb_one_gene_s"] = best_of(lambda: gbumap.tl.perturb(adata, gene))
    out["perturb_agreement"] = float(adata.uns["perturb_gbumap"]["agreement"])
    out["rank_knockouts_one_group_s"] = best_of(
        lambda: gbumap.tl.rank_knockouts(adata, "cell_type", groups=[types[0]]), repeats=1
    )
    print(out, flush=True)
    return out


def simulator_recovery() -> dict:
    from sklearn.metrics import roc_auc_score

    import gbumap

    adata = gbumap.datasets.simulate(4000, 1000, random_state=0)
    gbumap.tl.glassbox_umap(adata, n_steps=1000, verbose=False)
    role, program = adata.var["role"].astype(str), adata.var["program"].astype(str)
    by_lineage: dict[str, list[str]] = {}
    for cell_type, lineage in adata.uns["simulation"]["lineage_of"].items():
        by_lineage.setdefault(str(lineage), []).append(str(cell_type))
    pairs = []
    emb = adata.obsm["X_gbumap"]
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    for lineage, types in sorted(by_lineage.items()):
        for i, a in enumerate(sorted(types)):
            for b in sorted(types)[i + 1 :]:
                gbumap.tl.contrast(adata, "cell_type", a, reference=b)
                table = gbumap.get.rank_features_df(adata, a, key="contrast_gbumap").set_index("names")
                genes = adata.var_names[
                    ((role == "type") & program.isin([a, b])) | ((role == "lineage") & (program == lineage))
                ]
                truth = (role.loc[genes] == "type").to_numpy()
                whole = table[["difference_term", "context_term", "covariance_term"]].sum(axis=1).loc[genes].abs()
                pairs.append(
                    {
                        "pair": f"{a} vs {b}",
                        "shift": float(np.linalg.norm(emb[labels == a].mean(0) - emb[labels == b].mean(0))),
                        "auroc_difference": float(roc_auc_score(truth, table.loc[genes, "difference_term"].abs())),
                        "auroc_total": float(roc_auc_score(truth, whole)),
                    }
                )
                print(pairs[-1], flush=True)
    return {"pairs": pairs}


def pbmc_recovery() -> dict:
    import scanpy as sc

    import gbumap

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    gbumap.tl.glassbox_umap(adata, verbose=False)
    rows = []
    for group, reference in (
        ("CD14+ Monocyte", "CD19+ B"),
        ("CD56+ NK", "CD19+ B"),
        ("CD14+ Monocyte", "rest"),
        ("CD56+ NK", "rest"),
    ):
        wanted = MARKERS[group] | (MARKERS[reference] if reference in MARKERS else set())
        row = {"group": group, "reference": reference}
        for score in ("difference", "total"):
            gbumap.tl.contrast(adata, "bulk_labels", group, reference=reference, score=score)
            top = gbumap.get.rank_features_df(adata, group, key="contrast_gbumap")["names"].head(20)
            row[f"markers_top20_{score}"] = int(len(set(top) & wanted))
        rows.append(row)
        print(row, flush=True)
    return {"contrasts": rows}


def report(results: dict) -> str:
    info = results["machine"]
    lines = [f"Measured {info['date']}, gbumap {info['gbumap']}, {info['cpu']}.", ""]
    if "speed" in results:
        s = results["speed"]
        lines += [
            f"**Speed** at {s['n_cells']:,} cells × {s['n_genes']:,} genes (Jacobians stored; faster of two runs):",
            "",
            "| step | seconds | target |",
            "| --- | ---: | ---: |",
            f"| `tl.contrast`, one type vs the rest | {s['contrast_rest_s']:.2f} | < 2 |",
            f"| `tl.contrast`, one type vs another | {s['contrast_reference_s']:.2f} | < 2 |",
            f"| `tl.gene_set_contributions`, 50 sets ({s['n_set_genes']:,} gene slots) | {s['gene_sets_s']:.2f} | < 10 |",
            f"| same, with `groupby` (rankings and enrichment) | {s['gene_sets_groupby_s']:.2f} | < 10 |",
            f"| `tl.perturb`, one gene in all cells | {s['perturb_one_gene_s']:.2f} | < 5 |",
            f"| `tl.rank_knockouts`, one group, every gene | {s['rank_knockouts_one_group_s']:.2f} | |",
            "",
            f"First-order prediction equal to the exact move (one-gene knock-out): {s['perturb_agreement']:.1%} of cells.",
            "",
        ]
    pairs = results["simulator"]["pairs"]
    lines += [
        "**Simulator** (4,000 cells × 1,000 genes, 1,000 steps): AUROC of the two types' program genes against "
        "their shared lineage program, by the absolute part of each gene's contrast term.",
        "",
        "| pair | shift | difference part | whole term |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {p['pair']} | {p['shift']:.2f} | {p['auroc_difference']:.3f} | {p['auroc_total']:.3f} |" for p in pairs]
    mean_e = np.mean([p["auroc_difference"] for p in pairs])
    mean_t = np.mean([p["auroc_total"] for p in pairs])
    lines += [f"| mean | | {mean_e:.3f} | {mean_t:.3f} |", ""]
    lines += [
        "**pbmc68k_reduced** (default steps): canonical markers of the two groups among the top 20 genes.",
        "",
        "| group | reference | difference part | whole term |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [
        f"| {r['group']} | {r['reference']} | {r['markers_top20_difference']} | {r['markers_top20_total']} |"
        for r in results["pbmc"]["contrasts"]
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 90k speed part")
    args = parser.parse_args()
    cache = HERE / "results" / "raw"
    cache.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_info()}
    if not args.quick:
        results["speed"] = speed(cache)
    results["simulator"] = simulator_recovery()
    results["pbmc"] = pbmc_recovery()
    out = HERE / "results"
    (out / "explain_map.json").write_text(json.dumps(results, indent=1))
    (out / "explain_map.md").write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
