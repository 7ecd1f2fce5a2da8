"""Which ranking score of ``tl.rank_features`` recovers the simulator's gene programs best.

    python benchmarks/ranking_scores.py               # 10k cells × 2,000 genes

Fits ``tl.glassbox_umap`` on simulated data, ranks genes per cell type with
each ``score`` and reports the mean per-type AUROC against the simulator's
truth (as in ``run.py``). Results: ``results/ranking_scores.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import attribution_auroc, machine_info  # noqa: E402
from workers import _ranking_scores  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    import gbumap
    from gbumap.datasets import truth_matrix

    adata = gbumap.datasets.simulate(args.cells, 2000, random_state=0)
    truth = truth_matrix(adata)
    gbumap.tl.glassbox_umap(adata, mask_var=False, verbose=False)
    rows = {}
    for score in ("logfc", "t", "mean"):
        key = f"rank_{score}"
        gbumap.tl.rank_features(adata, "cell_type", score=score, key_added=key)
        categories, scores = _ranking_scores(adata.uns[key], adata.var_names)
        rows[score] = attribution_auroc(scores, categories, truth)
        print(score, round(rows[score], 3), flush=True)
    info = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranking_scores.json").write_text(json.dumps({"machine": info, "cells": args.cells, "auroc": rows}, indent=2))
    lines = [
        f"{args.cells:,} simulated cells × 2,000 genes, `tl.glassbox_umap` defaults; mean per-type AUROC of "
        f"`tl.rank_features(score=...)` against the simulator's truth. Measured {info['date']}, gbumap {info['gbumap']}.",
        "",
        "| score | mean AUROC |",
        "| --- | ---: |",
        *[f"| `{s}` | {v:.3f} |" for s, v in rows.items()],
    ]
    (args.out / "ranking_scores.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
