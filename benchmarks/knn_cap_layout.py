"""The neighbour-search cap seen on a map: gbumap with the uncapped and the capped search beside umap-learn.

    python benchmarks/knn_cap_layout.py      # about 3 minutes on 2 cores

50,000 simulated cells × 2,000 genes (``simulate(..., random_state=0)``), the
model's 50 PCs; three maps: gbumap with the clustered search as it was
(every second-nearest list probed), gbumap as it is (capped), and
``umap.UMAP`` (min_dist 0.1, as gbumap) on the same PCs. Titles give kNN
preservation@15 against the PCs and kNN-classifier accuracy of the cell types
on a 10,000-cell sample. Writes ``results/layout_knn_cap_50000.png`` and
``results/knn_cap_layout.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gbumap._knn as knn  # noqa: E402
from gbumap import GlassBoxUMAP  # noqa: E402
from gbumap._layout_metrics import knn_preservation, label_accuracy  # noqa: E402
from gbumap.datasets import simulate  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    import umap

    adata = simulate(50_000, 2000, random_state=0, n_jobs=2)
    labels = adata.obs["cell_type"].to_numpy()
    probe = GlassBoxUMAP(pca_components=50)
    probe._check_params()
    pcs = probe._fit_projection(adata.X, None, 0)
    sample = np.random.default_rng(0).choice(len(pcs), 10_000, replace=False)
    maps = {}
    saved = knn.MAX_EXTRA_LISTS
    knn.MAX_EXTRA_LISTS = 1 << 30
    maps["gbumap, uncapped search (before)"] = GlassBoxUMAP(pca_components=50, random_state=0).fit_transform(adata.X)
    knn.MAX_EXTRA_LISTS = saved
    maps["gbumap, capped search (now)"] = GlassBoxUMAP(pca_components=50, random_state=0).fit_transform(adata.X)
    maps["umap-learn on the same PCs"] = umap.UMAP(min_dist=0.1, random_state=0).fit_transform(pcs)
    rows = {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    codes = np.unique(labels, return_inverse=True)[1]
    for ax, (name, emb) in zip(axes, maps.items()):
        within = np.arange(len(sample))
        rows[name] = {
            "knn_preservation": knn_preservation(pcs[sample], emb[sample], within[:5000]),
            "label_accuracy": label_accuracy(emb, labels, sample),
        }
        ax.scatter(emb[:, 0], emb[:, 1], c=codes, s=0.3, cmap="tab20", rasterized=True)
        ax.set_title(f"{name}\nkNN pres. {rows[name]['knn_preservation']:.4f}, label acc. {rows[name]['label_accuracy']:.3f}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(RESULTS / "layout_knn_cap_50000.png", dpi=110)
    (RESULTS / "knn_cap_layout.json").write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
