"""Data that never has to fit in memory: Dask input, backed files, chunked results, simulations on disk.

On real data (pbmc68k_reduced's log-normalised expression, CSR) a model fitted
from a lazily read ``.h5ad`` equals, bit for bit, the model fitted in memory;
contributions computed chunk by chunk are exact, also after an ``.h5ad``
round trip, with and without PCA.
"""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import gbumap
from gbumap._dask import is_dask_array

da = pytest.importorskip("dask.array")
read_elem_lazy = ad.experimental.read_elem_lazy

FIT = dict(n_steps=120, verbose=False)


@pytest.fixture(scope="module")
def pbmc_file(tmp_path_factory, pbmc_log_raw):
    adata = pbmc_log_raw.copy()
    adata.X = sp.csr_matrix(adata.X)
    path = tmp_path_factory.mktemp("dask") / "pbmc.h5ad"
    adata.write_h5ad(path)
    return path


def lazy_adata(path, rows: int = 128) -> ad.AnnData:
    """The recipe of the scale page: X as a Dask array over the file, annotations in memory."""
    handle = h5py.File(path, "r")
    return ad.AnnData(
        X=read_elem_lazy(handle["X"], chunks=(rows, -1)),
        obs=ad.io.read_elem(handle["obs"]),
        var=ad.io.read_elem(handle["var"]),
    )


@pytest.fixture(scope="module")
def fitted_pair(pbmc_file):
    memory = ad.read_h5ad(pbmc_file)
    gbumap.tl.fit(memory, **FIT)
    lazy = lazy_adata(pbmc_file)
    gbumap.tl.fit(lazy, **FIT)
    return memory, lazy


def test_fit_from_disk_equals_fit_in_memory(fitted_pair):
    memory, lazy = fitted_pair
    assert is_dask_array(lazy.X)
    np.testing.assert_array_equal(lazy.obsm["X_gbumap"], memory.obsm["X_gbumap"])
    # float64 sums over differently chunked rows: the float32 loadings agree to the last bit or one ulp
    baselines = [a.uns["gbumap"]["projection"]["baseline"] for a in (lazy, memory)]
    np.testing.assert_array_equal(*baselines)
    np.testing.assert_allclose(
        lazy.uns["gbumap"]["projection"]["components"], memory.uns["gbumap"]["projection"]["components"], rtol=2e-7,
        atol=1e-11,
    )
    assert lazy.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5


def test_chunking_does_not_change_the_model(pbmc_file, fitted_pair):
    memory, _ = fitted_pair
    other = lazy_adata(pbmc_file, rows=300)  # chunks of 300, 300 and 100 cells
    gbumap.tl.fit(other, **FIT)
    np.testing.assert_array_equal(other.obsm["X_gbumap"], memory.obsm["X_gbumap"])


def test_atlas_scale_blocks_give_one_model_for_any_chunking(pbmc_file, monkeypatch):
    """Above LARGE_ROWS rows the passes sum over larger fixed blocks and the QR runs in blocks of rows.

    Shrunk here so that pbmc68k_reduced's 700 cells are "large": memory and
    two chunkings from disk still fit the same model bit for bit, and the
    loadings agree with the small-data rule's to rounding.
    """
    import gbumap._dask as gdask
    import gbumap._pca as gpca

    small = ad.read_h5ad(pbmc_file)
    gbumap.tl.fit(small, **FIT)
    monkeypatch.setattr(gdask, "LARGE_ROWS", 500)
    monkeypatch.setattr(gdask, "LARGE_SUM_BLOCK_ROWS", 256)
    monkeypatch.setattr(gpca, "QR_SINGLE_MAX_ROWS", 500)
    monkeypatch.setattr(gpca, "QR_BLOCK_ROWS", 300)
    assert gdask.sum_block_rows(700) == 256 and gdask.sum_block_rows(500) == gdask.SUM_BLOCK_ROWS
    fits = [ad.read_h5ad(pbmc_file), lazy_adata(pbmc_file, rows=128), lazy_adata(pbmc_file, rows=300)]
    for adata in fits:
        gbumap.tl.fit(adata, **FIT)
    for other in fits[1:]:
        np.testing.assert_array_equal(other.obsm["X_gbumap"], fits[0].obsm["X_gbumap"])
        for field in ("baseline", "components"):
            projections = [a.uns["gbumap"]["projection"][field] for a in (other, fits[0])]
            np.testing.assert_array_equal(*projections)
    np.testing.assert_allclose(
        fits[0].uns["gbumap"]["projection"]["components"], small.uns["gbumap"]["projection"]["components"],
        rtol=1e-5, atol=1e-7,
    )


def test_pca_matches_an_exact_svd(pbmc_file):
    from gbumap._pca import randomized_pca

    X = ad.read_h5ad(pbmc_file).X
    mean = np.asarray(X.toarray().mean(axis=0))
    components, variance = randomized_pca(read_elem_lazy(h5py.File(pbmc_file)["X"], chunks=(100, -1)), 20, center=mean)
    _, S, Vt = np.linalg.svd(X.toarray() - mean, full_matrices=False)
    # a randomised SVD: the leading axes (well separated on these data) to 1e-3
    np.testing.assert_allclose(variance[:6], (S[:6] ** 2) / (X.shape[0] - 1), rtol=1e-3)
    cosines = np.linalg.svd(components[:5] @ Vt[:5].T, compute_uv=False)  # principal angles
    assert cosines.min() > 0.999


def test_chunked_contributions_are_exact_and_survive_h5ad(tmp_path, fitted_pair):
    memory, lazy = fitted_pair
    lazy = lazy.copy() if not lazy.isbacked else lazy
    gbumap.tl.contributions(memory, verbose=False)
    store = tmp_path / "results.zarr"
    gbumap.tl.contributions(lazy, store=store, verbose=False)
    jac = lazy.obsm["gbumap_jacobian"]
    assert is_dask_array(jac)  # read back from the store, not held in memory
    np.testing.assert_allclose(np.asarray(jac), memory.obsm["gbumap_jacobian"], rtol=1e-5, atol=1e-7)
    assert lazy.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    assert ad.io.read_elem(__import__("zarr").open_group(str(store))["obsm/gbumap_jacobian"]).shape == jac.shape

    contrib = gbumap.get.contributions(lazy)
    emb = lazy.obsm["X_gbumap"]
    assert np.abs(contrib.sum(-1) - emb).max() < 1e-5 * np.abs(emb).max()

    path = tmp_path / "written.h5ad"
    lazy.write_h5ad(path)  # the Dask arrays are written chunk by chunk
    back = ad.read_h5ad(path)
    assert isinstance(back.obsm["gbumap_jacobian"], np.ndarray)
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5


def test_chunked_contributions_without_pca(pbmc_file):
    lazy = lazy_adata(pbmc_file, rows=200)
    genes = np.zeros(lazy.n_vars, dtype=bool)
    genes[:40] = True
    gbumap.tl.fit(lazy, mask_var=genes, n_pcs=0, **FIT)
    gbumap.tl.contributions(lazy, verbose=False)  # into memory: Jacobians per gene
    assert lazy.obsm["gbumap_jacobian"].shape == (lazy.n_obs, 2, 40)
    assert lazy.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    contrib = gbumap.get.contributions(lazy)
    assert np.abs(contrib.sum(-1) - lazy.obsm["X_gbumap"]).max() < 1e-5 * np.abs(lazy.obsm["X_gbumap"]).max()


def test_rankings_and_transform_read_lazy_input(pbmc_file, fitted_pair):
    memory, lazy = fitted_pair
    gbumap.tl.rank_features(memory, groupby="bulk_labels")
    gbumap.tl.rank_features(lazy, groupby="bulk_labels")
    for group in ("CD14+ Monocyte", "CD56+ NK"):
        np.testing.assert_array_equal(
            gbumap.get.rank_features_df(lazy, group)["names"].head(20),
            gbumap.get.rank_features_df(memory, group)["names"].head(20),
        )
    query = lazy_adata(pbmc_file, rows=256)[:300].copy()
    assert is_dask_array(query.X)
    gbumap.tl.transform(query, lazy)
    np.testing.assert_allclose(query.obsm["X_gbumap"], memory.obsm["X_gbumap"][:300], rtol=1e-5, atol=1e-5)


def test_estimator_dask_in_dask_out():
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float32)
    model = gbumap.GlassBoxUMAP(n_steps=100, pca_components=20, random_state=0).fit(X)
    lazy = da.from_array(X, chunks=(500, -1))
    emb = model.transform(lazy)
    assert is_dask_array(emb)
    # float32 BLAS rows depend on how many rows a product takes at once (500 here, all in memory):
    # equal to float32 rounding of the map's scale
    scale = float(np.abs(model.embedding_).max())
    np.testing.assert_allclose(emb.compute(), model.transform(X), rtol=1e-6, atol=1e-6 * scale)
    contrib = model.compute_contributions(lazy)
    assert is_dask_array(contrib) and contrib.shape == (len(X), 2, 64)
    np.testing.assert_allclose(contrib.sum(-1).compute(), emb.compute(), rtol=1e-4, atol=1e-4)
    jac = model.input_jacobian(lazy)
    np.testing.assert_allclose(jac.compute(), model.input_jacobian(X), rtol=1e-6, atol=1e-7)
    assert model.reconstruction_error(lazy)["max_rel"] < 1e-5
    # fitting on the Dask array gives the same model as on the array
    again = gbumap.GlassBoxUMAP(n_steps=100, pca_components=20, random_state=0).fit(lazy)
    np.testing.assert_array_equal(again.embedding_, model.embedding_)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_write_simulated_equals_simulate(tmp_path, suffix):
    from gbumap.datasets import simulate, write_simulated

    ref = simulate(3000, 1000, random_state=4)
    path = write_simulated(tmp_path / f"sim{suffix}", 3000, 1000, chunk_size=1100, random_state=4, counts=True)
    back = ad.read_h5ad(path) if suffix == ".h5ad" else ad.read_zarr(path)
    assert (back.X != ref.X).nnz == 0 and (back.layers["counts"] != ref.layers["counts"]).nnz == 0
    assert back.obs.equals(ref.obs) and back.var.equals(ref.var)
    assert back.uns["simulation"]["params"]["n_cells"] == 3000


def test_simulate_first_cell_continues_the_simulation():
    from gbumap.datasets import simulate

    whole = simulate(3072, 1000, random_state=2)
    tail = simulate(1024, 1000, random_state=2, first_cell=2048)
    assert (tail.X != whole.X[2048:]).nnz == 0
    assert list(tail.obs_names[:1]) == ["cell_2048"]
    with pytest.raises(ValueError, match="multiple of 1024"):
        simulate(100, 1000, first_cell=100)


def test_fit_from_a_zarr_store(tmp_path):
    from gbumap.datasets import write_simulated

    path = write_simulated(tmp_path / "sim.zarr", 2500, 1000, chunk_size=1024, random_state=1)
    import zarr

    group = zarr.open_group(str(path), mode="r")
    lazy = ad.AnnData(X=read_elem_lazy(group["X"], chunks=(1024, -1)), obs=ad.io.read_elem(group["obs"]),
                      var=ad.io.read_elem(group["var"]))
    gbumap.tl.fit(lazy, **FIT)
    memory = ad.read_zarr(path)
    gbumap.tl.fit(memory, **FIT)
    np.testing.assert_array_equal(lazy.obsm["X_gbumap"], memory.obsm["X_gbumap"])


def test_glassbox_umap_on_a_backed_file_writes_into_it(tmp_path, pbmc_file):
    import shutil

    path = tmp_path / "atlas.h5ad"
    shutil.copy(pbmc_file, path)
    backed = ad.read_h5ad(path, backed="r+")
    gbumap.tl.glassbox_umap(backed, groupby="bulk_labels", store=path, **FIT)
    assert backed.isbacked and is_dask_array(backed.obsm["gbumap_jacobian"])
    assert backed.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    assert "rank_features_gbumap" in backed.uns
    with h5py.File(path, "r") as f:  # the Jacobians went into the file itself
        assert f["obsm/gbumap_jacobian"].shape == (backed.n_obs, 2, 50)


def test_rank_features_reads_each_lazy_batch_once(fitted_pair, monkeypatch):
    import gbumap._view as view_module

    memory, lazy = fitted_pair
    gbumap.tl.rank_features(memory, groupby="bulk_labels", key_added="ranked")
    reads = []
    real = view_module.feature_matrix

    def counting(adata, *args, **kwargs):
        reads.append(kwargs.get("rows") is not None)
        return real(adata, *args, **kwargs)

    monkeypatch.setattr(view_module, "feature_matrix", counting)
    gbumap.tl.rank_features(lazy, groupby="bulk_labels", key_added="ranked", batch_size=256)
    assert reads == [True] * 3  # 700 cells in batches of 256: three reads, one per batch
    for field in ("scores", "pct_nz_group", "mean_expression", "mean_contribution"):
        for group in ("CD14+ Monocyte", "CD56+ NK", "Dendritic"):
            np.testing.assert_allclose(
                lazy.uns["ranked"][field][group], memory.uns["ranked"][field][group], rtol=1e-5, atol=1e-7
            )


def test_stability_on_lazy_input_equals_in_memory(fitted_pair):
    memory, lazy = fitted_pair
    results = []
    for adata in (memory, lazy):
        out = gbumap.tl.stability(adata, 2, groupby="bulk_labels", n_top=10, random_state=7, verbose=False, copy=True)
        results.append(out)
    assert is_dask_array(results[1].X)  # never loaded whole
    np.testing.assert_allclose(results[1].obs["stability_gbumap_spread"], results[0].obs["stability_gbumap_spread"],
                               rtol=1e-5, atol=1e-6)
    for group in ("CD14+ Monocyte", "CD56+ NK"):
        np.testing.assert_array_equal(results[1].uns["stability_gbumap"]["names"][group],
                                      results[0].uns["stability_gbumap"]["names"][group])


def test_interaction_modules_on_lazy_input_equal_in_memory(pbmc_file, pbmc_log_raw):
    memory = ad.read_h5ad(pbmc_file)
    gbumap.tl.fit(memory, encoder="bilinear", **FIT)
    lazy = lazy_adata(pbmc_file, rows=200)
    lazy.uns["gbumap"] = memory.uns["gbumap"]  # the same model, over the lazily read file
    gbumap.tl.interaction_modules(memory, 4)
    gbumap.tl.interaction_modules(lazy, 4, batch_size=150)
    assert is_dask_array(lazy.X)
    for name in ("axis_1", "axis_2", "l2"):
        np.testing.assert_array_equal(lazy.obsm[f"modules_gbumap_{name}"], memory.obsm[f"modules_gbumap_{name}"])


def test_dotplot_reads_only_the_genes_it_shows(fitted_pair, monkeypatch):
    import scanpy as sc

    memory, lazy = fitted_pair
    shells = []
    real = sc.pl.rank_genes_groups_dotplot

    def capture(adata, *args, **kwargs):
        shells.append(adata)
        return real(adata, *args, **kwargs)

    monkeypatch.setattr(sc.pl, "rank_genes_groups_dotplot", capture)
    for adata in (memory, lazy):
        gbumap.tl.rank_features(adata, groupby="bulk_labels")
        gbumap.pl.rank_features(adata, "bulk_labels", n_genes=3, kind="dotplot", show=False)
    from_memory, from_disk = shells
    assert list(from_disk.var_names) == list(from_memory.var_names) and from_disk.n_vars <= 3 * 10
    assert not is_dask_array(from_disk.X)
    np.testing.assert_array_equal(np.asarray(from_disk.X.todense()), np.asarray(from_memory.X.todense()))


def test_quality_of_a_lazy_x_never_loads_it_whole(fitted_pair, monkeypatch):
    """tl.quality on a lazy X without X_pca: a PCA over the row chunks, never the matrix in memory."""
    memory, lazy = fitted_pair
    lazy = lazy.copy()
    assert "X_pca" not in lazy.obsm and is_dask_array(lazy.X)

    def whole(*args, **kwargs):
        raise AssertionError("the lazy X was converted to one in-memory array")

    monkeypatch.setattr(type(lazy.X), "__array__", whole)
    gbumap.tl.quality(lazy, basis="gbumap", groupby="bulk_labels")
    block = lazy.uns["gbumap_quality"]
    assert "chunk by chunk" in block["params"]["use_rep"]
    with pytest.raises(ValueError, match="would load the lazy X"):
        gbumap.tl.quality(lazy, basis="gbumap", use_rep="X")
    monkeypatch.undo()
    # the same map scored against scanpy's PCA of the matrix in memory: figures of the same size
    reference = memory.copy()
    del reference.obsm["X_pca"]
    gbumap.tl.quality(reference, basis="gbumap", groupby="bulk_labels")
    ours, theirs = (gbumap.get.quality(a).loc["X_gbumap"] for a in (lazy, reference))
    assert abs(ours["knn_preservation"] - theirs["knn_preservation"]) < 0.05
    assert ours["label_accuracy"] == pytest.approx(theirs["label_accuracy"], abs=1e-12)


def test_quality_of_a_backed_file_reads_it_in_chunks(tmp_path, fitted_pair):
    """A backed='r' file without X_pca: the same chunked PCA as a lazy X (it went to sc.pp.pca on the whole X)."""
    memory, lazy = fitted_pair
    written = memory.copy()
    written.obsm.pop("X_pca", None)
    written.write_h5ad(tmp_path / "fitted.h5ad")
    backed = ad.read_h5ad(tmp_path / "fitted.h5ad", backed="r")
    gbumap.tl.quality(backed, basis="gbumap", groupby="bulk_labels")
    assert backed.isbacked and "chunk by chunk" in backed.uns["gbumap_quality"]["params"]["use_rep"]
    reference = lazy.copy()
    reference.obsm["X_gbumap"] = memory.obsm["X_gbumap"]
    gbumap.tl.quality(reference, basis="gbumap", groupby="bulk_labels")
    ours, theirs = (gbumap.get.quality(a).loc["X_gbumap"] for a in (backed, reference))
    # the PCA's sums run over fixed blocks, so only a product's last bits may differ with the chunking
    assert ours["knn_preservation"] == pytest.approx(theirs["knn_preservation"], abs=2e-3)
    assert ours["label_accuracy"] == pytest.approx(theirs["label_accuracy"], abs=1e-12)
    backed.file.close()
