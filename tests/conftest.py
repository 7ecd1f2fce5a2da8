"""Shared, small fixtures: every model here trains for few steps on bundled data."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def pbmc_raw():
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(pbmc_raw):
    """A fresh copy of scanpy's bundled pbmc68k_reduced (700 cells × 765 genes)."""
    return pbmc_raw.copy()


@pytest.fixture(scope="session")
def pbmc_log_raw(pbmc_raw):
    """pbmc68k_reduced's log-normalised expression (its ``raw``: 700 cells × 765 genes), with obs and obsm."""
    return pbmc_raw.raw.to_adata()


@pytest.fixture(scope="session")
def pbmc_fitted_session(pbmc_log_raw):
    import gbumap

    adata = pbmc_log_raw.copy()
    gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", verbose=False, top_genes=10)
    return adata


@pytest.fixture
def pbmc_fitted(pbmc_fitted_session):
    """pbmc68k_reduced with a fitted model, contributions and rankings (a copy per test)."""
    return pbmc_fitted_session.copy()


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="session")
def wine_std():
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), y


@pytest.fixture(scope="session")
def pbmc_plot_session(pbmc_log_raw):
    """A quick fit for the plotting and explorer tests (read-only: plots must not write to it).

    pbmc68k_reduced (log data) with a model trained for few steps, its
    contributions and the bulk_labels rankings; the plots are checked against
    numbers, not looks.
    """
    import gbumap

    adata = pbmc_log_raw.copy()
    gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", n_steps=40, verbose=False)
    return adata
