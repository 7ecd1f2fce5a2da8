"""Gene rankings: the default reads like biology, obeys its expression contract and round-trips."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import gbumap
from gbumap.tl._rank import SCORES, score_label

# Ten canonical markers per type, as in benchmarks/ranking_scores.py ("issue list").
CANONICAL = {
    "CD14+ Monocyte": ["LYZ", "S100A8", "S100A9", "FCN1", "CST3", "TYROBP", "FCER1G", "LGALS2", "LST1", "AIF1"],
    "CD56+ NK": ["GNLY", "NKG7", "GZMB", "PRF1", "GZMA", "CST7", "FGFBP2", "SPON2", "CTSW", "GZMH"],
    "CD19+ B": ["CD79A", "CD79B", "MS4A1", "BANK1", "CD37", "CD74", "HLA-DQA1", "HLA-DQB1", "SPIB", "BLK"],
}


@pytest.fixture(scope="module")
def pbmc_trained(pbmc_log_raw):
    """pbmc68k_reduced (log data) with a model trained long enough to have learned the map."""
    adata = pbmc_log_raw.copy()
    gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", n_steps=600, verbose=False)
    return adata


def _pts(adata, genes, cells):
    expressed = adata[:, genes].X > 0
    expressed = expressed.toarray() if hasattr(expressed, "toarray") else np.asarray(expressed)
    return expressed[cells].mean(0), expressed[~cells].mean(0)


def test_default_ranking_finds_canonical_markers(pbmc_trained):
    counts = {}
    for group, markers in CANONICAL.items():
        top = list(gbumap.get.rank_features_df(pbmc_trained, group)["names"].head(10))
        counts[group] = len(set(top) & set(markers))
    print("canonical markers in the default top 10:", counts)
    # benchmarks/ranking_scores.py measures 5 / 7 / 3 at the default training length
    assert counts["CD14+ Monocyte"] >= 4 and counts["CD56+ NK"] >= 6 and counts["CD19+ B"] >= 2


def test_logfc_ranking_misses_the_markers_the_default_finds(pbmc_trained):
    """The wave-1 default (log ratio) rewards genes absent elsewhere: it must stay an option, not the default."""
    gbumap.tl.rank_features(pbmc_trained, "bulk_labels", score="logfc", key_added="ratio")
    top = set(gbumap.get.rank_features_df(pbmc_trained, "CD14+ Monocyte", key="ratio")["names"].head(10))
    assert len(top & set(CANONICAL["CD14+ Monocyte"])) <= 1


@pytest.mark.parametrize("dataset", ["pbmc", "simulator"])
def test_default_top_genes_are_expressed_more_in_the_group(dataset, pbmc_trained):
    if dataset == "pbmc":
        adata, groupby = pbmc_trained, "bulk_labels"
    else:
        adata = gbumap.datasets.simulate(3000, 600, n_noise=50, n_housekeeping=30, trajectory_fraction=0.1,
                                         genes_per_type=15, genes_per_lineage=20, n_state_genes=10, random_state=0)
        gbumap.tl.glassbox_umap(adata, groupby="cell_type", mask_var=False, n_steps=300, verbose=False)
        groupby = "cell_type"
    labels = adata.obs[groupby].astype(str).to_numpy()
    for group in adata.uns["rank_features_gbumap"]["names"].dtype.names:
        table = gbumap.get.rank_features_df(adata, group).head(10)
        inside, outside = _pts(adata, table["names"].to_numpy(), labels == group)
        assert (inside > outside).all(), (group, table["names"].tolist())
        np.testing.assert_allclose(table["pct_nz_group"], inside, atol=1e-6)
        np.testing.assert_allclose(table["pct_nz_reference"], outside, atol=1e-6)


def test_scores_equal_an_independent_computation(pbmc_trained):
    """Every statistic recomputed with numpy/scipy from the dense contributions and expression."""
    from scipy import stats

    adata = pbmc_trained
    genes = np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str)
    l2 = gbumap.get.contributions(adata, reduction="l2").astype(np.float64)
    X = adata[:, genes].X.toarray()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    for score in SCORES:
        gbumap.tl.rank_features(adata, "bulk_labels", score=score, key_added="check", batch_size=97)
        for group in ("CD56+ NK", "Dendritic"):
            inside = labels == group
            a, b = l2[inside], l2[~inside]
            pts_in, pts_out = (X[inside] > 0).mean(0), (X[~inside] > 0).mean(0)
            expected = {
                "weighted_mean": a.mean(0) * np.maximum(pts_in - pts_out, 0),
                "t": stats.ttest_ind(a, b, equal_var=False).statistic,
                "logfc": np.log2((a.mean(0) + 1e-9) / (b.mean(0) + 1e-9)),
                "mean": a.mean(0),
            }[score]
            table = gbumap.get.rank_features_df(adata, group, key="check").set_index("names")
            got = table.loc[genes, "scores"].to_numpy(np.float64)
            np.testing.assert_allclose(got, np.nan_to_num(expected), rtol=2e-4, atol=1e-6, err_msg=f"{score}/{group}")
            pvals = stats.ttest_ind(a, b, equal_var=False).pvalue
            np.testing.assert_allclose(table.loc[genes, "pvals"], np.nan_to_num(pvals, nan=1.0), rtol=1e-3, atol=1e-12)
            np.testing.assert_allclose(table.loc[genes, "pct_nz_reference"], pts_out, atol=1e-6)
            np.testing.assert_allclose(table.loc[genes, "mean_contribution"], a.mean(0), rtol=1e-4, atol=1e-7)


def test_results_with_slashes_in_group_names_write_to_h5ad_and_zarr(pbmc_trained, tmp_path):
    import anndata as ad

    adata = pbmc_trained
    assert any("/" in g for g in adata.obs["bulk_labels"].cat.categories)
    before = gbumap.get.rank_features_df(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Writing zarr v2", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        adata.write_h5ad(tmp_path / "a.h5ad")
        adata.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        pd.testing.assert_frame_equal(gbumap.get.rank_features_df(back), before)
        reg = back.uns["rank_features_gbumap"]
        assert "CD4+/CD25 T Reg" in reg["names"].dtype.names


def test_rankings_written_by_gbumap_0_1_still_read():
    from pathlib import Path

    import anndata as ad

    old = ad.read_h5ad(Path(__file__).parent / "data" / "wave1_model.h5ad")
    table = gbumap.get.rank_features_df(old, "a")
    assert table["pct_nz_group"].between(0, 1).all() and len(table) == old.n_vars
    assert np.isfinite(table["mean_contribution"]).all()


@pytest.mark.parametrize("score", list(SCORES))
def test_bar_plot_labels_name_the_statistic_drawn(pbmc_trained, score):
    import matplotlib.pyplot as plt

    gbumap.tl.rank_features(pbmc_trained, "bulk_labels", score=score, key_added=f"bars_{score}")
    axes = gbumap.pl.rank_features(pbmc_trained, "bulk_labels", n_genes=4, rank_key=f"bars_{score}", show=False)
    expected = score_label(score, "l2")
    assert all(ax.get_xlabel() == expected for ax in axes)
    assert expected in axes[0].figure._suptitle.get_text()
    stored = pbmc_trained.uns[f"bars_{score}"]
    group = stored["names"].dtype.names[0]
    np.testing.assert_allclose([b.get_width() for b in axes[0].patches], stored["scores"][group][:4], rtol=1e-6)
    plt.close("all")


def test_plot_recomputes_when_another_score_is_asked(pbmc_trained):
    import matplotlib.pyplot as plt

    stored = pbmc_trained.uns["rank_features_gbumap"]
    axes = gbumap.pl.rank_features(pbmc_trained, "bulk_labels", n_genes=3, score="t", show=False)
    assert axes[0].get_xlabel() == score_label("t", "l2")
    assert pbmc_trained.uns["rank_features_gbumap"] is stored  # nothing written
    plt.close("all")


def test_top_feature_of_a_cell_is_a_gene_it_expresses(pbmc_trained):
    adata = pbmc_trained
    winners = gbumap.get.top_feature_groups(adata, n_top=None)
    baseline = gbumap.get.model(adata).baseline_
    genes = np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str)
    X = adata[:, genes].X.toarray()
    col = pd.Index(genes).get_indexer(winners.astype(str))
    assert (X[np.arange(adata.n_obs), col] > baseline[col]).all()
    for gene in winners.cat.categories[:10]:
        won = (winners == gene).to_numpy()
        inside, outside = _pts(adata, [gene], won)
        assert inside[0] > outside[0], gene
    anything = gbumap.get.top_feature_groups(adata, n_top=None, direction="any")
    col_any = pd.Index(genes).get_indexer(anything.astype(str))
    assert (X[np.arange(adata.n_obs), col_any] <= baseline[col_any]).any()  # without the contract, some lose


def test_score_and_direction_are_checked(pbmc_trained):
    with pytest.raises(ValueError, match="score must be one of 'weighted_mean'"):
        gbumap.tl.rank_features(pbmc_trained, "bulk_labels", score="wilcoxon")
    with pytest.raises(ValueError, match="direction must be 'up' or 'any'"):
        gbumap.get.top_feature_groups(pbmc_trained, direction="down")


# --------------------------------------------------------------------------- small groups
def _small_group_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, gbumap.tl.SmallGroupWarning)]


def test_small_groups_warn_below_the_measured_threshold_and_not_at_it(pbmc_trained):
    from gbumap.tl._rank import MIN_GROUP_SIZE

    # benchmarks/small_groups.py: the smallest size at which subsets keep 80% of the whole group's top 10
    assert MIN_GROUP_SIZE == 30
    adata = pbmc_trained
    labels = np.full(adata.n_obs, "rest", dtype=object)
    monocytes = np.flatnonzero((adata.obs["bulk_labels"] == "CD14+ Monocyte").to_numpy())
    labels[monocytes[:29]] = "below"
    labels[monocytes[29:59]] = "at"
    adata.obs["sized"] = pd.Categorical(labels)
    with pytest.warns(gbumap.tl.SmallGroupWarning) as caught:
        gbumap.tl.rank_features(adata, "sized", key_added="sized_rank")
    (message,) = _small_group_warnings(caught)
    assert issubclass(gbumap.tl.SmallGroupWarning, UserWarning)
    assert "'below' (29 cells)" in message and "'at'" not in message and "'rest'" not in message
    assert "fewer than 30 cells" in message and "merge the group" in message and "groups=" in message
    assert "uns['sized_rank']['group_sizes']" in message
    assert caught[0].filename == __file__, "the warning points at the caller, not at gbumap"
    # the groups at and above the threshold alone: no warning at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gbumap.tl.rank_features(adata, "sized", groups=["at", "rest"], key_added="sized_rank")
    assert list(adata.uns["sized_rank"]["names"].dtype.names) == ["at", "rest"]
    del adata.obs["sized"], adata.uns["sized_rank"]


def test_small_groups_of_pbmc_are_named_with_their_sizes(pbmc_trained):
    with pytest.warns(gbumap.tl.SmallGroupWarning) as caught:
        gbumap.tl.rank_features(pbmc_trained, "bulk_labels", key_added="bulk_check")
    (message,) = _small_group_warnings(caught)
    for named in ("'CD4+/CD45RO+ Memory' (19 cells)", "'CD34+' (13 cells)", "'CD4+/CD45RA+/CD25- Naive T' (8 cells)"):
        assert named in message
    assert "CD56+ NK" not in message, "31 cells is above the threshold"
    del pbmc_trained.uns["bulk_check"]


def test_glassbox_umap_warns_at_the_callers_line(pbmc_log_raw):
    adata = pbmc_log_raw[:, :60].copy()
    with pytest.warns(gbumap.tl.SmallGroupWarning, match=r"'CD34\+' \(13 cells\)") as caught:
        gbumap.tl.glassbox_umap(adata, groupby="bulk_labels", n_steps=5, verbose=False)
    (warning,) = [w for w in caught if issubclass(w.category, gbumap.tl.SmallGroupWarning)]
    assert warning.filename == __file__


def test_randomization_check_warns_once(pbmc_trained):
    with pytest.warns(gbumap.tl.SmallGroupWarning) as caught:
        gbumap.tl.randomization_check(pbmc_trained.copy(), "bulk_labels", n_randomizations=2)
    assert len(_small_group_warnings(caught)) == 1


def test_group_sizes_are_recorded_and_survive_h5ad(pbmc_trained, tmp_path):
    import anndata as ad

    from gbumap.get._rank import _ranked_group_sizes

    adata = pbmc_trained
    result = adata.uns["rank_features_gbumap"]
    counts = adata.obs["bulk_labels"].value_counts()
    assert set(result["group_sizes"].dtype.names) == set(counts.index)
    assert {g: int(result["group_sizes"][g][0]) for g in counts.index} == counts.to_dict()
    assert _ranked_group_sizes(adata, "rank_features_gbumap")["CD4+/CD45RA+/CD25- Naive T"] == 8
    # a subset of groups records only those
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gbumap.tl.SmallGroupWarning)
        gbumap.tl.rank_features(adata, "bulk_labels", groups=["CD34+", "CD19+ B"], key_added="two")
    assert _ranked_group_sizes(adata, "two") == {"CD34+": 13, "CD19+ B": 95}
    before = gbumap.get.rank_features_df(adata)
    scanpy_before = sc.get.rank_genes_groups_df(adata, "CD34+", key="rank_features_gbumap")
    adata.write_h5ad(tmp_path / "sizes.h5ad")
    back = ad.read_h5ad(tmp_path / "sizes.h5ad")
    assert _ranked_group_sizes(back, "rank_features_gbumap") == counts.to_dict()
    assert _ranked_group_sizes(back, "two") == {"CD34+": 13, "CD19+ B": 95}
    pd.testing.assert_frame_equal(gbumap.get.rank_features_df(back), before)
    pd.testing.assert_frame_equal(
        sc.get.rank_genes_groups_df(back, "CD34+", key="rank_features_gbumap"), scanpy_before
    )
    assert len(scanpy_before) == adata.uns["gbumap"]["feature_names"].shape[0]
    # a ranking written before sizes were recorded: counted from obs[groupby]
    del back.uns["two"]["group_sizes"]
    assert _ranked_group_sizes(back, "two") == {"CD34+": 13, "CD19+ B": 95}
    del adata.uns["two"]
