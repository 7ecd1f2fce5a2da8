"""The Dask passes under a real cluster: a process ``LocalCluster`` with 2 workers of one thread each.

Every chunked pass (means, PCA, projection, Jacobians, transform, the writes
of ``store=``) runs on worker processes here, whose memory is not the
caller's: results must come back to the caller (or be written by the
workers into a zarr store), never into copies of the caller's arrays.
A fit on the cluster gives the same model as a fit in memory, bit for bit.
"""

from __future__ import annotations

import contextlib

import anndata as ad
import h5py
import numpy as np
import pytest

import gbumap
from gbumap._dask import is_dask_array, scheduler_kind

distributed = pytest.importorskip("distributed")
read_elem_lazy = ad.experimental.read_elem_lazy

FIT = dict(n_steps=120, verbose=False)
N_CELLS, N_GENES, ROWS = 2048, 1000, 512  # 4 row chunks: both workers take some


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    from gbumap.datasets import write_simulated

    return write_simulated(
        tmp_path_factory.mktemp("cluster") / "sim.h5ad", N_CELLS, N_GENES, random_state=3, n_batches=2
    )


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="2GiB"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def lazy_adata(path, rows: int = ROWS) -> ad.AnnData:
    handle = h5py.File(path, "r")
    return ad.AnnData(
        X=read_elem_lazy(handle["X"], chunks=(rows, -1)),
        obs=ad.io.read_elem(handle["obs"]),
        var=ad.io.read_elem(handle["var"]),
    )


@pytest.fixture(scope="module")
def fits(sim_file, client):
    """The same data fitted in memory and from disk on threads, and from disk on the cluster."""
    with threads():
        memory = ad.read_h5ad(sim_file)
        gbumap.tl.fit(memory, **FIT)
        gbumap.tl.contributions(memory, verbose=False)
        threaded = lazy_adata(sim_file)
        gbumap.tl.fit(threaded, **FIT)
    on_cluster = lazy_adata(sim_file)
    assert scheduler_kind() == "distributed"
    gbumap.tl.fit(on_cluster, **FIT)
    return memory, on_cluster, threaded


def model_state(adata) -> dict:
    """Everything a fit decides: projection, input scale, encoder weights, and the embedding."""
    from gbumap._view import model_view

    est = model_view(adata).estimator
    state = {"baseline": est.baseline_, "components": est.components_, "input_norm": np.float64(est.input_norm_offset_),
             "embedding": np.asarray(adata.obsm["X_gbumap"])}
    state.update({f"encoder.{k}": v.detach().cpu().numpy() for k, v in est.encoder_.state_dict().items()})
    return state


@contextlib.contextmanager
def threads():
    """The threaded scheduler for a block, while the cluster's client stays the default elsewhere."""
    import dask

    with dask.config.set(scheduler="threads"):
        assert scheduler_kind() == "shared"
        yield


def test_fit_on_a_cluster_equals_the_threaded_fit_bitwise(fits):
    _, on_cluster, threaded = fits  # the same chunks: the same sums in the same order, wherever they ran
    cluster_state, threaded_state = model_state(on_cluster), model_state(threaded)
    assert cluster_state.keys() == threaded_state.keys()
    for name, value in cluster_state.items():
        np.testing.assert_array_equal(value, threaded_state[name], err_msg=name)


def test_fit_on_a_cluster_equals_fit_in_memory(fits):
    memory, on_cluster, _ = fits
    assert is_dask_array(on_cluster.X)
    m, c = memory.uns["gbumap"], on_cluster.uns["gbumap"]
    np.testing.assert_array_equal(c["projection"]["baseline"], m["projection"]["baseline"])
    # the passes run over the same fixed blocks of rows whatever the chunks (512 here, 8,192 in memory)
    np.testing.assert_array_equal(c["projection"]["components"], m["projection"]["components"])
    np.testing.assert_array_equal(on_cluster.obsm["X_gbumap"], memory.obsm["X_gbumap"])
    assert np.isfinite(on_cluster.obsm["X_gbumap"]).all()
    assert c["reconstruction_error"]["max_rel"] < 1e-5


@pytest.mark.parametrize("suffix", [".zarr", ".h5ad"])
def test_contributions_into_a_store_on_a_cluster(tmp_path, fits, suffix):
    memory, on_cluster, _ = fits
    adata = on_cluster.copy()
    store = tmp_path / f"results{suffix}"
    gbumap.tl.contributions(adata, store=store, verbose=False)
    jac = adata.obsm["gbumap_jacobian"]
    assert is_dask_array(jac)  # read back from the store
    with threads():
        written = np.asarray(jac)
    np.testing.assert_array_equal(written, memory.obsm["gbumap_jacobian"])
    assert adata.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    if suffix == ".zarr":
        import zarr

        assert not any(k.startswith(".") for k in zarr.open_group(str(store))["obsm"].keys())  # no partial left
    else:
        with h5py.File(store, "r") as f:
            assert list(f["obsm"].keys()) == ["gbumap_jacobian"]


def test_contributions_in_memory_and_transform_on_a_cluster(sim_file, fits):
    memory, on_cluster, _ = fits
    adata = on_cluster.copy()
    gbumap.tl.contributions(adata, verbose=False)  # gathered into the caller's memory
    assert isinstance(adata.obsm["gbumap_jacobian"], np.ndarray)
    np.testing.assert_array_equal(adata.obsm["gbumap_jacobian"], memory.obsm["gbumap_jacobian"])

    query = lazy_adata(sim_file, rows=300)[:900].copy()  # 3 chunks of 300 cells
    assert is_dask_array(query.X)
    gbumap.tl.transform(query, on_cluster)
    with threads():  # the same chunks on the threaded scheduler
        threaded = gbumap.tl.transform(lazy_adata(sim_file, rows=300)[:900].copy(), on_cluster, copy=True)
    for key in ("X_gbumap", "gbumap_jacobian"):
        np.testing.assert_array_equal(query.obsm[key], threaded.obsm[key])
    # against the training embedding (another path: float32 inputs, other batches): float rounding
    np.testing.assert_allclose(query.obsm["X_gbumap"], memory.obsm["X_gbumap"][:900], rtol=1e-5, atol=1e-5)


def test_estimator_passes_on_a_cluster(fits):
    memory, _, _ = fits
    from gbumap._view import model_view

    model = model_view(memory).estimator
    X = da_from(memory.X, 500)
    emb = model.transform(X).compute()
    with threads():
        expected = model.transform(memory.X)
    np.testing.assert_array_equal(emb, expected)
    assert model.reconstruction_error(X)["max_rel"] < 1e-5


def da_from(X, rows):
    import dask.array as da

    return da.from_array(X, chunks=(rows, -1), asarray=False)


def test_a_non_finite_projection_is_reported_by_the_projection_pass(client):
    import dask.array as da

    X = np.random.default_rng(0).normal(size=(600, 30)).astype(np.float32) ** 2
    loadings = np.linalg.qr(np.random.default_rng(1).normal(size=(30, 3)))[0].T.astype(np.float32)
    loadings[1] *= 1e38  # finite, but the projection overflows float32 (in the workers)
    est = gbumap.GlassBoxUMAP(n_steps=5)
    with pytest.raises(ValueError, match="projection pass of fit") as err:
        est.fit(da.from_array(X, chunks=(200, -1)), components=loadings)
    message = str(err.value)
    assert "homogeneous" not in message and "of 600 cell(s)" in message and "components=" in message
    model = gbumap.GlassBoxUMAP(n_steps=5).fit(X, components=loadings / np.array([[1], [1e38], [1]], np.float32))
    # a model whose loadings overflow: transform says so, in the chunk (on a worker) where it happens
    model._set_projection(30, model.baseline_, loadings, None, model.input_norm_offset_)
    with pytest.raises(ValueError, match="projection on the model's loadings"):
        model.transform(da.from_array(X, chunks=(200, -1))).compute()


def test_backed_files_on_a_cluster(tmp_path, sim_file, fits):
    memory, _, _ = fits
    backed = ad.read_h5ad(sim_file, backed="r")  # workers open the file themselves, read-only
    store = tmp_path / "results.h5ad"
    gbumap.tl.glassbox_umap(backed, groupby="cell_type", store=store, **FIT)
    np.testing.assert_array_equal(backed.obsm["X_gbumap"], memory.obsm["X_gbumap"])
    with threads():
        np.testing.assert_array_equal(np.asarray(backed.obsm["gbumap_jacobian"]), memory.obsm["gbumap_jacobian"])
    assert "rank_features_gbumap" in backed.uns
    backed.file.close()

    import shutil

    path = tmp_path / "atlas.h5ad"
    shutil.copy(sim_file, path)
    writable = ad.read_h5ad(path, backed="r+")  # HDF5 locks it for this process: workers could not read it
    with pytest.raises(ValueError, match="backed='r'"):
        gbumap.tl.fit(writable, **FIT)
    assert "X_gbumap" not in writable.obsm
    writable.file.close()


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "client"])
def test_store_rows_gathers_under_every_scheduler(tmp_path, client, scheduler):
    import dask
    import dask.array as da

    from gbumap._dask import store_rows

    X = da.from_array(np.arange(1000 * 6, dtype=np.float64).reshape(1000, 6), chunks=(300, 3))
    lazy = X.map_blocks(np.sqrt)
    out = np.full(lazy.shape, np.nan)
    config = {} if scheduler == "client" else {"scheduler": scheduler}
    with dask.config.set(config), h5py.File(tmp_path / "out.h5", "w") as f:
        target = f.create_dataset("rows", shape=lazy.shape, dtype=lazy.dtype)
        (total,) = store_rows([lazy, lazy], [out, target], also=(lazy.sum(),), lock=True)
        np.testing.assert_array_equal(out, np.sqrt(X.compute(scheduler="sync")))
        np.testing.assert_array_equal(target[:], out)
    assert total == pytest.approx(out.sum())


def test_batch_corrected_fit_on_a_cluster_equals_fit_in_memory(sim_file, client):
    """batch_key on a cluster: the batch codes travel with the chunks; the same model as in memory, exact."""
    with threads():
        memory = ad.read_h5ad(sim_file)
        gbumap.tl.glassbox_umap(memory, batch_key="batch", **FIT)
    on_cluster = lazy_adata(sim_file)
    gbumap.tl.glassbox_umap(on_cluster, batch_key="batch", **FIT)
    m, c = model_state(memory), model_state(on_cluster)
    for name, value in c.items():
        np.testing.assert_array_equal(value, m[name], err_msg=name)
    np.testing.assert_array_equal(on_cluster.obsm["gbumap_jacobian"], memory.obsm["gbumap_jacobian"])
    assert on_cluster.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    query = lazy_adata(sim_file)
    gbumap.tl.transform(query, memory)  # a lazy query on the cluster, batches known to the model
    scale = float(np.abs(memory.obsm["X_gbumap"]).max())  # transform multiplies other numbers of rows at once
    np.testing.assert_allclose(query.obsm["X_gbumap"], memory.obsm["X_gbumap"], rtol=0, atol=1e-5 * scale)
    assert gbumap.get.reconstruction_error(query)["max_rel"] < 1e-5
