"""Why the benchmark's kNN ratio and the sweep's differ: UMAP's ``min_dist``.

    python benchmarks/min_dist.py          # about 2 minutes on 2 cores

``benchmarks/run.py`` compares each tool at its default: scanpy's
``sc.tl.umap`` uses ``min_dist=0.5``, gbumap (like ``umap.UMAP``) 0.1.
``benchmarks/sweep_layout.py`` compares gbumap with ``umap.UMAP`` at the same
``min_dist=0.1``. This script fits both on the same 50 PCs of the benchmark's
10,000 simulated cells at both settings, beside ``sc.tl.umap``, and reports
kNN preservation@15 on one sample of 5,000 cells
(``results/min_dist.{json,md}``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info, make_data  # noqa: E402


def main() -> int:
    import anndata as ad
    import scanpy as sc
    import umap

    import gbumap
    from gbumap._layout_metrics import knn_preservation

    cache = HERE / "results" / "raw"
    cache.mkdir(parents=True, exist_ok=True)
    adata = ad.read_h5ad(make_data(10_000, cache))
    sc.pp.pca(adata, n_comps=50)
    pcs = adata.obsm["X_pca"]
    sample = np.random.default_rng(0).permutation(len(pcs))[:5000]
    rows = []

    def record(tool: str, min_dist: float, embed) -> None:
        start = time.perf_counter()
        emb = embed()
        rows.append({"tool": tool, "min_dist": min_dist, "seconds": time.perf_counter() - start,
                     "knn_preservation": knn_preservation(pcs, emb, sample, k=15)})
        print(rows[-1], flush=True)

    for min_dist in (0.1, 0.5):
        record("umap.UMAP", min_dist, lambda md=min_dist: umap.UMAP(min_dist=md, random_state=0).fit_transform(pcs))
        record("gbumap.GlassBoxUMAP", min_dist,
               lambda md=min_dist: gbumap.GlassBoxUMAP(min_dist=md, random_state=0).fit_transform(pcs))

    def scanpy_default():
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca")
        sc.tl.umap(adata, random_state=0)
        return adata.obsm["X_umap"]

    record("sc.pp.neighbors + sc.tl.umap (defaults)", 0.5, scanpy_default)

    out = HERE / "results"
    info = machine_info()
    (out / "min_dist.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    umap_at = {r["min_dist"]: r["knn_preservation"] for r in rows if r["tool"] == "umap.UMAP"}
    lines = [
        f"Measured {info['date']}, gbumap {info['gbumap']}: 10,000 simulated cells (as in `run.py`), the same 50 PCs "
        "for every fit, kNN preservation@15 on one sample of 5,000 cells. Ratio: over `umap.UMAP` at the same "
        "`min_dist`.",
        "",
        "| tool | min_dist | kNN pres.@15 | ratio | fit (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = r["knn_preservation"] / umap_at[r["min_dist"]]
        lines.append(f"| {r['tool']} | {r['min_dist']} | {r['knn_preservation']:.4f} | {ratio:.2f} | {r['seconds']:.1f} |")
    (out / "min_dist.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
