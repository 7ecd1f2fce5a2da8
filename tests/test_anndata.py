"""The scanpy plugin: tl/get, the uns registry, .h5ad round trips, query mapping."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import gbumap

FAST = dict(n_steps=60, verbose=False)


def test_fit_writes_documented_keys_only(pbmc):
    before_obsm, before_uns = set(pbmc.obsm), set(pbmc.uns)
    X0 = pbmc.X.copy()
    assert gbumap.tl.fit(pbmc, **FAST) is None
    assert set(pbmc.obsm) - before_obsm == {"X_gbumap"}
    assert set(pbmc.uns) - before_uns == {"gbumap"}
    emb = pbmc.obsm["X_gbumap"]
    assert emb.shape == (pbmc.n_obs, 2) and emb.dtype == np.float32
    reg = pbmc.uns["gbumap"]
    assert reg["format_version"] == 3 and reg["params"]["baseline"] == "mean"
    assert len(reg["feature_names"]) == pbmc.var["highly_variable"].sum()  # HVGs used by default
    assert reg["projection"]["components"].shape == (50, len(reg["feature_names"]))
    assert reg["reconstruction_error"]["max_rel"] < 1e-5
    np.testing.assert_array_equal(pbmc.X, X0)
    ax = sc.pl.embedding(pbmc, basis="gbumap", color="bulk_labels", show=False)
    assert len(ax.collections) >= 1


def test_copy_true_leaves_input_untouched(pbmc):
    snapshot = pbmc.copy()
    out = gbumap.tl.fit(pbmc, copy=True, **FAST)
    assert isinstance(out, ad.AnnData) and "X_gbumap" in out.obsm
    assert "X_gbumap" not in pbmc.obsm and "gbumap" not in pbmc.uns
    assert set(pbmc.uns) == set(snapshot.uns) and set(pbmc.obsm) == set(snapshot.obsm)
    np.testing.assert_array_equal(pbmc.X, snapshot.X)


def test_layer_input_is_not_modified(pbmc):
    pbmc.layers["lognorm"] = pbmc.raw.to_adata()[:, pbmc.var_names].X.copy()
    before = pbmc.layers["lognorm"].copy()
    gbumap.tl.glassbox_umap(pbmc, layer="lognorm", mask_var=False, **FAST)
    assert (pbmc.layers["lognorm"] != before).nnz == 0
    assert pbmc.uns["gbumap"]["input"]["layer"] == "lognorm"
    assert gbumap.get.reconstruction_error(pbmc)["max_rel"] < 1e-5


def test_h5ad_round_trip_is_exact(pbmc_fitted, tmp_path):
    path = tmp_path / "model.h5ad"
    pbmc_fitted.write_h5ad(path)
    back = ad.read_h5ad(path)
    # reconstruction from the stored data alone
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5
    before = gbumap.get.model(pbmc_fitted)
    after = gbumap.get.model(back)
    for name, value in before.encoder_.state_dict().items():
        assert np.array_equal(value.numpy(), after.encoder_.state_dict()[name].numpy())
    names = back.uns["gbumap"]["feature_names"]
    X = back[:, names].X
    np.testing.assert_allclose(after.transform(X), back.obsm["X_gbumap"], atol=1e-5)
    np.testing.assert_allclose(
        gbumap.get.contributions(back, obs=np.arange(50)),
        gbumap.get.contributions(pbmc_fitted, obs=np.arange(50)),
        atol=1e-6,
    )
    np.testing.assert_allclose(after.compute_contributions(X[:50]), before.compute_contributions(X[:50]), atol=1e-6)


def test_zarr_round_trip_keeps_a_usable_model(pbmc_fitted, tmp_path):
    # zarr reads string arrays back as numpy's StringDType; the registry must still decode them
    pbmc_fitted.write_zarr(tmp_path / "model.zarr")
    back = ad.read_zarr(tmp_path / "model.zarr")
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-5
    np.testing.assert_allclose(
        gbumap.get.contributions(back, obs=np.arange(30)),
        gbumap.get.contributions(pbmc_fitted, obs=np.arange(30)),
        atol=1e-6,
    )


def test_unknown_registry_version_is_refused(pbmc_fitted):
    pbmc_fitted.uns["gbumap"] = dict(pbmc_fitted.uns["gbumap"], format_version=99)
    with pytest.raises(ValueError, match="format 99"):
        gbumap.get.model(pbmc_fitted)


def test_missing_key_lists_available(pbmc_fitted):
    with pytest.raises(KeyError, match="'gbumap'"):
        gbumap.get.model(pbmc_fitted, key="nope")
    with pytest.raises(KeyError, match="X_pca"):
        gbumap.tl.fit(pbmc_fitted, use_rep="X_nope")


def test_get_contributions_subsets_and_frames(pbmc_fitted):
    genes = ["LYZ", "CST3", "NKG7"]
    full = gbumap.get.contributions(pbmc_fitted)
    names = list(pbmc_fitted.uns["gbumap"]["feature_names"])
    sub = gbumap.get.contributions(pbmc_fitted, genes=genes, obs=np.arange(10))
    np.testing.assert_allclose(sub, full[:10][:, :, [names.index(g) for g in genes]], rtol=1e-6, atol=1e-7)
    embedding = pbmc_fitted.obsm["X_gbumap"]
    np.testing.assert_allclose(full.sum(-1), embedding, atol=1e-5 * np.abs(embedding).max())
    normed = gbumap.get.contributions(pbmc_fitted, reduction="normed_l2")
    np.testing.assert_allclose(normed.sum(1), 1.0, rtol=1e-5)
    mask = (pbmc_fitted.obs["bulk_labels"] == "CD56+ NK").to_numpy()
    df = gbumap.get.contributions(pbmc_fitted, genes=genes, obs=mask, reduction="l2", as_frame=True)
    assert list(df.columns) == ["cell", "gene", "contribution"] and len(df) == mask.sum() * 3
    tidy = gbumap.get.contributions(pbmc_fitted, genes="LYZ", obs=pbmc_fitted.obs_names[:4], as_frame=True)
    assert len(tidy) == 4 * 2 and set(tidy["axis"]) == {0, 1}
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        gbumap.get.contributions(pbmc_fitted, genes=["NOT_A_GENE"])


def test_compressed_storage_is_lossless_and_small(pbmc_fitted):
    jac = pbmc_fitted.obsm["gbumap_jacobian"]
    n_genes = len(pbmc_fitted.uns["gbumap"]["feature_names"])
    assert jac.shape == (pbmc_fitted.n_obs, 2, 50)
    ratio = jac.nbytes / (pbmc_fitted.n_obs * 2 * n_genes * 4)
    assert ratio == pytest.approx(50 / n_genes)
    # rebuilt from storage equals computed from the model
    stored = gbumap.get.contributions(pbmc_fitted, obs=np.arange(100))
    model = gbumap.get.model(pbmc_fitted)
    X = pbmc_fitted[:100, pbmc_fitted.uns["gbumap"]["feature_names"]].X
    np.testing.assert_allclose(stored, model.compute_contributions(X), atol=1e-6)


def test_top_gene_layer_for_scanpy_plots(pbmc_fitted):
    layer = pbmc_fitted.layers["gbumap_l2"]
    assert layer.shape == pbmc_fitted.shape
    assert np.all(np.diff(layer.indptr) == 10)
    l2 = gbumap.get.contributions(pbmc_fitted, obs=[0], reduction="l2")[0]
    names = pbmc_fitted.uns["gbumap"]["feature_names"]
    top = set(names[np.argsort(-l2)[:10]])
    assert set(pbmc_fitted.var_names[layer[0].indices]) == top
    sc.pl.embedding(pbmc_fitted, basis="gbumap", color="LYZ", layer="gbumap_l2", show=False)


def test_rank_features_scanpy_format_and_markers(pbmc_fitted):
    key = "rank_features_gbumap"
    res = pbmc_fitted.uns[key]
    assert res["params"]["groupby"] == "bulk_labels" and res["params"]["score"] == "weighted_mean"
    mono = sc.get.rank_genes_groups_df(pbmc_fitted, "CD14+ Monocyte", key=key)
    assert {"names", "scores", "logfoldchanges", "pvals", "pvals_adj"} <= set(mono.columns)
    assert mono["scores"].is_monotonic_decreasing
    top_mono = set(mono["names"].head(10))
    top_nk = set(sc.get.rank_genes_groups_df(pbmc_fitted, "CD56+ NK", key=key)["names"].head(10))
    print("monocyte top 10:", sorted(top_mono), "NK top 10:", sorted(top_nk))
    monocyte_markers = {
        "LYZ", "S100A8", "S100A9", "CD14", "FCN1", "VCAN", "CST3", "FTL", "TYROBP", "LST1", "AIF1", "CFD",
        "FCER1G", "CTSS", "PSAP", "LGALS2", "C1QA", "C1QB", "LYPD2", "HES4", "FCGR3A", "MS4A7", "SERPINA1",
        "CD68", "RBP7", "BST1",
    }
    nk_markers = {
        "GNLY", "NKG7", "PRF1", "GZMB", "GZMA", "GZMH", "CST7", "KLRD1", "KLRF1", "CTSW", "FGFBP2", "CD7",
        "SPON2", "CLIC3", "KLRB1", "MATK", "XCL1", "XCL2", "CD160", "CCL4", "CCL5",
    }
    assert len(top_mono & monocyte_markers) >= 3
    assert len(top_nk & nk_markers) >= 3
    table = gbumap.get.rank_features_df(pbmc_fitted, "CD56+ NK")
    assert {"pct_nz_group", "pct_nz_reference", "mean_contribution", "mean_expression"} <= set(table.columns)
    assert table["pct_nz_group"].between(0, 1).all() and table["pct_nz_reference"].between(0, 1).all()
    assert list(table["names"]) == list(sc.get.rank_genes_groups_df(pbmc_fitted, "CD56+ NK", key=key)["names"])
    dp = sc.pl.rank_genes_groups_dotplot(pbmc_fitted, key=key, n_genes=3, show=False, return_fig=True)
    assert dp is not None


def test_rank_features_signed_axis(pbmc_fitted):
    gbumap.tl.rank_features(pbmc_fitted, "bulk_labels", reduction=0, key_added="axis0")
    df = sc.get.rank_genes_groups_df(pbmc_fitted, "CD19+ B", key="axis0")
    assert df["scores"].is_monotonic_decreasing and (df["scores"] < 0).any()


def test_transform_query_and_missing_genes(pbmc_fitted, tmp_path):
    query = pbmc_fitted[:120].copy()
    for k in ("X_gbumap", "gbumap_jacobian"):
        del query.obsm[k]
    del query.uns["gbumap"]
    gbumap.tl.transform(query, pbmc_fitted)
    np.testing.assert_allclose(query.obsm["X_gbumap"], pbmc_fitted.obsm["X_gbumap"][:120], atol=1e-5)
    assert gbumap.get.reconstruction_error(query)["max_rel"] < 1e-5

    # from a registry read back from disk
    pbmc_fitted.write_h5ad(tmp_path / "ref.h5ad")
    reg = ad.read_h5ad(tmp_path / "ref.h5ad").uns["gbumap"]
    genes = list(reg["feature_names"])
    shuffled = query[:, list(reversed(query.var_names))].copy()
    gbumap.tl.transform(shuffled, reg, key_added="mapped")
    np.testing.assert_allclose(shuffled.obsm["X_mapped"], query.obsm["X_gbumap"], atol=1e-5)

    partial = query[:, [g for g in query.var_names if g not in genes[:3]]].copy()
    snapshot = set(partial.obsm)
    with pytest.raises(KeyError, match=genes[0]):
        gbumap.tl.transform(partial, pbmc_fitted)
    assert set(partial.obsm) == snapshot
    gbumap.tl.transform(partial, pbmc_fitted, fill_missing="baseline")
    assert gbumap.get.reconstruction_error(partial)["max_rel"] < 1e-5
    filled = gbumap.get.contributions(partial, genes=genes[:3])
    assert np.abs(filled).max() == 0  # filled at the baseline: no contribution


def test_use_rep_x_pca_verified_gives_gene_contributions(pbmc):
    sc.pp.pca(pbmc, n_comps=30)
    sc.pp.neighbors(pbmc, use_rep="X_pca", n_neighbors=15)
    gbumap.tl.fit(pbmc, use_rep="X_pca", neighbors_key="neighbors", **FAST)
    reg = pbmc.uns["gbumap"]
    assert reg["attribution"] == "genes" and reg["neighbors"]["source"] == "scanpy"
    assert len(reg["feature_names"]) > 30
    gbumap.tl.contributions(pbmc)
    assert gbumap.get.reconstruction_error(pbmc)["max_rel"] < 1e-5


def test_use_rep_unverifiable_falls_back_to_components(pbmc):
    with pytest.warns(UserWarning, match="per column"):
        gbumap.tl.fit(pbmc, use_rep="X_pca", **FAST)
    reg = pbmc.uns["gbumap"]
    assert reg["attribution"] == "representation" and len(reg["feature_names"]) == 50
    gbumap.tl.contributions(pbmc)
    assert gbumap.get.reconstruction_error(pbmc)["max_rel"] < 1e-5


def test_neighbors_on_other_representation_is_refused(pbmc):
    sc.pp.neighbors(pbmc, use_rep="X_pca", n_neighbors=15)
    with pytest.raises(ValueError, match="computed on 'X_pca'"):
        gbumap.tl.fit(pbmc, neighbors_key="neighbors", **FAST)
    assert "gbumap" not in pbmc.uns


def test_two_models_side_by_side(pbmc):
    gbumap.tl.fit(pbmc, key_added="m1", **FAST)
    gbumap.tl.fit(pbmc, key_added="m2", baseline="zero", **FAST)
    assert pbmc.uns["m1"]["params"]["baseline"] == "mean" and pbmc.uns["m2"]["params"]["baseline"] == "zero"
    gbumap.tl.contributions(pbmc, key="m2")
    assert "m2_jacobian" in pbmc.obsm and "m1_jacobian" not in pbmc.obsm


def test_normed_l2_of_a_gene_subset_is_a_share_of_all_genes(pbmc_fitted):
    full = gbumap.get.contributions(pbmc_fitted, reduction="normed_l2", obs=np.arange(20))
    names = list(pbmc_fitted.uns["gbumap"]["feature_names"])
    sub = gbumap.get.contributions(pbmc_fitted, genes=["LYZ", "NKG7"], reduction="normed_l2", obs=np.arange(20))
    np.testing.assert_allclose(sub, full[:, [names.index("LYZ"), names.index("NKG7")]], rtol=1e-6)
