"""tl.contrast: each gene's exact share of the shift between two groups' mean positions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _adata_snapshot import assert_unchanged, snapshot

import gbumap

GROUP, OTHER = "CD14+ Monocyte", "CD19+ B"


def _independent(adata, group, reference):
    """The same quantities from the dense contributions, with plain numpy."""
    contrib = gbumap.get.contributions(adata).astype(np.float64)  # cells × axes × genes
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    inside = labels == group
    other = ~inside if reference == "rest" else labels == reference
    terms = contrib[inside].mean(0) - contrib[other].mean(0)
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    delta = emb[inside].mean(0) - emb[other].mean(0)
    along = (delta / np.linalg.norm(delta)) @ terms
    genes = gbumap.get.mean_contributions(adata, groupby="bulk_labels", group=group, reduction=0).index
    return terms, delta, pd.Series(along, index=genes)


@pytest.mark.parametrize("reference", ["rest", OTHER])
def test_terms_sum_to_the_centroid_shift_and_match_numpy(pbmc_fitted, reference):
    adata = pbmc_fitted
    gbumap.tl.contrast(adata, "bulk_labels", GROUP, reference=reference, score="total", batch_size=128)
    table = gbumap.get.rank_features_df(adata, GROUP, key="contrast_gbumap")
    result = adata.uns["contrast_gbumap"]
    terms, delta, along = _independent(adata, GROUP, reference)
    length = np.linalg.norm(delta)

    # the identity: the genes' terms add up to the shift of the mean position (float32 model)
    assert np.abs(terms.sum(-1) - delta).max() / length < 1e-5
    gap = float(result["reconstruction_gap"][GROUP][0])
    assert gap < 1e-5, f"contrast reconstruction gap {gap:.1e}"
    np.testing.assert_allclose(np.asarray(result["centroid_shift"][GROUP]), delta, rtol=1e-10)
    assert table["scores"].sum() == pytest.approx(length, rel=1e-5)
    assert table["share"].sum() == pytest.approx(1.0, rel=1e-5)

    # every gene's score equals the independent projection (to float32 rounding of the shift's length,
    # the two sums run in different orders), and the order follows it
    np.testing.assert_allclose(
        table.set_index("names")["scores"], along.loc[table["names"]], rtol=1e-6, atol=1e-8 * length
    )
    assert (np.diff(table["scores"].to_numpy()) <= 0).all()
    across = np.linalg.norm(terms - np.outer(delta / length, along.to_numpy()), axis=0)
    expected_across = pd.Series(across, index=along.index).loc[table["names"]]
    # numpy side: float32 contributions
    np.testing.assert_allclose(table.set_index("names")["across"], expected_across, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reference", ["rest", OTHER])
def test_difference_context_and_covariance_parts_split_each_term_exactly(pbmc_fitted, reference):
    adata = pbmc_fitted
    gbumap.tl.contrast(adata, "bulk_labels", GROUP, reference=reference, key_added="total", score="total")
    gbumap.tl.contrast(adata, "bulk_labels", GROUP, reference=reference, key_added="expr")
    total = gbumap.get.rank_features_df(adata, GROUP, key="total").set_index("names")
    expr = gbumap.get.rank_features_df(adata, GROUP, key="expr").set_index("names")
    assert adata.uns["expr"]["params"]["score"] == "difference"
    # the default ranks by the difference part; the three parts add up to the whole term along the shift
    np.testing.assert_allclose(expr["scores"], expr["difference_term"])
    assert (np.diff(expr["scores"].to_numpy()) <= 0).all()
    parts = expr[["difference_term", "context_term", "covariance_term"]].sum(axis=1).loc[total.index]
    np.testing.assert_allclose(parts, total["scores"], rtol=1e-9, atol=1e-12)

    # the difference and context parts from their definitions, with numpy, along the shift
    model = gbumap.get.model(adata)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    inside = labels == GROUP
    other = ~inside if reference == "rest" else labels == reference
    jac = adata.obsm["gbumap_jacobian"].astype(np.float64)
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    loadings = model.components_.astype(np.float64)
    midpoint = (X[inside].mean(0) + X[other].mean(0)) / 2
    context = ((jac[inside].mean(0) - jac[other].mean(0)) @ loadings) * (midpoint - model.baseline_)
    difference = ((jac[inside].mean(0) + jac[other].mean(0)) / 2 @ loadings) * (X[inside].mean(0) - X[other].mean(0))
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    delta = emb[inside].mean(0) - emb[other].mean(0)
    unit = delta / np.linalg.norm(delta)
    for field, value in (("context_term", context), ("difference_term", difference)):
        along = pd.Series(unit @ value, index=adata.var_names)
        np.testing.assert_allclose(expr[field], along.loc[expr.index], rtol=1e-5, atol=1e-7)


def test_batches_do_not_change_the_result(pbmc_fitted):
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", [GROUP, OTHER], key_added="small", batch_size=37)
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", [GROUP, OTHER], key_added="large")
    for group in (GROUP, OTHER):
        small = gbumap.get.rank_features_df(pbmc_fitted, group, key="small")
        large = gbumap.get.rank_features_df(pbmc_fitted, group, key="large")
        np.testing.assert_allclose(small["scores"], large["scores"], rtol=1e-9, atol=1e-12)


def test_monocytes_against_b_cells_are_placed_by_their_markers(pbmc_fitted):
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", GROUP, reference=OTHER)
    top = set(gbumap.get.rank_features_df(pbmc_fitted, GROUP, key="contrast_gbumap")["names"].head(20))
    monocyte = {"LYZ", "S100A8", "S100A9", "FCN1", "CST3", "TYROBP", "FCER1G", "LST1", "AIF1", "FTL", "CFD"}
    assert len(top & monocyte) >= 2, f"top 20 genes of the monocyte–B shift: {sorted(top)}"


def test_round_trips_through_h5ad_and_zarr_and_scanpy_plots_it(pbmc_fitted, tmp_path):
    import anndata as ad
    import scanpy as sc

    slashed = "CD4+/CD25 T Reg"
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", [slashed, GROUP])
    before = gbumap.get.rank_features_df(pbmc_fitted, slashed, key="contrast_gbumap")
    pbmc_fitted.write_h5ad(tmp_path / "a.h5ad")
    pbmc_fitted.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        after = gbumap.get.rank_features_df(back, slashed, key="contrast_gbumap")
        pd.testing.assert_frame_equal(before, after, check_dtype=False)
    # scanpy's own plot of a ranking reads names and scores
    import matplotlib

    matplotlib.use("Agg")
    sc.pl.rank_genes_groups(back, key="contrast_gbumap", n_genes=5, show=False)
    matplotlib.pyplot.close("all")


def test_copy_returns_a_new_object_and_leaves_the_input(pbmc_fitted):
    before = snapshot(pbmc_fitted)
    out = gbumap.tl.contrast(pbmc_fitted, "bulk_labels", GROUP, copy=True)
    assert_unchanged(pbmc_fitted, before)
    assert "contrast_gbumap" in out.uns


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"groupby": "no_such_column", "group": GROUP}, KeyError, "bulk_labels"),
        ({"groupby": "bulk_labels", "group": "no such group"}, KeyError, "CD14+ Monocyte"),
        ({"groupby": "bulk_labels", "group": GROUP, "reference": "no such group"}, KeyError, "not among the groups"),
        ({"groupby": "bulk_labels", "group": GROUP, "reference": GROUP}, ValueError, "reference='rest'"),
        ({"groupby": "bulk_labels", "group": []}, ValueError, "at least one group"),
        ({"groupby": "bulk_labels", "group": GROUP, "key": "missing"}, Exception, "missing"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(pbmc_fitted, kwargs, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error, match=None) as info:
        gbumap.tl.contrast(pbmc_fitted, **kwargs)
    assert message in str(info.value)
    assert_unchanged(pbmc_fitted, before)


def test_a_one_cell_group_is_refused(pbmc_fitted):
    adata = pbmc_fitted
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    labels[0] = "alone"
    adata.obs["with_single"] = pd.Categorical(labels)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="fewer than 2 cells"):
        gbumap.tl.contrast(adata, "with_single", "alone")
    assert_unchanged(adata, before)


def test_integer_group_labels_work(pbmc_fitted):
    adata = pbmc_fitted
    codes = adata.obs["bulk_labels"].cat.codes.to_numpy()
    adata.obs["code"] = pd.Categorical(codes)
    gbumap.tl.contrast(adata, "code", "0", key_added="by_code")
    gbumap.tl.contrast(adata, "bulk_labels", adata.obs["bulk_labels"].cat.categories[0], key_added="by_name")
    by_code = gbumap.get.rank_features_df(adata, "0", key="by_code")
    by_name = gbumap.get.rank_features_df(adata, adata.obs["bulk_labels"].cat.categories[0], key="by_name")
    np.testing.assert_allclose(by_code["scores"], by_name["scores"])
