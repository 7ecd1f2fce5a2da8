"""``tl.stability`` at 90,000 cells × 2,000 genes: five models against one training.

    python benchmarks/stability_90k.py      # about 4 minutes on 2 cores (after explain_map.py made its data)

Loads the fitted 90k model of ``explain_map.py`` (``results/raw/explain_map_90000.h5ad``),
runs ``tl.stability(n_models=5, groupby="cell_type")`` and reports the shared
graph's time, each extra run's training time against the reference's, and
the total; writes ``results/stability_90k.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> int:
    import anndata as ad

    import gbumap

    adata = ad.read_h5ad(HERE / "results" / "raw" / "explain_map_90000.h5ad")
    reference = float(adata.uns["gbumap"]["training"]["seconds"])
    start = time.perf_counter()
    gbumap.tl.stability(adata, n_models=5, groupby="cell_type", verbose=False)
    total = time.perf_counter() - start
    timings = adata.uns["stability_gbumap"]["timings"]
    runs = [float(t) for t in np.asarray(timings["training"])]
    out = {
        "n_cells": adata.n_obs,
        "reference_training_s": reference,
        "graph_s": float(timings["graph"]),
        "extra_runs_training_s": runs,
        "stability_call_s": total,
        "five_models_over_one_training": (reference + sum(runs)) / reference,
        "five_models_with_rankings_over_one_training": (reference + total - float(timings["graph"])) / reference,
        "spread_median": float(np.median(adata.obs["stability_gbumap_spread"])),
    }
    print(json.dumps(out, indent=1))
    (HERE / "results" / "stability_90k.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
