"""Quality against training cost for the encoder's training settings.

    python benchmarks/sweep_training.py                  # 30k cells, the committed table
    python benchmarks/sweep_training.py --cells 10000

Simulates cells × 2,000 genes, takes 50 PCs (scanpy) and gbumap's exact kNN
graph once, then fits GlassBoxUMAP on that fixed graph with each setting and
measures training time and the quality metrics of ``run.py`` beside
umap-learn on the same PCs. This is how the defaults (batch of 1,024 edges,
``auto_n_steps``) were chosen. Results: ``results/sweep_training_<cells>.{json,md}``.
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

from run import machine_info, quality  # noqa: E402

SETTINGS = [
    {"batch_size": 4096, "n_steps": 695, "label": "previous defaults at 30k (4,096 edges × 695 steps)"},
    {"batch_size": 4096, "n_steps": 300},
    {"batch_size": 4096, "n_steps": 300, "learning_rate": 0.02},
    {"batch_size": 4096, "n_steps": 600, "hidden_layers": (64, 64, 64)},
    {"batch_size": 2048, "n_steps": 600, "learning_rate": 0.02},
    {"batch_size": 1024, "n_steps": 500},
    {"batch_size": 1024, "n_steps": None, "label": "new defaults (1,024 edges × auto_n_steps)"},
    {"batch_size": 1024, "n_steps": 2000},
    {"batch_size": 1024, "n_steps": 1000, "hidden_layers": (128, 128, 128, 128)},
    {"batch_size": 512, "n_steps": 2000},
    {"batch_size": 1024, "n_steps": 4000},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    import scanpy as sc
    import umap

    import gbumap
    from gbumap._estimator import auto_n_steps
    from gbumap._graph import graph_from_knn, nearest_neighbors

    adata = gbumap.datasets.simulate(args.cells, 2000, random_state=0)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    sc.pp.pca(adata, n_comps=50)
    pcs = adata.obsm["X_pca"].astype(np.float32)
    graph = graph_from_knn(*nearest_neighbors(pcs, 15, exact=True))

    rows = []
    t0 = time.perf_counter()
    reference = umap.UMAP(random_state=0).fit_transform(pcs)
    rows.append({"setting": "umap-learn 0.5 (200 epochs)", "seconds": time.perf_counter() - t0,
                 **quality(pcs, reference, labels, np.random.default_rng(0))})
    print(rows[-1], flush=True)
    for setting in SETTINGS:
        params = {k: v for k, v in setting.items() if k != "label"}
        steps = params["n_steps"] or auto_n_steps(args.cells)
        model = gbumap.GlassBoxUMAP(random_state=0, verbose=False, **params)
        model.fit(pcs, graph=graph)
        label = setting.get("label") or ", ".join(f"{k}={v}" for k, v in params.items())
        rows.append({"setting": label, "batch_size": params["batch_size"], "n_steps": steps,
                     "seconds": model.timings_["training"],
                     **quality(pcs, model.embedding_, labels, np.random.default_rng(0))})
        print(rows[-1], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "cells": args.cells, "rows": rows}
    stem = args.out / f"sweep_training_{args.cells}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float))
    info = result["machine"]
    lines = [
        f"{args.cells:,} simulated cells × 2,000 genes, 50 PCs, one fixed exact kNN graph; training time only "
        f"(umap-learn: its whole fit). Measured {info['date']} on {info['cpu']} ({info['cores']} cores), "
        f"torch {info['torch']}.",
        "",
        "| setting | edges seen (M) | time (s) | kNN pres.@15 | trust.@15 | label kNN acc. | silhouette |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        edges = f"{r['batch_size'] * r['n_steps'] / 1e6:.2f}" if "n_steps" in r else "–"
        lines.append(
            f"| {r['setting']} | {edges} | {r['seconds']:.1f} | {r['knn_preservation']:.4f} | "
            f"{r['trustworthiness']:.3f} | {r['label_knn_accuracy']:.3f} | {r['silhouette']:.3f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
