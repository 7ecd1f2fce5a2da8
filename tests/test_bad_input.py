"""Bad input, case by case: every entry point gives a clear error or a documented behaviour.

Each case is one test. Error cases assert the exception type and message and
that the input (AnnData, array or file) is byte-for-byte unchanged afterwards;
"works" cases assert the documented behaviour (exact contributions, untouched
input). Data are tiny (120 cells × 40 genes, 10 training steps) so the whole
file runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _adata_snapshot import _value_fp, assert_unchanged, snapshot
from sklearn.exceptions import NotFittedError

import gbumap
from gbumap._registry import RegistryError

matplotlib.use("Agg")

FIT = dict(n_steps=10, batch_size=256, n_neighbors=10, verbose=False)
N_CELLS, N_GENES = 120, 40


def tiny(n: int = N_CELLS, g: int = N_GENES, *, sparse: bool = False, seed: int = 0) -> ad.AnnData:
    """Log-normalised toy data with two cell types (A has genes 0–9 up)."""
    rng = np.random.default_rng(seed)
    types = np.where(np.arange(n) % 2 == 0, "A", "B")
    rate = np.ones((n, g))
    rate[types == "A", :10] = 4.0
    X = np.log1p(rng.poisson(rate)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(X) if sparse else X)
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.var_names = [f"gene{j}" for j in range(g)]
    adata.obs["cell_type"] = pd.Categorical(types)
    adata.layers["counts"] = rng.poisson(rate).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def fitted_module():
    adata = tiny()
    gbumap.tl.glassbox_umap(adata, groupby="cell_type", **FIT)
    return adata


@dataclass
class Ctx:
    fitted: ad.AnnData
    tmp: Path


def fingerprint(subject: Any) -> Any:
    if isinstance(subject, ad.AnnData):
        return snapshot(subject)
    if isinstance(subject, Path):
        return hashlib.sha256(subject.read_bytes()).hexdigest() if subject.exists() else None
    return _value_fp(subject)


def check_unchanged(subject: Any, before: Any) -> None:
    if isinstance(subject, ad.AnnData):
        assert_unchanged(subject, before)
    else:
        assert fingerprint(subject) == before, "input changed after the error"


def exact(adata: ad.AnnData, key: str = "gbumap") -> None:
    err = gbumap.get.reconstruction_error(adata, key)
    assert err["max_rel"] < 1e-5, err
    assert np.isfinite(adata.obsm[f"X_{key}"]).all()


# ---------------------------------------------------------------- case tables
@dataclass
class Bad:
    """``make(ctx)`` returns ``(subject, action)``; ``action()`` must raise ``exc`` matching ``match``."""

    make: Callable[[Ctx], tuple[Any, Callable[[], Any]]]
    exc: type[BaseException]
    match: str


@dataclass
class Works:
    """``run(ctx)`` performs the call and asserts the documented behaviour itself."""

    run: Callable[[Ctx], None]


@dataclass
class Cli:
    """``make(ctx)`` returns ``(input_path, argv)``; ``main(argv)`` must return 2 with ``match`` on stderr."""

    make: Callable[[Ctx], tuple[Path, list[str]]]
    match: str


CASES: dict[str, Bad | Works | Cli] = {}


def bad(name: str, exc: type[BaseException], match: str):
    def deco(fn):
        CASES[name] = Bad(fn, exc, match)
        return fn

    return deco


def works(name: str):
    def deco(fn):
        CASES[name] = Works(fn)
        return fn

    return deco


def cli(name: str, match: str):
    def deco(fn):
        CASES[name] = Cli(fn, match)
        return fn

    return deco


def _with(adata: ad.AnnData, fn: Callable[[ad.AnnData], Any]):
    return adata, lambda: fn(adata)


# ---------------------------------------------------------------- GlassBoxUMAP
def _X(n=N_CELLS, g=N_GENES):
    return np.asarray(tiny(n, g).X)


@bad("est/empty", ValueError, r"X is empty: shape \(0, 5\)")
def _(ctx):
    X = np.zeros((0, 5), np.float32)
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/too_few_cells", ValueError, r"Too few cells: 8 cells for n_neighbors=10.*n_neighbors \+ 1 = 11")
def _(ctx):
    X = _X(8)
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/nan", ValueError, r"X contains 1 NaN and 0 infinite")
def _(ctx):
    X = _X()
    X[3, 4] = np.nan
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/inf_sparse", ValueError, r"X contains 0 NaN and 1 infinite")
def _(ctx):
    X = sp.csr_matrix(_X())
    X.data[0] = np.inf
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/not_2d", ValueError, r"X must be 2-D")
def _(ctx):
    X = np.ones(50, np.float32)
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/strings", ValueError, r"X must be numeric; got dtype <U")
def _(ctx):
    X = np.full((50, 4), "a")
    return X, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("est/n_steps_0", ValueError, r"n_steps must be an integer >= 1; got 0")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP(**{**FIT, "n_steps": 0}).fit(X)


@bad("est/bad_baseline", ValueError, r"baseline must be 'mean' or 'zero'; got 'median'")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP(baseline="median", **FIT).fit(X)


@bad("est/bad_dtype", ValueError, r"dtype must be 'float32' or 'float64'; got 'float16'")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP(dtype="float16", **FIT).fit(X)


@bad("est/negative_min_dist", ValueError, r"min_dist must be a finite number >= 0")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP(min_dist=-1.0, **FIT).fit(X)


@bad("est/checkpoint_path_type", TypeError, r"checkpoint_path must be a file path")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP(checkpoint_path=3, **FIT).fit(X)


@bad("est/not_fitted", NotFittedError, r"not fitted yet; call fit\(X\) first")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.GlassBoxUMAP().transform(X)


@bad("est/transform_wrong_features", ValueError, r"X has 7 features but the model was fitted on 40")
def _(ctx):
    model = gbumap.get.model(ctx.fitted)
    X = _X()[:, :7]
    return X, lambda: model.transform(X)


def _est_works(make_X):
    def run(ctx):
        X = make_X()
        before = fingerprint(X)
        model = gbumap.GlassBoxUMAP(**FIT).fit(X)
        contrib = model.compute_contributions(X)
        assert np.isfinite(contrib).all()
        np.testing.assert_allclose(contrib.sum(-1), model.transform(X), atol=1e-5 * np.abs(model.embedding_).max())
        assert fingerprint(X) == before  # the caller's matrix is never converted in place

    return run


works("est/dtype_int64")(_est_works(lambda: tiny().layers["counts"].astype(np.int64)))
works("est/dtype_float16")(_est_works(lambda: _X().astype(np.float16)))
works("est/dtype_float64")(_est_works(lambda: _X().astype(np.float64)))
works("est/sparse_csr")(_est_works(lambda: sp.csr_matrix(_X())))
works("est/sparse_csc")(_est_works(lambda: sp.csc_matrix(_X())))


@works("est/constant_and_zero_features_with_pca")
def _(ctx):
    X = _X()
    X[:, 0] = 1.3  # constant
    X[:, 1] = 0.0  # all zero
    model = gbumap.GlassBoxUMAP(pca_components=5, **FIT).fit(X)
    assert np.isfinite(model.components_).all() and np.isfinite(model.embedding_).all()
    contrib = model.compute_contributions(X)
    assert np.isfinite(contrib).all()
    assert np.all(contrib[:, :, :2] == 0.0)  # offset from the mean cell is exactly 0
    np.testing.assert_allclose(contrib.sum(-1), model.embedding_, atol=1e-5 * np.abs(model.embedding_).max())


@works("est/n_components_3")
def _(ctx):
    X = _X()
    model = gbumap.GlassBoxUMAP(n_components=3, **FIT).fit(X)
    assert model.embedding_.shape == (N_CELLS, 3)
    assert model.compute_contributions(X).shape == (N_CELLS, 3, N_GENES)
    assert model.reconstruction_error(X)["max_rel"] < 1e-5


# ---------------------------------------------------------------- tl.fit / tl.glassbox_umap
@bad("fit/empty_anndata", ValueError, r"The AnnData is empty \(0 cells × 5 genes\)")
def _(ctx):
    return _with(ad.AnnData(np.zeros((0, 5), np.float32)), lambda a: gbumap.tl.fit(a, **FIT))


@bad("fit/too_few_cells", ValueError, r"Too few cells: 9 cells for n_neighbors=10")
def _(ctx):
    return _with(tiny(9), lambda a: gbumap.tl.fit(a, **FIT))


@bad("fit/nan_in_X", ValueError, r"X contains 1 NaN and 0 infinite value\(s\)")
def _(ctx):
    a = tiny()
    a.X[5, 5] = np.nan
    return _with(a, lambda a: gbumap.tl.fit(a, **FIT))


@bad("fit/inf_in_layer", ValueError, r"layers\['lognorm'\] contains 0 NaN and 2 infinite value\(s\)")
def _(ctx):
    a = tiny()
    a.layers["lognorm"] = sp.csr_matrix(a.X)
    a.layers["lognorm"].data[:2] = [np.inf, -np.inf]
    return _with(a, lambda a: gbumap.tl.fit(a, layer="lognorm", **FIT))


@bad("fit/nan_in_obsm", ValueError, r"obsm\['X_rep'\] contains 1 NaN")
def _(ctx):
    a = tiny()
    a.obsm["X_rep"] = np.random.default_rng(0).normal(size=(a.n_obs, 6))
    a.obsm["X_rep"][0, 0] = np.nan
    return _with(a, lambda a: gbumap.tl.fit(a, use_rep="X_rep", **FIT))


@bad("fit/duplicated_var_names", ValueError, r"duplicated name\(s\) \(gene1\).*var_names_make_unique")
def _(ctx):
    a = tiny()
    a.var_names = ["gene1" if j in (1, 2) else f"gene{j}" for j in range(a.n_vars)]
    return _with(a, lambda a: gbumap.tl.fit(a, **FIT))


@works("fit/backed_mode_reads_x_in_chunks")
def _(ctx):
    path = ctx.tmp / "backed.h5ad"
    tiny(sparse=True).write_h5ad(path)
    before = fingerprint(path)
    a = ad.read_h5ad(path, backed="r")
    gbumap.tl.fit(a, **FIT)
    memory = tiny(sparse=True)
    gbumap.tl.fit(memory, **FIT)
    np.testing.assert_array_equal(a.obsm["X_gbumap"], memory.obsm["X_gbumap"])
    exact(a)
    assert fingerprint(path) == before


@bad("est/dask_unknown_chunks", ValueError, r"unknown chunk sizes.*compute_chunk_sizes\(\)")
def _(ctx):
    import dask.array as da

    values = np.asarray(tiny().X)
    X = da.from_array(values, chunks=(40, -1))
    X = X[X[:, 0] >= 0]  # boolean row indexing: Dask no longer knows the chunk sizes (AnnData refuses it)
    return values, lambda: gbumap.GlassBoxUMAP(**FIT).fit(X)


@bad("fit/dask_chunks_too_large", ValueError, r"row chunks of up to 120 cells.*rechunk\(\(")
def _(ctx):
    import dask.array as da

    import gbumap._dask

    a = tiny()
    a.X = da.from_array(a.X, chunks=(-1, -1))
    original = gbumap._dask.available_memory
    gbumap._dask.available_memory = lambda: 64 * 1024  # a machine with 64 KiB free

    def run(a):
        try:
            gbumap.tl.fit(a, **FIT)
        finally:
            gbumap._dask.available_memory = original

    return _with(a, run)


@bad("fit/dask_nan", ValueError, r"X contains 1 NaN and 0 infinite")
def _(ctx):
    import dask.array as da

    a = tiny()
    values = a.X.copy()
    values[100, 3] = np.nan  # in the last chunk
    a.X = da.from_array(values, chunks=(50, -1))
    return _with(a, lambda a: gbumap.tl.fit(a, **FIT))


@bad("contributions/store_backed_read_only", ValueError, r"opened read-only \(backed='r'\).*backed='r\+'")
def _(ctx):
    path = ctx.tmp / "fitted.h5ad"
    ctx.fitted.write_h5ad(path)
    a = ad.read_h5ad(path, backed="r")
    return path, lambda: gbumap.tl.contributions(a, store=path, verbose=False)


@bad("contributions/store_failure_leaves_no_partial_array", ValueError, r"X contains 1 NaN")
def _(ctx):
    import dask.array as da
    import zarr

    store = ctx.tmp / "results.zarr"
    zarr.open_group(str(store), mode="w")
    a = ctx.fitted
    values = np.asarray(a.X).copy()
    values[110, 5] = np.nan  # the last chunk fails after the first ones were written
    a.X = da.from_array(values, chunks=(30, -1))
    del a.obsm["gbumap_jacobian"]

    def run():
        try:
            gbumap.tl.contributions(a, store=store, verbose=False)
        finally:
            assert "obsm" not in zarr.open_group(str(store), mode="r") or not list(
                zarr.open_group(str(store), mode="r")["obsm"].keys()
            ), "a partial array was left in the store"
            assert "gbumap_jacobian" not in a.obsm

    return a, run


@bad("contributions/store_not_a_store", ValueError, r"store must be a zarr directory.*\.h5ad")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.contributions(a, store=ctx.tmp / "results.txt", verbose=False))


@bad("fit/missing_layer", KeyError, r"layer 'lognorm' not found\. Available layer keys: 'counts'")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, layer="lognorm", **FIT))


@bad("fit/missing_use_rep", KeyError, r"obsm 'X_pca' not found\. Available obsm keys: 'X_other'")
def _(ctx):
    a = tiny()
    a.obsm["X_other"] = np.zeros((a.n_obs, 3))
    return _with(a, lambda a: gbumap.tl.fit(a, use_rep="X_pca", **FIT))


@bad("fit/missing_neighbors_key", KeyError, r"'neighbors' not found\. Available .* keys: 'my_nn'")
def _(ctx):
    a = tiny()
    a.uns["my_nn"] = {"connectivities_key": "my_nn_connectivities", "params": {}}
    a.obsp["my_nn_connectivities"] = sp.identity(a.n_obs, format="csr")
    return _with(a, lambda a: gbumap.tl.fit(a, neighbors_key="neighbors", **FIT))


@bad("fit/missing_mask_var", KeyError, r"var column 'highly_variable' not found")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, mask_var="highly_variable", **FIT))


@bad("fit/unknown_param", TypeError, r"Unknown parameter\(s\) n_epochs\. GlassBoxUMAP accepts: .*n_neighbors.*n_steps")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, n_epochs=5, **FIT))


@bad("fit/n_steps_0", ValueError, r"n_steps must be an integer >= 1; got 0")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, **{**FIT, "n_steps": 0}))


@bad("fit/negative_n_pcs", ValueError, r"n_pcs must be a non-negative integer")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, n_pcs=-3, **FIT))


@bad("fit/layer_and_use_rep", ValueError, r"either layer= or use_rep=, not both")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.fit(a, layer="counts", use_rep="X_pca", **FIT))


@bad("fit/not_anndata", TypeError, r"Expected an AnnData object; got ndarray")
def _(ctx):
    X = _X()
    return X, lambda: gbumap.tl.fit(X, **FIT)


@bad("glassbox_umap/one_cell_type", ValueError, r"single group among its cells \('A'\).*at least two groups")
def _(ctx):
    a = tiny()
    a.obs["one"] = pd.Categorical(["A"] * a.n_obs)
    return _with(a, lambda a: gbumap.tl.glassbox_umap(a, groupby="one", **FIT))


@bad("glassbox_umap/missing_groupby", KeyError, r"obs column 'celltype' not found\. Available .*: 'cell_type'")
def _(ctx):
    return _with(tiny(), lambda a: gbumap.tl.glassbox_umap(a, groupby="celltype", **FIT))


@works("fit/raw_counts_warn")
def _(ctx):
    a = tiny()
    a.X = np.random.default_rng(1).poisson(30, size=a.shape).astype(np.float32)
    with pytest.warns(UserWarning, match=r"looks like raw counts.*sc\.pp\.normalize_total.*sc\.pp\.log1p"):
        gbumap.tl.fit(a, **FIT)
    exact(a)  # a warning, not an error: the model is still fitted


@works("fit/negative_scaled_values_no_warning")
def _(ctx):
    import warnings

    a = tiny()
    X = np.asarray(a.X)
    a.X = ((X - X.mean(0)) / (X.std(0) + 1e-6)).astype(np.float32)  # like sc.pp.scale
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*raw counts.*")
        gbumap.tl.fit(a, **FIT)
    exact(a)


@works("fit/constant_and_all_zero_genes")
def _(ctx):
    a = tiny()
    a.X[:, 3] = 2.0
    a.X[:, 4] = 0.0
    gbumap.tl.fit(a, n_pcs=8, **FIT)
    exact(a)
    assert np.isfinite(a.uns["gbumap"]["projection"]["components"]).all()
    c = gbumap.get.contributions(a, genes=["gene3", "gene4"])
    assert np.all(c == 0.0)


def _fit_dtype_works(convert):
    def run(ctx):
        a = tiny()
        a.X = convert(a.X)
        before = _value_fp(a.X)
        gbumap.tl.fit(a, **FIT)
        exact(a)
        assert _value_fp(a.X) == before  # X keeps its dtype and format

    return run


works("fit/dtype_int32")(_fit_dtype_works(lambda X: np.round(X * 3).astype(np.int32)))
works("fit/dtype_float16")(_fit_dtype_works(lambda X: X.astype(np.float16)))
works("fit/dtype_float64")(_fit_dtype_works(lambda X: X.astype(np.float64)))
works("fit/sparse_csr")(_fit_dtype_works(sp.csr_matrix))
works("fit/sparse_csc")(_fit_dtype_works(sp.csc_matrix))


@works("fit/view")
def _(ctx):
    parent = tiny()
    before = snapshot(parent)
    view = parent[parent.obs["cell_type"] == "A"]
    assert view.is_view
    with pytest.warns(ad.ImplicitModificationWarning):
        gbumap.tl.fit(view, **FIT)
    assert not view.is_view and "X_gbumap" in view.obsm and view.n_obs == N_CELLS // 2
    exact(view)
    assert_unchanged(parent, before)


@works("fit/n_components_3_h5ad_round_trip")
def _(ctx):
    a = tiny()
    gbumap.tl.glassbox_umap(a, n_components=3, **FIT)
    assert a.obsm["X_gbumap"].shape == (N_CELLS, 3)
    path = ctx.tmp / "three.h5ad"
    a.write_h5ad(path)
    back = ad.read_h5ad(path)
    exact(back)
    model = gbumap.get.model(back)
    assert model.n_components == 3
    np.testing.assert_allclose(model.transform(back.X), back.obsm["X_gbumap"], atol=1e-5)
    assert gbumap.get.contributions(back, obs=np.arange(5)).shape == (5, 3, N_GENES)


# ---------------------------------------------------------------- tl.rank_features / tl.contributions
@bad("rank_features/one_cell_type", ValueError, r"single group among its cells \('T'\)")
def _(ctx):
    a = ctx.fitted
    a.obs["one"] = "T"
    return _with(a, lambda a: gbumap.tl.rank_features(a, "one"))


@bad("rank_features/missing_groupby", KeyError, r"obs column 'leiden' not found\. Available .*'cell_type'")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.rank_features(a, "leiden"))


@bad("rank_features/group_of_one_cell", ValueError, r"Groups \['B'\] have fewer than 2 cells")
def _(ctx):
    a = ctx.fitted
    a.obs["skewed"] = pd.Categorical(["A"] * (a.n_obs - 1) + ["B"])
    return _with(a, lambda a: gbumap.tl.rank_features(a, "skewed"))


@bad("rank_features/bad_reduction", ValueError, r"reduction must be 'l2', 'normed_l2' or an axis index")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.rank_features(a, "cell_type", reduction="max"))


@bad("contributions/missing_model_key", KeyError, r"No gbumap model under uns\['umap2'\]\. .*'gbumap'")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.contributions(a, key="umap2"))


@bad("contributions/top_genes_0", ValueError, r"top_genes must be a positive integer; got 0")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.contributions(a, top_genes=0))


@bad("contributions/batch_size_0", ValueError, r"batch_size must be a positive integer; got 0")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.tl.contributions(a, batch_size=0))


# ---------------------------------------------------------------- tl.transform
@bad("transform/var_names_mismatch", KeyError, r"40 of the model's 40 genes are missing from the query: gene0, gene1")
def _(ctx):
    q = tiny(seed=1)
    q.var_names = [f"Gene{j}" for j in range(q.n_vars)]
    return _with(q, lambda q: gbumap.tl.transform(q, ctx.fitted))


@bad("transform/some_genes_missing", KeyError, r"2 of the model's 40 genes are missing.*fill_missing='baseline'")
def _(ctx):
    q = tiny(seed=1)[:, 2:].copy()
    return _with(q, lambda q: gbumap.tl.transform(q, ctx.fitted))


@bad("transform/duplicated_query_var_names", ValueError, r"query's var_names contain .*var_names_make_unique")
def _(ctx):
    q = tiny(seed=1)
    q.var_names = ["gene0"] * 2 + [f"gene{j}" for j in range(2, q.n_vars)]
    return _with(q, lambda q: gbumap.tl.transform(q, ctx.fitted))


@bad("transform/nan_in_query", ValueError, r"X contains 1 NaN")
def _(ctx):
    q = tiny(seed=1)
    q.X[0, 0] = np.nan
    return _with(q, lambda q: gbumap.tl.transform(q, ctx.fitted))


@bad("transform/empty_query", ValueError, r"The query AnnData is empty \(0 cells × 40 genes\)")
def _(ctx):
    return _with(tiny(seed=1)[:0].copy(), lambda q: gbumap.tl.transform(q, ctx.fitted))


@bad("transform/bad_fill_missing", ValueError, r"fill_missing must be None, 'baseline', 'zero' or 'impute'")
def _(ctx):
    return _with(tiny(seed=1), lambda q: gbumap.tl.transform(q, ctx.fitted, fill_missing="mean"))


@bad("transform/missing_reference_key", KeyError, r"No gbumap model under uns\['ref'\]")
def _(ctx):
    return _with(tiny(seed=1), lambda q: gbumap.tl.transform(q, ctx.fitted, key="ref"))


@works("transform/permuted_and_extra_genes")
def _(ctx):
    q = tiny(seed=1)
    order = np.random.default_rng(0).permutation(q.n_vars)
    shuffled = ad.concat([q[:, order], ad.AnnData(np.ones((q.n_obs, 2), np.float32), obs=q.obs[[]],
                          var=pd.DataFrame(index=["extra1", "extra2"]))], axis=1)
    gbumap.tl.transform(shuffled, ctx.fitted)
    gbumap.tl.transform(q, ctx.fitted)
    np.testing.assert_array_equal(shuffled.obsm["X_gbumap"], q.obsm["X_gbumap"])


# ---------------------------------------------------------------- get.*
@bad(
    "get/model_missing_key",
    KeyError,
    r"No gbumap model under uns\['gbumap2'\]\. gbumap models in this AnnData: 'gbumap'",
)
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.model(a, key="gbumap2"))


@bad("get/model_unknown_format_version", RegistryError, r"registry format 7; this gbumap reads formats 1, 2, 3")
def _(ctx):
    a = ctx.fitted
    a.uns["gbumap"] = dict(a.uns["gbumap"], format_version=7)
    return _with(a, lambda a: gbumap.get.model(a))


@bad("get/contributions_unknown_gene", KeyError, r"Not among the model's 40 features: MT-CO1")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.contributions(a, genes=["gene1", "MT-CO1"]))


@bad("get/contributions_obs_out_of_range", IndexError, r"obs indices out of range for 120 cells")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.contributions(a, obs=[0, 500]))


@bad("get/contributions_bad_reduction", ValueError, r"reduction must be None, 'l2', 'normed_l2' or an axis")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.contributions(a, reduction="abs"))


@bad("get/contributions_axis_out_of_range", ValueError, r"Axis 2 does not exist; the embedding has 2 axes")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.contributions(a, reduction=2))


@bad("get/contributions_batch_size_0", ValueError, r"batch_size must be a positive integer; got 0")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.get.contributions(a, batch_size=0))


@bad("get/contributions_stale_jacobian", ValueError, r"has shape \(120, 2, 3\), expected \(120, 2, 40\)")
def _(ctx):
    a = ctx.fitted
    a.obsm["gbumap_jacobian"] = np.zeros((a.n_obs, 2, 3), np.float32)
    return _with(a, lambda a: gbumap.get.contributions(a))


@bad("get/contributions_nan_after_fit", ValueError, r"X contains 1 NaN")
def _(ctx):
    a = ctx.fitted
    a.X[7, 7] = np.nan
    return _with(a, lambda a: gbumap.get.contributions(a))


@works("get/contributions_backed")
def _(ctx):
    path = ctx.tmp / "fitted.h5ad"
    ctx.fitted.write_h5ad(path)
    a = ad.read_h5ad(path, backed="r")
    np.testing.assert_array_equal(
        gbumap.get.contributions(a, genes="gene1"), gbumap.get.contributions(ctx.fitted, genes="gene1")
    )


@works("get/contributions_gene_subset_without_pca")
def _(ctx):
    a = ctx.fitted  # 40 genes: no PCA folded in, the Jacobian is per gene
    assert "components" not in a.uns["gbumap"]["projection"]
    del a.obsm["gbumap_jacobian"]  # computed from the model, then from stored Jacobians below
    full = gbumap.get.contributions(a)
    np.testing.assert_array_equal(gbumap.get.contributions(a, genes=["gene3", "gene0"]), full[:, :, [3, 0]])
    gbumap.tl.contributions(a)
    np.testing.assert_array_equal(gbumap.get.contributions(a, genes=["gene3", "gene0"]), full[:, :, [3, 0]])


@bad("get/reconstruction_error_missing_embedding", KeyError, r"obsm\['X_gbumap'\] not found")
def _(ctx):
    a = ctx.fitted
    del a.obsm["X_gbumap"]
    return _with(a, lambda a: gbumap.get.reconstruction_error(a))


# ---------------------------------------------------------------- pl.*
@bad("pl/top_features_missing_key", KeyError, r"No gbumap model under uns\['other'\]")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.pl.top_features(a, key="other", show=False))


@bad("pl/top_features_n_top_0", ValueError, r"n_top must be a positive integer")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.pl.top_features(a, n_top=0, show=False))


@bad("pl/contribution_unknown_gene", KeyError, r"nogene")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.pl.contribution(a, "nogene", show=False))


@bad("pl/rank_features_missing_groupby", KeyError, r"obs column 'leiden' not found")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.pl.rank_features(a, "leiden", show=False))


@bad("pl/reconstruction_missing_key", KeyError, r"X_other")
def _(ctx):
    return _with(ctx.fitted, lambda a: gbumap.pl.reconstruction(a, key="other", show=False))


# ---------------------------------------------------------------- CLI
def _h5ad(ctx, adata=None, name="in.h5ad") -> Path:
    path = ctx.tmp / name
    (adata if adata is not None else tiny()).write_h5ad(path)
    return path


@cli("cli/input_missing", r"input file '.*nothere\.h5ad' does not exist")
def _(ctx):
    path = ctx.tmp / "nothere.h5ad"
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad")]


@cli("cli/input_not_h5ad", r"cannot read '.*notes\.h5ad' as an \.h5ad file")
def _(ctx):
    path = ctx.tmp / "notes.h5ad"
    path.write_text("not an HDF5 file\n")
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad")]


@cli("cli/missing_layer", r"error: layer 'lognorm' not found\. Available layer keys: 'counts'")
def _(ctx):
    path = _h5ad(ctx)
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad"), "--layer", "lognorm"]


@cli("cli/missing_groupby", r"error: obs column 'leiden' not found")
def _(ctx):
    path = _h5ad(ctx)
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad"), "--groupby", "leiden"]


@cli("cli/n_steps_0", r"n_steps must be an integer >= 1; got 0")
def _(ctx):
    path = _h5ad(ctx)
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad"), "--n-steps", "0"]


@cli("cli/duplicated_var_names", r"var_names_make_unique")
def _(ctx):
    a = tiny()
    a.var_names = ["g"] * a.n_vars
    path = _h5ad(ctx, a)
    return path, [str(path), "-o", str(ctx.tmp / "out.h5ad")]


@cli("cli/output_folder_missing", r"folder of the output file .* does not exist")
def _(ctx):
    path = _h5ad(ctx)
    return path, [str(path), "-o", str(ctx.tmp / "no" / "such" / "out.h5ad")]


@cli("cli/output_is_input", r"output file must differ from the input file")
def _(ctx):
    path = _h5ad(ctx)
    return path, [str(path), "-o", str(path)]


# ---------------------------------------------------------------- the test
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, fitted_module, tmp_path, capsys):
    import matplotlib.pyplot as plt

    case = CASES[name]
    ctx = Ctx(fitted=fitted_module.copy(), tmp=tmp_path)
    try:
        if isinstance(case, Works):
            case.run(ctx)
        elif isinstance(case, Bad):
            subject, action = case.make(ctx)
            before = fingerprint(subject)
            with pytest.raises(case.exc, match=case.match):
                action()
            check_unchanged(subject, before)
        else:
            from gbumap.cli import main

            path, argv = case.make(ctx)
            before = fingerprint(path)
            capsys.readouterr()
            assert main(["fit", *argv, "--quiet"]) == 2
            err = capsys.readouterr().err
            assert err.startswith("gbumap fit: error: ") and err.count("\n") == 1, err
            assert re.search(case.match, err), err
            assert fingerprint(path) == before
            assert not (tmp_path / "out.h5ad").exists()
    finally:
        plt.close("all")


def test_case_count():
    """The matrix covers every entry point with at least 40 cases."""
    assert len(CASES) >= 40
    prefixes = {name.split("/")[0] for name in CASES}
    assert {"est", "fit", "rank_features", "contributions", "transform", "get", "pl", "cli"} <= prefixes
