"""Integrated maps (``batch_key``): exact in every mode, mixed, mappable, stored as plain arrays, refusing bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap import _layout_metrics as metrics
from gbumap._registry import RegistryError

FAST = dict(n_steps=150, verbose=False)


def pseudo_batches(adata, seed=1, lfc=0.8):
    """``adata`` (log-normalised) split at random into two batches, 30% of genes multiplied per batch."""
    rng = np.random.default_rng(seed)
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float64)
    batch = rng.integers(2, size=adata.n_obs)
    effect = np.zeros((2, adata.n_vars))
    for b in range(2):
        genes = rng.choice(adata.n_vars, int(0.3 * adata.n_vars), replace=False)
        effect[b, genes] = rng.choice([-lfc, lfc], len(genes))
    out = adata.copy()
    out.X = np.log1p(np.expm1(X) * np.exp(effect[batch])).astype(np.float32)
    out.obs["batch"] = np.where(batch == 0, "P0", "P1")
    return out


@pytest.fixture(scope="module")
def pbmc_batches(pbmc_log_raw):
    return pseudo_batches(pbmc_log_raw)


@pytest.fixture(scope="module")
def sim():
    return gbumap.datasets.simulate(3_000, 1_000, n_batches=3, random_state=5)


@pytest.fixture(scope="module")
def sim_fits(sim):
    plain, corrected = sim.copy(), sim.copy()
    gbumap.tl.glassbox_umap(plain, **FAST)
    gbumap.tl.glassbox_umap(corrected, batch_key="batch", **FAST)
    return plain, corrected


def _mixing(adata) -> float:
    batch = adata.obs["batch"].to_numpy().astype(str)
    return metrics.batch_mixing(adata.obsm["X_gbumap"], batch, np.arange(adata.n_obs), 30)


# ---------------------------------------------------------------- exactness in every mode, after a round trip
@pytest.mark.parametrize("method", ["harmony", "baseline"])
@pytest.mark.parametrize("n_pcs", [None, 0], ids=["pca", "genes"])
def test_contributions_sum_to_the_integrated_map_after_h5ad(pbmc_batches, tmp_path, method, n_pcs):
    adata = pbmc_batches[:, :120].copy() if n_pcs == 0 else pbmc_batches.copy()
    gbumap.tl.glassbox_umap(adata, batch_key="batch", batch_correction=method, n_pcs=n_pcs, **FAST)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5
    total = gbumap.get.contributions(back)
    parts = gbumap.get.contributions(back, part="expression") + gbumap.get.contributions(back, part="correction")
    emb = back.obsm["X_gbumap"]
    assert np.abs(total.sum(-1) - emb).max() < 1e-5 * np.abs(emb).max()
    assert np.abs(parts - total).max() < 1e-5 * np.abs(emb).max()
    assert np.abs(gbumap.get.contributions(back, part="correction")).max() > 0  # the correction did something
    assert back.uns["gbumap"]["batch_correction"]["method"] == method


def test_float64_is_exact_to_1e_12(pbmc_batches):
    adata = pbmc_batches[:, :200].copy()
    gbumap.tl.glassbox_umap(adata, batch_key="batch", dtype="float64", n_steps=60, verbose=False)
    # obsm["X_gbumap"] is stored in float32 (the AnnData contract): compare with the float64 model's own output
    position = gbumap.get.model(adata).transform(adata.X, batches=adata.obs["batch"].to_numpy())
    total = gbumap.get.contributions(adata)
    assert total.dtype == np.float64
    assert np.abs(total.sum(-1) - position).max() < 1e-12 * np.abs(position).max()
    split = gbumap.get.contributions(adata, part="expression") + gbumap.get.contributions(adata, part="correction")
    np.testing.assert_allclose(split, gbumap.get.contributions(adata), rtol=0, atol=1e-12)


def test_uncorrected_model_has_a_zero_correction_part(pbmc_fitted):
    assert not np.any(gbumap.get.contributions(pbmc_fitted, genes=["LYZ"], part="correction"))
    with pytest.raises(ValueError, match="without batch correction"):
        gbumap.get.batch_correction(pbmc_fitted)


# ---------------------------------------------------------------- what the integration achieves
def test_batch_key_mixes_the_batches_and_keeps_the_types(sim, sim_fits):
    plain, corrected = sim_fits
    assert _mixing(plain) < 0.3 < 0.8 < _mixing(corrected)
    labels = sim.obs["cell_type"].to_numpy().astype(str)
    cells = np.arange(sim.n_obs)
    accuracy = {name: metrics.label_accuracy(a.obsm["X_gbumap"], labels, cells, 15)
                for name, a in (("plain", plain), ("corrected", corrected))}
    assert accuracy["corrected"] > max(0.8, accuracy["plain"] - 0.03), accuracy


def test_batch_only_genes_lose_their_batch_signal(sim, sim_fits):
    genes = list(sim.var_names[sim.var["batch_only"].to_numpy()])
    batch = sim.obs["batch"].to_numpy()

    def signal(adata):
        C = gbumap.get.contributions(adata, genes=genes).astype(np.float64)
        means = np.stack([C[batch == b].mean(0) for b in np.unique(batch)])
        return np.sqrt(((means - C.mean(0)) ** 2).sum(axis=1).mean(axis=0)).sum()

    plain, corrected = sim_fits
    assert signal(corrected) < 0.5 * signal(plain)


def test_the_correction_is_visible_per_cell(sim_fits):
    _, corrected = sim_fits
    table = gbumap.get.batch_correction(corrected)
    assert list(table.columns[:3]) == ["batch", "map_shift_1", "map_shift_2"] and len(table) == corrected.n_obs
    # the correction parts summed over genes are exactly the map shift
    C = gbumap.get.contributions(corrected, obs=np.arange(50), part="correction").sum(-1)
    np.testing.assert_allclose(C, table[["map_shift_1", "map_shift_2"]].to_numpy()[:50], rtol=1e-4, atol=1e-5)
    assert (table["input_shift"] > 0).all() and table["map_shift"].median() > 0


def test_batch_correction_plot(sim_fits):
    import matplotlib

    matplotlib.use("Agg")
    _, corrected = sim_fits
    before = snapshot(corrected)
    fig = gbumap.pl.batch_correction(corrected, return_fig=True, n_genes=5)
    assert len(fig.axes) >= 3 and "median map shift" in fig._suptitle.get_text()
    assert_unchanged(corrected, before)


def test_quality_reports_mixing_and_scib_metrics(sim_fits):
    pytest.importorskip("scib_metrics")
    plain, corrected = (a.copy() for a in sim_fits)
    for adata in (plain, corrected):
        gbumap.tl.quality(adata, "gbumap", groupby="cell_type", batch_key="batch", n_cells=1500)
    p, c = gbumap.get.quality(plain).iloc[0], gbumap.get.quality(corrected).iloc[0]
    for name in ("ilisi", "clisi", "batch_asw", "label_asw", "graph_connectivity", "nmi", "ari"):
        assert name in c.index and np.isfinite(c[name])
    assert c["batch_mixing"] > p["batch_mixing"] + 0.4 and c["ilisi"] > p["ilisi"]


# ---------------------------------------------------------------- every tool reads the integrated model
def test_tools_run_on_an_integrated_model_and_stay_exact(sim_fits):
    _, corrected = sim_fits
    adata = corrected.copy()
    gbumap.tl.contrast(adata, "cell_type", "L0_T0", reference="L1_T0")
    res = adata.uns["contrast_gbumap"]
    assert max(abs(float(v)) for v in res["reconstruction_gap"].tolist()[0]) < 1e-4  # relative to the shift
    sets = {"first": list(adata.var_names[:40]), "second": list(adata.var_names[40:90])}
    gbumap.tl.gene_set_contributions(adata, sets)
    by_set = adata.obsm["gene_sets_gbumap"]
    by_gene = gbumap.get.contributions(adata, genes=sets["first"]).sum(-1)
    np.testing.assert_allclose(by_set[:, :, 0], by_gene, rtol=1e-4, atol=1e-5)
    gbumap.tl.perturb(adata, [str(adata.var_names[0])], value=0, groupby="cell_type")
    gbumap.tl.rank_knockouts(adata, "cell_type", groups=["L0_T0"], n_exact=3)
    gbumap.tl.stability(adata, n_models=2, groupby="cell_type", verbose=False)
    assert "stability_gbumap" in adata.uns


def test_estimator_round_trip_with_batches(sim):
    X, batches = sim.X, sim.obs["batch"].to_numpy()
    model = gbumap.GlassBoxUMAP(pca_components=20, n_steps=100, random_state=0).fit(X, batches=batches)
    emb = model.transform(X, batches=batches)
    np.testing.assert_allclose(emb, model.embedding_, rtol=0, atol=1e-5 * np.abs(emb).max())
    C = model.compute_contributions(X[:200], batches=batches[:200])
    assert np.abs(C.sum(-1) - emb[:200]).max() < 1e-5 * np.abs(emb).max()
    with pytest.raises(ValueError, match="pass batches="):
        model.transform(X[:5])
    with pytest.raises(ValueError, match="no offsets for"):
        model.transform(X[:5], batches=["new"] * 5)
    extended = model.with_new_batches(X[:300], ["new"] * 300)
    assert list(extended.batch_categories_) == ["B0", "B1", "B2", "new"] and model.correction_.categories.size == 3
    assert extended.reconstruction_error(X[:300], batches=["new"] * 300)["max_rel"] < 1e-5
    with pytest.raises(ValueError, match="fitted without batch correction"):
        gbumap.GlassBoxUMAP(n_steps=20).fit(X[:200].toarray()).transform(X[:5].toarray(), batches=["B0"] * 5)


def test_fit_with_the_projection_of_an_integrated_model_applies_its_correction(sim):
    X, batches = sim.X, sim.obs["batch"].to_numpy()
    ref = gbumap.GlassBoxUMAP(pca_components=20, n_steps=60, random_state=0).fit(X, batches=batches)
    cells = np.arange(0, X.shape[0], 3)
    run = gbumap.GlassBoxUMAP(pca_components=20, n_steps=60, random_state=1).fit(
        X[cells], projection=ref, batches=batches[cells]
    )
    assert run.correction_ is ref.correction_ and list(run.batch_categories_) == ["B0", "B1", "B2"]
    emb = run.transform(X[cells], batches=batches[cells])
    np.testing.assert_allclose(emb, run.embedding_, rtol=0, atol=1e-5 * np.abs(emb).max())
    assert run.reconstruction_error(X[cells], batches=batches[cells])["max_rel"] < 1e-5
    with pytest.raises(ValueError, match="pass batches="):
        gbumap.GlassBoxUMAP(n_steps=5).fit(X[cells], projection=ref)
    with pytest.raises(ValueError, match="no offsets for"):
        gbumap.GlassBoxUMAP(n_steps=5).fit(X[:30], projection=ref, batches=["new"] * 30)


# ---------------------------------------------------------------- a new sample onto the map
def test_a_new_batch_is_mapped_with_exact_contributions(sim):
    reference = sim[sim.obs["batch"] != "B2"].copy()
    query = sim[sim.obs["batch"] == "B2"].copy()
    gbumap.tl.glassbox_umap(reference, batch_key="batch", **FAST)
    gbumap.tl.transform(query, reference)
    reg = query.uns["gbumap"]
    assert list(reg["query"]["new_batches"]) == ["B2"] and "B2" in list(reg["batch_correction"]["categories"])
    assert gbumap.get.reconstruction_error(query)["max_rel"] < 1e-5
    from sklearn.neighbors import KNeighborsClassifier

    emb, types = reference.obsm["X_gbumap"], reference.obs["cell_type"].to_numpy()
    clf = KNeighborsClassifier(15).fit(emb, types)
    accuracy = (clf.predict(query.obsm["X_gbumap"]) == query.obs["cell_type"].to_numpy()).mean()
    half = np.arange(len(types)) % 2 == 0  # the reference's own cells, classified from its other half
    own = (KNeighborsClassifier(15).fit(emb[half], types[half]).predict(emb[~half]) == types[~half]).mean()
    assert accuracy > max(0.8, own - 0.12), (accuracy, own)
    # the query file is self-contained: contributions of the new batch after a round trip
    back = ad.AnnData(X=query.X, obs=query.obs, var=query.var, obsm=dict(query.obsm), uns=dict(query.uns))
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5


# ---------------------------------------------------------------- graphs from an integrated representation
def test_an_integrated_graph_needs_the_explicit_request(pbmc_batches):
    import scanpy as sc

    adata = pbmc_batches.copy()
    sc.pp.pca(adata, n_comps=20)
    adata.obsm["X_integrated"] = adata.obsm["X_pca"] * 1.0  # stands for X_pca_harmony / X_scVI
    sc.pp.neighbors(adata, use_rep="X_integrated", key_added="integrated")
    before = snapshot(adata)
    with pytest.raises(ValueError, match="neighbors_any_rep=True"):
        gbumap.tl.fit(adata, neighbors_key="integrated", **FAST)
    assert_unchanged(adata, before)
    gbumap.tl.fit(adata, neighbors_key="integrated", neighbors_any_rep=True, batch_key="batch", **FAST)
    neighbors = adata.uns["gbumap"]["neighbors"]
    assert neighbors["representation"] == "X_integrated" and neighbors["other_representation"] == "True"
    assert adata.uns["gbumap"]["reconstruction_error"]["max_rel"] < 1e-5
    assert adata.uns["gbumap"]["attribution"] == "genes"


# ---------------------------------------------------------------- bad input: a clear error, nothing changed
@pytest.mark.parametrize(
    "edit, error, message",
    [
        (lambda a: None, KeyError, r"obs column \(batch_key"),
        (lambda a: a.obs.__setitem__("batch", np.where(np.arange(a.n_obs) == 3, None, "P0")), ValueError,
         r"missing label"),
        (lambda a: a.obs.__setitem__("batch", np.where(np.arange(a.n_obs) == 3, "lonely", "P0")), ValueError,
         r"'lonely' hold a single cell"),
        (lambda a: a.obs.__setitem__("batch", "P0"), ValueError, r"single batch"),
    ],
    ids=["missing_column", "missing_labels", "batch_of_one_cell", "one_batch"],
)
def test_bad_batches_leave_the_anndata_unchanged(pbmc_log_raw, edit, error, message):
    adata = pbmc_log_raw.copy()
    edit(adata)
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        gbumap.tl.fit(adata, batch_key="batch", **FAST)
    assert_unchanged(adata, before)


def test_a_query_without_the_batch_column_is_refused(sim_fits, sim):
    _, corrected = sim_fits
    query = sim[:100].copy()
    del query.obs["batch"]
    before = snapshot(query)
    with pytest.raises(KeyError, match=r"batch_key, in the query"):
        gbumap.tl.transform(query, corrected)
    assert_unchanged(query, before)


def test_a_damaged_correction_is_refused_on_reading(sim_fits):
    _, corrected = sim_fits
    adata = corrected.copy()
    reg = adata.uns["gbumap"]["batch_correction"]
    reg["offsets"] = reg["offsets"][:, :, :3]
    with pytest.raises(RegistryError, match="batch_correction/offsets"):
        gbumap.get.model(adata)


def test_fit_does_not_overwrite_a_users_uns_entry(pbmc_log_raw):
    adata = pbmc_log_raw.copy()
    adata.uns["mine"] = {"notes": "keep"}
    before = snapshot(adata)
    with pytest.raises(ValueError, match="not a gbumap model"):
        gbumap.tl.fit(adata, key_added="mine", **FAST)
    assert_unchanged(adata, before)
