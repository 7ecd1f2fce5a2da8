"""RNA + protein in one exact map: the simulator's proteins, modality_key, MuData, queries with one modality."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap.datasets import simulate

FIT = dict(n_steps=40, verbose=False)


@pytest.fixture(scope="module")
def cite():
    return simulate(1_200, 1_000, n_proteins=24, random_state=3)


@pytest.fixture(scope="module")
def fitted(cite):
    adata = cite.copy()
    gbumap.tl.glassbox_umap(adata, modality_key="feature_types", **FIT)
    return adata


def _parts_sum(parts, n_axes=2):
    names = [c[len("share_"):] for c in parts.columns if c.startswith("share_")]
    return np.stack([sum(parts[f"{m}_{i + 1}"].to_numpy() for m in names) for i in range(n_axes)], axis=1)


# ---------------------------------------------------------------------- the simulator
def test_simulator_proteins_leave_the_rna_unchanged_and_mark_subtypes(cite):
    rna = simulate(1_200, 1_000, random_state=3)
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    assert (cite[:, genes].X != rna.X).nnz == 0
    assert (cite.layers["counts"][:, genes] != rna.layers["counts"]).nnz == 0
    assert list(cite.var_names[~genes][:2]) == ["prot_00", "prot_01"]
    # split types: two subtypes with identical RNA programs, different proteins
    truth = cite.uns["simulation"]["protein_truth"]
    sub = cite.obs["subtype"].astype(str)
    a, b = (sub == "L0_T0_P0").to_numpy(), (sub == "L0_T0_P1").to_numpy()
    assert a.sum() > 50 and b.sum() > 50
    markers = [cite.var_names.get_loc(p) for p in truth["L0_T0_P0"]]
    X = cite.X.toarray()
    assert (X[a][:, markers].mean(0) - X[b][:, markers].mean(0)).min() > 0.8
    type_genes = cite.var_names[(cite.var["program"] == "L0_T0").to_numpy()]
    cols = [cite.var_names.get_loc(g) for g in type_genes]
    rna_gap = np.abs(X[a][:, cols].mean(0) - X[b][:, cols].mean(0)).mean()
    other = (cite.obs["cell_type"] == "L0_T1").to_numpy()
    assert rna_gap < 0.4 * np.abs(X[a][:, cols].mean(0) - X[other][:, cols].mean(0)).mean()
    # types of one lineage share their proteins
    prot = ~genes
    t1, t2 = (cite.obs["cell_type"] == "L2_T1").to_numpy(), (cite.obs["cell_type"] == "L2_T2").to_numpy()
    assert np.abs(X[t1][:, prot].mean(0) - X[t2][:, prot].mean(0)).max() < 0.3


def test_simulator_without_proteins_is_unchanged_and_counts_are_prefixes():
    base = simulate(1_100, 1_000, random_state=4)
    zero = simulate(1_100, 1_000, random_state=4, n_proteins=0)
    assert (base.X != zero.X).nnz == 0 and list(base.var.columns) == list(zero.var.columns)
    small = simulate(1_100, 1_000, random_state=4, n_proteins=24)
    large = simulate(2_100, 1_000, random_state=4, n_proteins=24)
    assert (small.layers["counts"] != large.layers["counts"][:1_100]).nnz == 0
    with pytest.raises(ValueError, match="n_proteins=5 is too small"):
        simulate(500, 1_000, n_proteins=5)


def test_write_simulated_refuses_proteins(tmp_path):
    from gbumap.datasets import write_simulated

    with pytest.raises(ValueError, match="does not write proteins"):
        write_simulated(tmp_path / "sim.h5ad", 2_000, 1_000, n_proteins=24)
    assert not (tmp_path / "sim.h5ad").exists()


def test_simulator_clr_is_muons():
    mu = pytest.importorskip("muon")
    cite = simulate(1_100, 1_000, n_proteins=24, random_state=5)
    prot = ad.AnnData(cite.layers["counts"][:, 1_000:].copy())
    mu.prot.pp.clr(prot)
    np.testing.assert_allclose(prot.X.toarray(), cite.X[:, 1_000:].toarray(), atol=1e-4)


# ---------------------------------------------------------------------- one exact map
@pytest.mark.parametrize("n_pcs", [None, 0, {"GEX": 20, "ADT": 8}])
def test_joint_map_is_exact_per_feature_and_per_modality(cite, n_pcs):
    adata = cite.copy()
    gbumap.tl.fit(adata, modality_key="feature_types", n_pcs=n_pcs, **FIT)
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    assert gbumap.get.reconstruction_error(adata)["max_rel"] < 1e-5
    parts = gbumap.get.modality_contributions(adata)
    assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()
    shares = parts[["share_GEX", "share_ADT"]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-12)
    info = gbumap.get.model(adata, "gbumap")
    assert info.components_.shape[1] == adata.n_vars
    reg = adata.uns["gbumap"]["modalities"]
    expected = [20, 8] if isinstance(n_pcs, dict) else {None: [50, 0], 0: [0, 0]}[n_pcs]
    assert list(reg["n_pcs"]) == expected
    # the loadings are block diagonal: no protein feeds an RNA input and vice versa
    genes = (adata.var["feature_types"] == "GEX").to_numpy()
    width = expected[0] or genes.sum()
    assert np.all(info.components_[:width][:, ~genes] == 0) and np.all(info.components_[width:][:, genes] == 0)


def test_exact_on_real_cells_with_two_modalities_and_after_a_file_round_trip(pbmc_log_raw, tmp_path):
    # pbmc68k_reduced has no proteins: its 30 most variable genes stand in for a second, small modality read
    # as it is (no PCA), the 735 others for the genes (50-PC PCA); exactness does not depend on what they measure
    adata = pbmc_log_raw.copy()
    dense = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    spread = dense.std(axis=0)
    kind = np.full(adata.n_vars, "GEX", dtype=object)
    kind[np.argsort(-spread)[:30]] = "ADT"
    adata.var["feature_types"] = kind
    gbumap.tl.glassbox_umap(adata, modality_key="feature_types", groupby="bulk_labels", **FIT)
    path = tmp_path / "pbmc.h5ad"
    adata.write_h5ad(path)
    for data in (adata, ad.read_h5ad(path)):
        emb = data.obsm["X_gbumap"].astype(np.float64)
        assert gbumap.get.reconstruction_error(data)["max_rel"] < 1e-5
        parts = gbumap.get.modality_contributions(data)
        assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()
        contrib = gbumap.get.contributions(data).astype(np.float64)
        assert np.abs(contrib.sum(-1) - emb).max() <= 1e-5 * np.abs(emb).max()


def test_modalities_are_balanced_and_emphasis_multiplies(cite):
    plain, tilted = cite.copy(), cite.copy()
    gbumap.tl.fit(plain, modality_key="feature_types", **FIT)
    gbumap.tl.fit(tilted, modality_key="feature_types", modality_weights={"ADT": 2.0}, **FIT)
    a, b = plain.uns["gbumap"]["modalities"], tilted.uns["gbumap"]["modalities"]
    np.testing.assert_allclose(a["scales"], b["scales"])
    assert list(b["emphasis"]) == [1.0, 2.0]
    # balanced: each block's root mean squared norm is 1 after scaling (all 1,200 cells are sampled)
    model = gbumap.get.model(plain)
    Z = (plain.X.toarray() - model.baseline_) @ model.components_.T.astype(np.float64)
    for block in (slice(0, 50), slice(50, Z.shape[1])):
        assert np.sqrt(np.mean(np.sum(Z[:, block] ** 2, axis=1))) == pytest.approx(1.0, rel=1e-3)
    local = cite.copy()
    gbumap.tl.fit(local, modality_key="feature_types", modality_weighting="neighbors", **FIT)
    assert local.uns["gbumap"]["modalities"]["weighting"] == "neighbors"
    from gbumap._knn import nearest_neighbors

    model = gbumap.get.model(local)
    Z = (local.X.toarray() - model.baseline_) @ model.components_.T.astype(np.float64)
    for block in (slice(0, 50), slice(50, Z.shape[1])):
        _, dist = nearest_neighbors(Z[:, block].astype(np.float32), 15)
        assert np.median(dist[:, -1]) == pytest.approx(1.0, rel=1e-3)


def test_file_round_trips_keep_the_split_and_the_model(fitted, tmp_path):
    path = tmp_path / "cite.h5ad"
    fitted.write_h5ad(path)
    back = ad.read_h5ad(path)
    before = gbumap.get.modality_contributions(fitted)
    after = gbumap.get.modality_contributions(back)
    np.testing.assert_array_equal(before.to_numpy(), after.to_numpy())
    query = back[:100].copy()
    del query.obsm["X_gbumap"], query.obsm["gbumap_jacobian"]
    query.uns.pop("gbumap")
    gbumap.tl.transform(query, back)
    np.testing.assert_allclose(query.obsm["X_gbumap"], fitted.obsm["X_gbumap"][:100], atol=1e-4)


def test_rna_only_query_puts_proteins_at_the_baseline_exactly(fitted):
    genes = (fitted.var["feature_types"] == "GEX").to_numpy()
    query = ad.AnnData(fitted.X[:200][:, genes], obs=fitted.obs.iloc[:200].copy(), var=fitted.var[genes].copy())
    gbumap.tl.transform(query, fitted, fill_missing="baseline")
    # the query record keeps the reference's modalities: the proteins' part is exactly 0
    parts = gbumap.get.modality_contributions(query)
    assert np.abs(parts[["ADT_1", "ADT_2"]].to_numpy()).max() == 0.0
    emb = query.obsm["X_gbumap"].astype(np.float64)
    assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()


def test_rna_only_query_with_the_protein_block_imputed_is_exact_and_closer(fitted, tmp_path):
    path = tmp_path / "ref.h5ad"
    fitted.write_h5ad(path)
    reference = ad.read_h5ad(path)  # the imputation maps travel in the file
    genes = (fitted.var["feature_types"] == "GEX").to_numpy()
    cells = slice(0, 300)
    full = ad.AnnData(fitted.X[cells], obs=fitted.obs.iloc[cells].copy(), var=fitted.var.copy())
    gbumap.tl.transform(full, reference)
    shifts = {}
    for rule in ("baseline", "impute"):
        query = ad.AnnData(fitted.X[cells][:, genes], obs=fitted.obs.iloc[cells].copy(), var=fitted.var[genes].copy())
        gbumap.tl.transform(query, reference, fill_missing=rule)
        emb = query.obsm["X_gbumap"].astype(np.float64)
        assert gbumap.get.reconstruction_error(query)["max_rel"] < 1e-5
        parts = gbumap.get.modality_contributions(query)
        assert np.abs(parts[["ADT_1", "ADT_2"]].to_numpy()).max() == 0.0  # the genes carry the imputed block
        assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()
        shifts[rule] = np.median(np.linalg.norm(emb - full.obsm["X_gbumap"], axis=1))
    assert list(query.uns["gbumap"]["modalities"]["imputed"]) == ["ADT"]
    assert shifts["impute"] < 0.7 * shifts["baseline"]
    # the reference is untouched
    np.testing.assert_array_equal(gbumap.get.model(reference).components_, gbumap.get.model(fitted).components_)


def test_a_query_lacking_a_modality_without_a_rule_names_it(fitted):
    genes = (fitted.var["feature_types"] == "GEX").to_numpy()
    query = fitted[:50, genes].copy()
    query.uns.pop("gbumap")
    before = snapshot(query)
    with pytest.raises(KeyError, match=r"lacks features of modality 'ADT' \(24 of 24 features\)"):
        gbumap.tl.transform(query, fitted)
    assert_unchanged(query, before)


def test_exact_to_float64_precision(cite):
    adata = cite[:800].copy()
    gbumap.tl.fit(adata, modality_key="feature_types", dtype="float64", **FIT)
    emb = adata.obsm["X_gbumap"]  # stored in float32, as every embedding: compare with the model's own output
    model = gbumap.get.model(adata)
    contrib = model.compute_contributions(adata.X)
    full = model.transform(adata.X)  # float64 positions
    assert full.dtype == np.float64 and contrib.dtype == np.float64
    onehot = np.eye(2)[adata.uns["gbumap"]["modalities"]["feature_codes"]]
    parts = contrib @ onehot  # each modality's part, (cells, axes, modalities)
    assert np.abs(contrib.sum(-1) - full).max() <= 1e-12 * np.abs(full).max()
    assert np.abs(parts.sum(-1) - full).max() <= 1e-12 * np.abs(full).max()
    table = gbumap.get.modality_contributions(adata)  # the reader, in the model's dtype
    tolerance = 1e-12 * np.abs(full).max()
    np.testing.assert_allclose(table[["GEX_1", "ADT_1"]].to_numpy(), parts[:, 0], rtol=0, atol=tolerance)
    assert np.abs(full - emb).max() < 1e-5 * np.abs(full).max()


@pytest.mark.parametrize("n_pcs", [None, 0], ids=["projected", "unprojected"])
def test_float64_exactness_survives_h5ad_and_h5mu_round_trips(cite, tmp_path, n_pcs):
    """≤ 1e-12 of the map's scale in float64, per feature and per modality, after each file and its reload."""
    md = pytest.importorskip("mudata")
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    adata = cite[:400].copy()
    gbumap.tl.fit(adata, modality_key="feature_types", dtype="float64", n_pcs=n_pcs, **FIT)
    mdata = md.MuData({"rna": adata[:, genes].copy(), "prot": adata[:, ~genes].copy()})
    mdata.mod["rna"].uns.clear()
    gbumap.tl.fit(mdata, dtype="float64", n_pcs=n_pcs, **FIT)
    adata.write_h5ad(tmp_path / "cite.h5ad")
    mdata.write_h5mu(tmp_path / "cite.h5mu")
    backs = {"h5ad": (ad.read_h5ad(tmp_path / "cite.h5ad"), adata.X),
             "h5mu": (md.read_h5mu(tmp_path / "cite.h5mu"), np.hstack([adata.X[:, genes].toarray(),
                                                                       adata.X[:, ~genes].toarray()]))}
    for name, (back, X) in backs.items():
        before = gbumap.get.model(adata if name == "h5ad" else mdata)
        model = gbumap.get.model(back)
        codes = back.uns["gbumap"]["modalities"]["feature_codes"]
        full = model.transform(X)
        np.testing.assert_array_equal(full, before.transform(X))  # the reloaded model is the same model
        contrib = model.compute_contributions(X)
        assert full.dtype == np.float64 and contrib.dtype == np.float64, name
        parts = contrib @ np.eye(2)[codes]
        scale = np.abs(full).max()
        assert np.abs(contrib.sum(-1) - full).max() <= 1e-12 * scale, name
        assert np.abs(parts.sum(-1) - full).max() <= 1e-12 * scale, name


def test_impute_refuses_what_it_cannot_read(fitted):
    genes = (fitted.var["feature_types"] == "GEX").to_numpy()
    scattered = fitted[:50, 5:].copy()  # five genes missing, proteins present
    before = snapshot(scattered)
    with pytest.raises(ValueError, match="one whole missing modality"):
        gbumap.tl.transform(scattered, fitted, fill_missing="impute")
    assert_unchanged(scattered, before)
    single = fitted[:50, genes].copy()
    single.uns.clear()
    rna_model = single.copy()
    gbumap.tl.fit(rna_model, **FIT)
    with pytest.raises(ValueError, match="needs a multimodal model"):
        gbumap.tl.transform(single[:, :900].copy(), rna_model, fill_missing="impute")


def test_a_damaged_imputation_map_is_refused(fitted):
    from gbumap._registry import RegistryError

    adata = fitted.copy()
    reg = dict(adata.uns["gbumap"])
    modalities = dict(reg["modalities"])
    modalities["imputation"] = {"0": np.zeros((3, 3)), "1": modalities["imputation"]["1"]}
    reg["modalities"] = modalities
    adata.uns["gbumap"] = reg
    with pytest.raises(RegistryError, match="imputation/0"):
        gbumap.get.model(adata)


def test_batches_and_modalities_together_stay_exact():
    adata = simulate(1_200, 1_000, n_proteins=24, n_batches=2, random_state=6)
    gbumap.tl.fit(adata, modality_key="feature_types", batch_key="batch", **FIT)
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    parts = gbumap.get.modality_contributions(adata)
    assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()


# ---------------------------------------------------------------------- rankings and plots
def test_rankings_over_both_modalities_and_per_modality(fitted):
    adata = fitted.copy()
    gbumap.tl.rank_features(adata, "subtype")
    gbumap.tl.rank_features(adata, "subtype", modality="ADT", key_added="rank_adt")
    both = gbumap.get.rank_features_df(adata, "L0_T0_P0")
    assert set(both["modality"]) == {"GEX", "ADT"}
    # CLR proteins are above 0 almost everywhere: "detected" means above their mean, so they can lead a joint list
    assert adata.uns["rank_features_gbumap"]["params"]["detection"] == "GEX: above 0; ADT: above its mean"
    markers = adata.uns["simulation"]["protein_truth"]
    assert set(both["names"][:10]) & (set(markers["L0_T0_P0"]) | set(markers["L0"]))
    proteins = sc.get.rank_genes_groups_df(adata, "L0_T0_P0", key="rank_adt")
    assert len(proteins) == 24 and proteins["names"].str.startswith("prot_").all()
    # the subtype's own marker proteins and its lineage's lead its protein ranking
    from sklearn.metrics import roc_auc_score

    markers = adata.uns["simulation"]["protein_truth"]
    truth = set(markers["L0_T0_P0"]) | set(markers["L0"])
    assert len(truth & set(proteins["names"][:5])) >= 2
    assert roc_auc_score(proteins["names"].isin(truth), proteins["scores"]) >= 0.9
    with pytest.raises(ValueError, match="modality must be one of"):
        gbumap.tl.rank_features(adata, "subtype", modality="ATAC", key_added="rank_bad")
    assert "rank_bad" not in adata.uns


def test_modality_shares_plot_reads_without_writing(fitted):
    import matplotlib

    matplotlib.use("Agg")
    before = snapshot(fitted)
    axes = gbumap.pl.modality_shares(fitted, groupby="subtype", show=False)
    assert len(axes) == 2
    assert_unchanged(fitted, before)
    with pytest.raises(ValueError, match="modality must be one of"):
        gbumap.pl.modality_shares(fitted, "RNA", show=False)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"modality_key": "kind"}, KeyError, "not found"),
        ({"modality_key": "role"}, ValueError, None),  # roles, not modalities: accepted only if >= 2 names
        ({"modality_key": "feature_types", "use_rep": "X_pca"}, ValueError, "cannot be combined with use_rep"),
        ({"modality_key": "feature_types", "pca_components": 10}, ValueError, "pass n_pcs="),
        ({"modality_key": "feature_types", "n_pcs": {"RNA": 10}}, ValueError, "unknown modalities"),
        ({"modality_key": "feature_types", "modality_weighting": "equal"}, ValueError, "modality_weighting"),
        ({"modality_key": "feature_types", "modality_weights": {"ADT": -1}}, ValueError, "modality_weights"),
        ({"modality_key": "feature_types", "mask_var": "is_gene"}, ValueError, "keeps no feature of modality 'ADT'"),
    ],
)
def test_bad_multimodal_input_names_the_fix_and_leaves_adata_alone(cite, kwargs, error, match):
    adata = cite[:300].copy()
    adata.obsm["X_pca"] = np.zeros((adata.n_obs, 5), dtype=np.float32)
    adata.var["is_gene"] = (adata.var["feature_types"] == "GEX").to_numpy()
    if kwargs.get("modality_key") == "role":  # several roles: a legitimate (if odd) split; skip the error check
        return
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        gbumap.tl.fit(adata, **kwargs, **FIT)
    assert_unchanged(adata, before)


def test_a_feature_without_a_modality_is_refused(cite):
    adata = cite[:300].copy()
    kind = adata.var["feature_types"].astype(object).to_numpy()
    kind[3] = None
    adata.var["kind"] = kind
    before = snapshot(adata)
    with pytest.raises(ValueError, match="1 missing value"):
        gbumap.tl.fit(adata, modality_key="kind", **FIT)
    assert_unchanged(adata, before)


def test_a_single_modality_is_refused(cite):
    adata = cite[:300, :1_000].copy()
    with pytest.raises(ValueError, match="names a single modality"):
        gbumap.tl.fit(adata, modality_key="feature_types", **FIT)


def test_a_damaged_modalities_field_is_refused(fitted):
    from gbumap._registry import RegistryError

    adata = fitted.copy()
    adata.uns["gbumap"] = dict(adata.uns["gbumap"])
    adata.uns["gbumap"]["modalities"] = dict(adata.uns["gbumap"]["modalities"], n_pcs=np.array([3, 0]))
    with pytest.raises(RegistryError, match="n_pcs"):
        gbumap.get.model(adata)


# ---------------------------------------------------------------------- MuData
def test_mudata_in_and_out_with_an_h5mu_round_trip(cite, tmp_path):
    md = pytest.importorskip("mudata")
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    mdata = md.MuData({"rna": cite[:, genes].copy(), "prot": cite[:, ~genes].copy()})
    gbumap.tl.glassbox_umap(mdata, top_genes=5, **FIT)
    assert "X_gbumap" in mdata.obsm and "gbumap" in mdata.uns
    assert "gbumap_l2" in mdata.mod["rna"].layers and mdata.mod["prot"].layers["gbumap_l2"].shape == (1_200, 24)
    info = mdata.uns["gbumap"]["modalities"]
    assert info["source"] == "mudata" and list(info["names"]) == ["rna", "prot"]
    parts = gbumap.get.modality_contributions(mdata)
    emb = mdata.obsm["X_gbumap"].astype(np.float64)
    assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()
    gbumap.tl.rank_features(mdata, "rna:subtype", modality="prot")
    assert "rank_features_gbumap" in mdata.uns
    path = tmp_path / "cite.h5mu"
    mdata.write_h5mu(path)
    back = md.read_h5mu(path)
    np.testing.assert_array_equal(gbumap.get.modality_contributions(back).to_numpy(), parts.to_numpy())
    query = back.mod["rna"][:50].copy()
    gbumap.tl.transform(query, back, fill_missing="baseline")
    assert query.obsm["X_gbumap"].shape == (50, 2)


@pytest.mark.slow
def test_a_mudata_follows_muons_wnn_graph_and_stays_exact(cite):
    mu = pytest.importorskip("muon")
    md = pytest.importorskip("mudata")
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    rna, prot = cite[:600, genes].copy(), cite[:600, ~genes].copy()
    prot.X = prot.X.toarray()  # muon 0.1.9's WNN fails on a sparse representation
    for mod, n in ((rna, 30), (prot, 10)):
        sc.pp.pca(mod, n_comps=n)
        sc.pp.neighbors(mod)
    mdata = md.MuData({"rna": rna, "prot": prot})
    mu.pp.neighbors(mdata, key_added="wnn")
    gbumap.tl.fit(mdata, neighbors_key="wnn", neighbors_any_rep=True, **FIT)
    assert mdata.uns["gbumap"]["neighbors"]["neighbors_key"] == "wnn"
    emb = mdata.obsm["X_gbumap"].astype(np.float64)
    parts = gbumap.get.modality_contributions(mdata)
    assert np.abs(_parts_sum(parts) - emb).max() <= 1e-5 * np.abs(emb).max()


def test_mudata_with_unaligned_cells_is_refused(cite):
    md = pytest.importorskip("mudata")
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    mdata = md.MuData({"rna": cite[:, genes].copy(), "prot": cite[:1_000, ~genes].copy()})
    with pytest.raises(ValueError, match="intersect_obs"):
        gbumap.tl.fit(mdata, **FIT)
    assert "gbumap" not in mdata.uns


# ---------------------------------------------------------------------- preparing counts
def test_normalize_modalities_prepares_each_by_its_convention_and_the_model_records_it(cite):
    pytest.importorskip("muon")
    adata = cite[:600].copy()
    before_x = adata.X.copy()
    gbumap.pp.normalize_modalities(adata)
    prepared = adata.layers["gbumap_normalized"]
    genes = (adata.var["feature_types"] == "GEX").to_numpy()
    # RNA: normalise_total over the genes + log1p, as the simulator's X; proteins: muon's CLR over these cells
    np.testing.assert_allclose(prepared[:, genes].toarray(), adata.X[:, genes].toarray(), rtol=1e-5, atol=1e-5)
    counts = adata.layers["counts"][:, ~genes].toarray().astype(np.float64)
    clr = np.log1p(counts / np.exp(np.log1p(counts).mean(axis=0)))
    np.testing.assert_allclose(prepared[:, ~genes].toarray(), clr, atol=1e-4)
    assert (adata.X != before_x).nnz == 0
    assert list(adata.uns["gbumap_normalized"]["methods"]) == ["log1p", "clr"]
    gbumap.tl.fit(adata, modality_key="feature_types", layer="gbumap_normalized", **FIT)
    assert list(adata.uns["gbumap"]["modalities"]["preparation"]) == ["log1p", "clr"]
    plain = cite[:600].copy()
    gbumap.tl.fit(plain, modality_key="feature_types", **FIT)
    assert list(plain.uns["gbumap"]["modalities"]["preparation"]) == ["as given", "as given"]


def test_normalize_modalities_refuses_what_it_does_not_know(cite):
    adata = cite[:200].copy()
    adata.var["kind"] = np.where(adata.var["feature_types"] == "GEX", "GEX", "ATAC")
    adata.layers["scaled"] = adata.X.toarray() - 1.0
    before = snapshot(adata)
    with pytest.raises(ValueError, match="No preparation known for modality 'ATAC'"):
        gbumap.pp.normalize_modalities(adata, "kind")
    with pytest.raises(ValueError, match="Modality 'GEX' has negative values"):
        gbumap.pp.normalize_modalities(adata, layer="scaled")
    with pytest.raises(ValueError, match="unknown modalities"):
        gbumap.pp.normalize_modalities(adata, methods={"RNA": "log1p"})
    assert_unchanged(adata, before)
    # a lazy layer is refused rather than loaded whole
    import dask.array as da

    adata.layers["lazy"] = da.from_array(adata.layers["counts"].toarray(), chunks=(50, -1))
    with pytest.raises(ValueError, match=r"layers\['lazy'\] is a lazy Dask array.*to_memory"):
        gbumap.pp.normalize_modalities(adata, layer="lazy")
    assert "gbumap_normalized" not in adata.layers and "gbumap_normalized" not in adata.uns


def test_normalize_modalities_on_a_mudata_then_fit(cite):
    pytest.importorskip("muon")
    md = pytest.importorskip("mudata")
    genes = (cite.var["feature_types"] == "GEX").to_numpy()
    mdata = md.MuData({"rna": cite[:600, genes].copy(), "prot": cite[:600, ~genes].copy()})
    gbumap.pp.normalize_modalities(mdata)
    assert "gbumap_normalized" in mdata.mod["rna"].layers and "gbumap_normalized" in mdata.mod["prot"].layers
    gbumap.tl.fit(mdata, layer="gbumap_normalized", **FIT)
    info = mdata.uns["gbumap"]["modalities"]
    assert list(info["layers"]) == ["gbumap_normalized"] * 2 and list(info["preparation"]) == ["log1p", "clr"]
    assert gbumap.get.reconstruction_error(mdata)["max_rel"] < 1e-5
