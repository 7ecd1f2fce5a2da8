"""Paths a small fixture would skip: several batches, graphs handed in, the Lightning engine.

Each test here fails when the path it names is bypassed (an accumulator
overwritten instead of summed, a graph ignored, Fabric not used).
"""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import gbumap
from gbumap import GlassBoxUMAP
from gbumap._graph import graph_from_knn, nearest_neighbors


def _neighbour_overlap(emb: np.ndarray, graph: sp.csr_matrix, k: int = 10) -> float:
    """Mean share of each cell's strongest graph neighbours among its k nearest cells in ``emb``."""
    from sklearn.neighbors import NearestNeighbors

    near = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)[:, 1:]
    graph = sp.csr_matrix(graph)
    shares = []
    for i in range(graph.shape[0]):
        row = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        vals = graph.data[graph.indptr[i] : graph.indptr[i + 1]]
        strongest = row[np.argsort(-vals)[:k]]
        shares.append(np.isin(strongest, near[i]).mean())
    return float(np.mean(shares))


@pytest.fixture(scope="module")
def foreign(digits):
    """400 digits, their own kNN, and the kNN of their left halves only (a graph the encoder can follow)."""
    X = digits[0][:400]
    left = X[:, [i for i in range(64) if i % 8 < 4]]
    return X, nearest_neighbors(X, 15), nearest_neighbors(left, 15)


@pytest.mark.parametrize("how", ["graph", "knn"])
def test_fit_uses_the_graph_it_is_given(foreign, how):
    X, own, other = foreign
    other_graph = graph_from_knn(*other)
    own_graph = graph_from_knn(*own)
    kwargs = {"graph": other_graph} if how == "graph" else {"knn": other}
    model = GlassBoxUMAP(n_steps=300, random_state=0).fit(X, **kwargs)
    assert abs(model.graph_ - other_graph).max() == 0
    # the layout follows the graph handed in (measured 0.68 vs 0.52), not the one the data would give
    # (without it the order flips: 0.47 vs 0.71)
    assert _neighbour_overlap(model.embedding_, other_graph) > _neighbour_overlap(model.embedding_, own_graph) + 0.08


def test_tl_fit_uses_the_scanpy_graph(pbmc):
    sc.pp.pca(pbmc, n_comps=30)
    sc.pp.neighbors(pbmc, use_rep="X_pca", n_neighbors=15)
    real = pbmc.obsp["connectivities"].copy()
    # the graph of PCs 3-12 only, stored where the X_pca graph was: gbumap must use what it is given
    pbmc.obsm["later_pcs"] = pbmc.obsm["X_pca"][:, 2:12].copy()
    sc.pp.neighbors(pbmc, use_rep="later_pcs", n_neighbors=15, key_added="later")
    other = pbmc.obsp["later_connectivities"].copy()
    pbmc.obsp["connectivities"] = other
    gbumap.tl.fit(pbmc, use_rep="X_pca", neighbors_key="neighbors", n_steps=300, verbose=False)
    emb = pbmc.obsm["X_gbumap"]
    assert pbmc.uns["gbumap"]["neighbors"]["source"] == "scanpy"
    assert _neighbour_overlap(emb, other) > _neighbour_overlap(emb, real) + 0.05


def test_lightning_engine_really_runs_fabric(wine_std, monkeypatch):
    import lightning.fabric

    calls = []
    original = lightning.fabric.Fabric.setup_module

    def spy(self, module, *args, **kwargs):
        calls.append(type(module).__name__)
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(lightning.fabric.Fabric, "setup_module", spy)
    X, _ = wine_std
    fabric = GlassBoxUMAP(n_steps=10, batch_size=128, engine="lightning").fit(X)
    assert calls == ["HomogeneousMLP"] and fabric.training_info_["engine"] == "lightning"
    plain = GlassBoxUMAP(n_steps=10, batch_size=128, engine="torch").fit(X)
    assert calls == ["HomogeneousMLP"] and plain.training_info_["engine"] == "torch"


# ---------------------------------------------------------------- several batches
def test_get_contributions_does_not_depend_on_the_batch(pbmc_fitted):
    adata = pbmc_fitted
    genes = list(np.asarray(adata.uns["gbumap"]["feature_names"])[:7])
    for reduction in (None, "l2", "normed_l2", 1):
        one = gbumap.get.contributions(adata, reduction=reduction, batch_size=adata.n_obs)
        many = gbumap.get.contributions(adata, reduction=reduction, batch_size=97)
        np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-7)
        some = gbumap.get.contributions(adata, genes=genes, reduction=reduction, batch_size=53)
        index = [list(adata.uns["gbumap"]["feature_names"]).index(g) for g in genes]
        np.testing.assert_allclose(some, one[..., index], rtol=1e-6, atol=1e-7)
    err_one = gbumap.get.reconstruction_error(adata, batch_size=adata.n_obs)
    err_many = gbumap.get.reconstruction_error(adata, batch_size=61)
    assert err_many["max_abs"] == pytest.approx(err_one["max_abs"], rel=1e-6)


def test_tl_contributions_does_not_depend_on_the_batch(pbmc_fitted):
    one = gbumap.tl.contributions(pbmc_fitted, top_genes=5, batch_size=pbmc_fitted.n_obs, copy=True, verbose=False)
    many = gbumap.tl.contributions(pbmc_fitted, top_genes=5, batch_size=97, copy=True, verbose=False)
    np.testing.assert_array_equal(many.obsm["gbumap_jacobian"], one.obsm["gbumap_jacobian"])
    assert (many.layers["gbumap_l2"] != one.layers["gbumap_l2"]).nnz == 0
    assert many.layers["gbumap_l2"].getnnz(axis=1).tolist() == [5] * pbmc_fitted.n_obs
    assert many.uns["gbumap"]["reconstruction_error"]["max_abs"] == pytest.approx(
        one.uns["gbumap"]["reconstruction_error"]["max_abs"], rel=1e-6
    )


def test_tl_transform_does_not_depend_on_the_batch(pbmc_fitted):
    query = pbmc_fitted[:300].copy()
    for key in ("X_gbumap", "gbumap_jacobian"):
        del query.obsm[key]
    one = gbumap.tl.transform(query, pbmc_fitted, batch_size=300, copy=True)
    many = gbumap.tl.transform(query, pbmc_fitted, batch_size=41, copy=True)
    # equal to float rounding: a BLAS product's rows may round differently with the number of rows it
    # multiplies at once (MKL's AVX-512 kernels, seen at 1.4e-6 relative), as in the estimator's test below
    scale = np.abs(one.obsm["X_gbumap"]).max()
    np.testing.assert_allclose(many.obsm["X_gbumap"], one.obsm["X_gbumap"], rtol=1e-5, atol=1e-6 * scale)
    jac = one.obsm["gbumap_jacobian"]
    np.testing.assert_allclose(many.obsm["gbumap_jacobian"], jac, rtol=1e-5, atol=1e-6 * np.abs(jac).max())
    np.testing.assert_allclose(one.obsm["X_gbumap"], pbmc_fitted.obsm["X_gbumap"][:300], rtol=1e-5, atol=1e-5)


def test_estimator_inference_does_not_depend_on_the_batch(digits):
    X, _ = digits
    model = GlassBoxUMAP(n_steps=40, pca_components=20).fit(X)
    small, whole = model.input_jacobian(X, batch_size=13), model.input_jacobian(X, batch_size=5000)
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())  # BLAS blocking only
    err = model.reconstruction_error(X, batch_size=7)
    assert err["max_rel"] == pytest.approx(model.reconstruction_error(X, batch_size=4096)["max_rel"], rel=0.5, abs=1e-7)
