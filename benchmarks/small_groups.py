"""How many cells a group needs before its top-10 gene list from ``tl.rank_features`` stops moving.

    OMP_NUM_THREADS=1 python benchmarks/small_groups.py     # about 3 minutes on 2 cores

One model per data set is fitted once (``tl.glassbox_umap``, default steps,
``random_state=0``); then, for a few large groups, ``tl.rank_features`` (its
defaults: ``score="weighted_mean"``, ``reduction="l2"``) ranks the genes of
random subsets of ``n`` of the group's cells against every cell of the other
groups (the group's unchosen cells are left out of the ranking, so the
reference is the same "rest" as for the whole group). For every ``n`` and
``n_repeats`` random subsets:

* ``overlap_full``: the share of the subset's top 10 that is also in the whole
  group's top 10 (mean, and the worst of the repeats);
* ``jaccard_full``: the Jaccard index of the two top-10 sets;
* ``overlap_pair``: the share of genes two *disjoint* subsets of ``n`` cells
  have in common in their top 10, where the group has ``2n`` cells. This one
  does not lean on the whole group (a subset of 100 of 129 cells shares most
  of its cells with the whole group, so ``overlap_full`` is high at large
  ``n`` partly by construction).

Data: scanpy's bundled ``pbmc68k_reduced`` (its log-normalised ``raw``, 700
cells, ``bulk_labels``) and the simulator (6,000 cells × 1,000 genes, 2
lineages × 3 types, log-normalised; each type has 400 to 1,700 cells, so the
subsets are small against the whole group).

The threshold of ``tl.rank_features``'s small-group warning
(``gbumap.tl._rank.MIN_GROUP_SIZE``) is read off the result by ``RULE``: the
smallest ``n`` at which, on both data sets, every group's subsets keep on
average at least 80% of the whole group's top 10.

Writes ``results/small_groups.{json,md}``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info  # noqa: E402

import gbumap  # noqa: E402

SIZES = (5, 10, 15, 20, 30, 50, 100)
N_REPEATS = 10
N_TOP = 10
MIN_OVERLAP = 0.8


def top_genes(adata, groupby: str, group: str, keep: np.ndarray | None, labels: pd.Series) -> list[str]:
    """The top ``N_TOP`` genes of ``group`` when only the cells ``keep`` of it are labelled."""
    sub = labels.copy()
    if keep is not None:
        members = np.flatnonzero((labels == group).to_numpy())
        drop = np.setdiff1d(members, keep)
        sub.iloc[drop] = np.nan
    adata.obs["_subset"] = pd.Categorical(sub, categories=labels.cat.categories)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the small-group warning is what is measured here
        gbumap.tl.rank_features(adata, "_subset", groups=[group], n_genes=N_TOP, key_added="_subset_rank")
    names = gbumap.get.rank_features_df(adata, group, key="_subset_rank")["names"]
    return list(names)


def measure(adata, groupby: str, groups: list[str], seed: int = 0) -> list[dict]:
    labels = adata.obs[groupby].astype("category")
    rng = np.random.default_rng(seed)
    rows = []
    for group in groups:
        members = np.flatnonzero((labels == group).to_numpy())
        full = set(top_genes(adata, groupby, group, None, labels))
        for n in SIZES:
            if n >= len(members):
                continue
            full_overlap, jaccard, pair = [], [], []
            for _ in range(N_REPEATS):
                perm = rng.permutation(members)
                first = set(top_genes(adata, groupby, group, perm[:n], labels))
                full_overlap.append(len(first & full) / N_TOP)
                jaccard.append(len(first & full) / len(first | full))
                if 2 * n <= len(members):
                    second = set(top_genes(adata, groupby, group, perm[n : 2 * n], labels))
                    pair.append(len(first & second) / N_TOP)
            rows.append(
                {
                    "group": group,
                    "group_size": int(len(members)),
                    "n": n,
                    "overlap_full_mean": float(np.mean(full_overlap)),
                    "overlap_full_min": float(np.min(full_overlap)),
                    "jaccard_full_mean": float(np.mean(jaccard)),
                    "overlap_pair_mean": float(np.mean(pair)) if pair else None,
                }
            )
            r = rows[-1]
            pair_text = "   —" if r["overlap_pair_mean"] is None else f"{r['overlap_pair_mean']:.2f}"
            print(
                f"  {group:32s} N={len(members):5d} n={n:4d}  overlap {r['overlap_full_mean']:.2f} "
                f"(min {r['overlap_full_min']:.1f})  jaccard {r['jaccard_full_mean']:.2f}  pair {pair_text}",
                flush=True,
            )
    del adata.obs["_subset"]
    del adata.uns["_subset_rank"]
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per n: the mean over groups (each group's mean over repeats), and the worst group."""
    table = pd.DataFrame(rows)
    out = []
    for n, part in table.groupby("n"):
        pair = part["overlap_pair_mean"].dropna()
        out.append(
            {
                "n": int(n),
                "groups": int(len(part)),
                "overlap_full_mean": float(part["overlap_full_mean"].mean()),
                "overlap_full_worst_group": float(part["overlap_full_mean"].min()),
                "jaccard_full_mean": float(part["jaccard_full_mean"].mean()),
                "overlap_pair_mean": float(pair.mean()) if len(pair) else None,
            }
        )
    return out


RULE = (
    "the smallest n at which, on both data sets, every measured group's subsets keep on average at least "
    f"{MIN_OVERLAP:.0%} of the whole group's top 10 (at most 2 of the 10 genes change)"
)


def threshold(result: dict) -> dict:
    """``MIN_GROUP_SIZE`` of ``tl.rank_features`` by ``RULE``: the larger of the two data sets' sizes."""
    per_set = {}
    for name in ("pbmc68k_reduced", "simulator"):
        ok = [r["n"] for r in result[name]["summary"] if r["overlap_full_worst_group"] >= MIN_OVERLAP]
        per_set[name] = min(ok) if ok else None
    return {"rule": RULE, "per_data_set": per_set, "min_group_size": max(v for v in per_set.values() if v)}


def markdown(result: dict) -> str:
    """The summary table (one row per subset size) and the threshold, for docs/performance.md."""
    lines = [
        "| cells in the subset | pbmc68k_reduced: overlap with the whole group's top 10 (worst group) "
        "| pbmc: two disjoint subsets | simulator: overlap with the whole group's top 10 (worst group) "
        "| simulator: two disjoint subsets |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = {name: {r["n"]: r for r in result[name]["summary"]} for name in ("pbmc68k_reduced", "simulator")}

    def cell(r, field):
        if r is None or r[field] is None:
            return "—"
        return f"{r[field]:.2f}"

    for n in result["sizes"]:
        pb, si = rows["pbmc68k_reduced"].get(n), rows["simulator"].get(n)
        full_pb = "—" if pb is None else f"{pb['overlap_full_mean']:.2f} ({pb['overlap_full_worst_group']:.2f})"
        full_si = "—" if si is None else f"{si['overlap_full_mean']:.2f} ({si['overlap_full_worst_group']:.2f})"
        pair_pb, pair_si = cell(pb, "overlap_pair_mean"), cell(si, "overlap_pair_mean")
        lines.append(f"| {n} | {full_pb} | {pair_pb} | {full_si} | {pair_si} |")
    t = result["threshold"]
    pbmc_groups = ", ".join(
        f"{g} ({next(r['group_size'] for r in result['pbmc68k_reduced']['rows'] if r['group'] == g)})"
        for g in result["pbmc68k_reduced"]["groups"]
    )
    sim_groups = ", ".join(f"{g} ({result['simulator']['group_sizes'][g]})" for g in result["simulator"]["groups"])
    lines += [
        "",
        f"Mean over {result['n_repeats']} random subsets per group and over the groups: pbmc68k_reduced "
        f"{pbmc_groups}; simulator ({result['simulator']['n_cells']} cells × {result['simulator']['n_genes']} "
        f"genes) {sim_groups}. Sizes a group cannot supply are left out (only groups with at least twice n "
        "cells give a disjoint pair). A subset of a small pbmc68k_reduced group is most of the group at large "
        "n (30 of CD56+ NK's 31 cells, 100 of CD14+ Monocyte's 129), which lifts its overlap with the whole "
        "group; the disjoint pairs and the simulator's large groups do not lean on that. "
        f"Threshold rule: {t['rule']}: n = {t['per_data_set']['pbmc68k_reduced']} on pbmc68k_reduced, "
        f"n = {t['per_data_set']['simulator']} on the simulator, so `MIN_GROUP_SIZE = {t['min_group_size']}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import scanpy as sc
    import torch

    torch.set_num_threads(1)
    result = {"machine": machine_info(), "sizes": list(SIZES), "n_repeats": N_REPEATS, "n_top": N_TOP}
    start = time.perf_counter()

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", verbose=False, random_state=0)
    groups = ["Dendritic", "CD14+ Monocyte", "CD19+ B", "CD4+/CD25 T Reg", "CD56+ NK"]
    print("pbmc68k_reduced", flush=True)
    rows = measure(adata, "bulk_labels", groups)
    result["pbmc68k_reduced"] = {"groups": groups, "rows": rows, "summary": summary(rows)}

    sim = gbumap.datasets.simulate(6000, 1000, n_lineages=2, types_per_lineage=3, random_state=0)
    sc.pp.normalize_total(sim, target_sum=1e4)
    sc.pp.log1p(sim)
    gbumap.tl.glassbox_umap(sim, groupby="cell_type", verbose=False, random_state=0)
    sizes = sim.obs["cell_type"].value_counts()
    groups = [str(g) for g in sizes.index[:4]]
    print("simulator", dict(sizes), flush=True)
    rows = measure(sim, "cell_type", groups)
    result["simulator"] = {
        "n_cells": sim.n_obs,
        "n_genes": sim.n_vars,
        "group_sizes": {str(k): int(v) for k, v in sizes.items()},
        "groups": groups,
        "rows": rows,
        "summary": summary(rows),
    }
    result["threshold"] = threshold(result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    for name in ("pbmc68k_reduced", "simulator"):
        print(name)
        for r in result[name]["summary"]:
            pair = "  —" if r["overlap_pair_mean"] is None else f"{r['overlap_pair_mean']:.2f}"
            print(
                f"  n={r['n']:4d} groups={r['groups']}  overlap with full top 10 {r['overlap_full_mean']:.2f} "
                f"(worst group {r['overlap_full_worst_group']:.2f})  jaccard {r['jaccard_full_mean']:.2f}  "
                f"disjoint pair {pair}"
            )
    out = HERE / "results" / "small_groups.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "results" / "small_groups.md").write_text(markdown(result))
    print(f"threshold: {result['threshold']}")
    print(f"wrote {out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
