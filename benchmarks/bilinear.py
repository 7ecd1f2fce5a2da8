"""The bilinear encoder's layout beside the default encoder's, on the same data and graph settings.

    python benchmarks/bilinear.py      # about 3 minutes on 2 cores

Fits ``tl.glassbox_umap`` with the default encoder and with
``encoder="bilinear"`` (same seed, default steps) on pbmc68k_reduced (log
data, ``bulk_labels``), scikit-learn's digits and the simulator (4,000 cells ×
1,000 genes, ``cell_type``), and scores both maps with ``tl.quality`` against
the model's own PCA input. Writes ``results/bilinear.{json,md}`` and
``results/bilinear.png`` (the maps side by side).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info  # noqa: E402

FIGURES = ("knn_preservation", "trustworthiness", "label_accuracy")


def datasets():
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from sklearn.datasets import load_digits

    import gbumap

    pbmc = sc.datasets.pbmc68k_reduced().raw.to_adata()
    yield "pbmc68k_reduced", pbmc, "bulk_labels"
    X, y = load_digits(return_X_y=True)
    digits = ad.AnnData(X.astype(np.float32))
    digits.obs["digit"] = pd.Categorical(y.astype(str))
    yield "digits", digits, "digit"
    sim = gbumap.datasets.simulate(4000, 1000, random_state=0)
    yield "simulator 4k", sim, "cell_type"


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import gbumap
    from gbumap._view import model_view

    rows, maps = [], []
    for name, adata, groupby in datasets():
        pcs = None
        for encoder in (None, "bilinear"):
            key = "bilinear" if encoder else "default"
            start = time.perf_counter()
            gbumap.tl.glassbox_umap(adata, key_added=key, encoder=encoder, mask_var=False, verbose=False)
            seconds = time.perf_counter() - start
            if pcs is None:  # the default model's PCA input, for both maps
                model = gbumap.get.model(adata, key)
                X = model_view(adata, key).matrix(adata)
                adata.obsm["X_input"] = np.asarray(X @ model.components_.T) - model.components_ @ model.baseline_
                pcs = "X_input"
            gap = gbumap.get.reconstruction_error(adata, key=key)["max_rel"]
            rows.append({"data": name, "encoder": encoder or "default", "seconds": seconds, "max_rel_gap": gap})
        gbumap.tl.quality(adata, ["default", "bilinear"], use_rep=pcs, groupby=groupby)
        table = gbumap.get.quality(adata)
        for row in rows[-2:]:
            label = next(i for i in table.index if str(i).endswith(row["encoder"]))  # the obsm key, X_<key>
            for figure in FIGURES:
                row[figure] = float(table.loc[label, figure])
            print(row, flush=True)
        maps.append((name, adata, groupby))

    fig, axes = plt.subplots(len(maps), 2, figsize=(9, 4 * len(maps)))
    for (name, adata, groupby), pair in zip(maps, axes):
        for ax, key in zip(pair, ("default", "bilinear")):
            sc.pl.embedding(adata, basis=key, color=groupby, ax=ax, show=False, legend_loc=None, title=f"{name}: {key}")
    fig.savefig(HERE / "results" / "bilinear.png", dpi=70, bbox_inches="tight")

    info = machine_info()
    (HERE / "results" / "bilinear.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    lines = [
        f"Measured {info['date']}, gbumap {info['gbumap']}: the same seed and default steps for both encoders; "
        "figures from `tl.quality` against the default model's PCA input (k = 15).",
        "",
        "| data | encoder | kNN pres.@15 | trustworthiness | label acc. | max rel. gap | fit (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['encoder']} | {r['knn_preservation']:.3f} | {r['trustworthiness']:.3f} | "
            f"{r['label_accuracy']:.3f} | {r['max_rel_gap']:.1e} | {r['seconds']:.1f} |"
        )
    (HERE / "results" / "bilinear.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
