"""A small log-count AnnData with two groups of cells that differ in a block of marker genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd


def two_group_adata(n: int, g: int, n_markers: int, seed: int = 0) -> ad.AnnData:
    """``n`` cells × ``g`` genes; the first half of the cells has 4× the rate in the first ``n_markers`` genes."""
    rng = np.random.default_rng(seed)
    rate = np.ones((n, g))
    rate[: n // 2, :n_markers] = 4.0
    adata = ad.AnnData(np.log1p(rng.poisson(rate)).astype(np.float32))
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = [f"g{j}" for j in range(g)]
    adata.obs["group"] = pd.Categorical(np.where(np.arange(n) < n // 2, "a", "b"))
    return adata
