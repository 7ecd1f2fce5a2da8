"""Write ``tests/data/result_blocks_v0.h5ad``: one ``uns`` result block of every kind ``gbumap.tl`` writes.

The stored file was written by this script with gbumap at commit ``e99dd7b``
(``main`` before issue 27), whose result blocks carry no kind or version tag:
``tests/test_results.py`` checks that today's readers still read every block in
it and that today's writers, run on the same data and models, give the same
answers. Run it again only to add a kind (with the code of that time):

    python tests/data/make_result_blocks.py

The data are a slice of scanpy's bundled ``pbmc68k_reduced`` (log-normalised
``raw``; four groups of ``bulk_labels``, 150 genes) with two small models: a
piecewise-linear one under ``"gbumap"`` and a bilinear one under
``"bilinear"`` (for the interaction modules). The file stays under 1 MB.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "result_blocks_v0.h5ad"

GROUPS = ["CD14+ Monocyte", "CD19+ B", "CD4+/CD25 T Reg", "CD56+ NK"]
MARKERS = ["LYZ", "S100A8", "S100A9", "FCN1", "CST3", "CD79A", "CD79B", "MS4A1", "CD74", "HLA-DRA", "NKG7", "GNLY",
           "GZMB", "PRF1", "CD3D", "CD3E", "IL7R", "LDHB"]
N_GENES = 150
#: Same model settings for every model: small, quick, deterministic on the CPU.
FIT = dict(n_pcs=10, hidden_layers=(16, 16), n_steps=40, verbose=False, random_state=0)


def data():
    """The slice of pbmc68k_reduced: cells of four groups, the 150 most variable genes (markers included)."""
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = sc.datasets.pbmc68k_reduced()
    adata = full.raw.to_adata()
    adata = adata[adata.obs["bulk_labels"].isin(GROUPS).to_numpy()].copy()
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    order = np.argsort(-X.var(axis=0), kind="stable")
    names = list(adata.var_names[order[:N_GENES]])
    names += [g for g in MARKERS if g not in names and g in adata.var_names]
    keep = [g for g in adata.var_names if g in set(names)]  # the data's own gene order
    adata = adata[:, keep].copy()
    adata.obs = adata.obs[["bulk_labels", "n_genes", "percent_mito", "n_counts"]].copy()
    adata.obs["bulk_labels"] = adata.obs["bulk_labels"].cat.remove_unused_categories()
    adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
    adata.uns = {}
    adata.obsp = {}
    adata.obsm["X_pca"] = np.ascontiguousarray(adata.obsm["X_pca"][:, :10])
    return adata


def write_blocks(adata) -> None:
    """Every kind of result block, under its default key (the two gene-set and stability variants under others)."""
    import gbumap

    gbumap.tl.fit(adata, **FIT)
    gbumap.tl.contributions(adata)
    gbumap.tl.fit(adata, encoder="bilinear", key_added="bilinear", **FIT)
    gbumap.tl.rank_features(adata, "bulk_labels")
    gbumap.tl.contrast(adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B")
    gbumap.tl.perturb(adata, ["LYZ", "CST3"], value=0, groupby="bulk_labels")
    gbumap.tl.rank_knockouts(adata, "bulk_labels", n_exact=3)
    sets = gbumap.read_gmt(HERE / "small.gmt")
    gbumap.tl.gene_set_contributions(adata, sets, groupby="bulk_labels", n_top=20)
    gbumap.tl.gene_set_contributions(adata, sets, key_added="gene_sets_nogroups")
    gbumap.tl.interaction_modules(adata, 3, key="bilinear")
    gbumap.tl.quality(adata, ["gbumap", "umap"], groupby="bulk_labels", continuous="n_counts")
    gbumap.tl.randomization_check(adata, "bulk_labels", n_randomizations=2)
    gbumap.tl.stability(adata, 2, groupby="bulk_labels", n_top=10, verbose=False)
    gbumap.tl.stability(adata, 2, key_added="stability_nogroups", verbose=False)


def main() -> int:
    import anndata as ad

    import gbumap

    adata = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small groups, zarr/h5ad format notes
        write_blocks(adata)
        adata.write_h5ad(OUT)
    back = ad.read_h5ad(OUT)
    print(f"gbumap {gbumap.__version__} wrote {OUT.name}: {OUT.stat().st_size / 1e6:.2f} MB, "
          f"{back.n_obs} cells × {back.n_vars} genes; uns: {', '.join(sorted(back.uns))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
