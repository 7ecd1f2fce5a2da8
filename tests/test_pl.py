"""Static plots in gbumap.pl: check what was drawn, against numbers computed independently."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import gbumap

GROUPBY = "bulk_labels"
GROUP = "CD14+ Monocyte"


@pytest.fixture
def adata(pbmc_plot_session):
    """The shared fitted object, read-only: no plotting function may write to it."""
    a = pbmc_plot_session
    uns_keys, obs_cols, obsm_keys = set(a.uns.keys()), list(a.obs.columns), set(a.obsm.keys())
    ranking = a.uns.get("rank_features_gbumap")
    yield a
    assert set(a.uns.keys()) == uns_keys
    assert list(a.obs.columns) == obs_cols
    assert set(a.obsm.keys()) == obsm_keys
    assert a.uns.get("rank_features_gbumap") is ranking


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _panels(fig: Figure) -> list:
    """Axes that are plot panels (not colorbars or other helpers)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_title()]


def _mean(adata, component, obs=None) -> pd.Series:
    values = gbumap.get.contributions(adata, obs=obs, reduction=component).astype(np.float64)
    return pd.Series(values.mean(axis=0), index=adata.uns["gbumap"]["feature_names"].astype(str))


@pytest.mark.parametrize("direction", ["any", "up"])
def test_top_feature_groups_matches_argmax(adata, direction):
    groups = gbumap.get.top_feature_groups(adata, n_top=6, direction=direction)
    l2 = gbumap.get.contributions(adata, reduction="l2")
    names = np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str)
    if direction == "up":  # only genes above the baseline in the cell compete
        X = adata[:, names].X
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        l2 = np.where(X > gbumap.get.model(adata).baseline_, l2, -1.0)
    winners = pd.Series(names[l2.argmax(axis=1)], index=adata.obs_names)
    wins = winners.value_counts()
    assert isinstance(groups.dtype, pd.CategoricalDtype)
    assert groups.name == "top_feature_gbumap"
    assert groups.index.equals(adata.obs_names)
    kept = list(groups.cat.categories)
    assert len(kept) == 6
    counts = wins[kept].to_numpy()
    assert (np.diff(counts) <= 0).all(), "categories are ordered by how often they win"
    assert counts.min() >= wins.drop(kept).max(), "no gene left out wins more often than one kept"
    coloured = groups.notna()
    assert (groups[coloured].astype(str) == winners[coloured]).all()
    assert not winners[~coloured].isin(kept).any()


def test_top_features_legend_and_grey_beneath(adata, tmp_path):
    n_top = 6
    fig = gbumap.pl.top_features(adata, n_top=n_top, return_fig=True, save=tmp_path / "top.png")
    assert isinstance(fig, Figure)
    (ax,) = _panels(fig)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == n_top
    assert set(legend) <= set(np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str))
    groups = gbumap.get.top_feature_groups(adata, n_top=n_top)
    assert legend == list(groups.cat.categories)
    n_other = int(groups.isna().sum())
    assert 0 < n_other < adata.n_obs
    assert f"{n_other:,} cells" in ax.get_title()
    (points,) = [c for c in ax.collections if len(c.get_offsets()) == adata.n_obs]
    faces = points.get_facecolors()
    grey = np.isclose(faces, to_rgba("lightgray")).all(axis=1)
    assert grey[:n_other].all(), "the grey cells are drawn first, beneath the coloured ones"
    assert not grey[n_other:].any()
    assert (tmp_path / "top.png").stat().st_size > 10_000


def test_rank_features_bars_use_stored_ranking(adata):
    n_genes = 4
    axes = gbumap.pl.rank_features(adata, GROUPBY, n_genes=n_genes, show=False)
    stored = adata.uns["rank_features_gbumap"]
    groups = list(stored["names"].dtype.names)
    assert len(axes) == len(groups) == adata.obs[GROUPBY].nunique()
    colours = dict(zip(adata.obs[GROUPBY].cat.categories, adata.uns[f"{GROUPBY}_colors"]))
    for ax, group in zip(axes, groups):
        assert ax.get_title().startswith(group)
        bars = ax.patches
        assert len(bars) == n_genes
        np.testing.assert_allclose([b.get_width() for b in bars], stored["scores"][group][:n_genes], rtol=1e-6)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(stored["names"][group][:n_genes])
        assert np.allclose(bars[0].get_facecolor(), to_rgba(colours[group]))


def test_rank_features_other_groupby_is_computed_without_writing(adata):
    axes = gbumap.pl.rank_features(adata, "louvain", n_genes=3, reduction=1, groups=["0", "3"], show=False)
    assert len(axes) == 2
    expected = gbumap.tl.rank_features(adata, "louvain", reduction=1, copy=True).uns["rank_features_gbumap"]
    for ax, group in zip(axes, ["0", "3"]):
        np.testing.assert_allclose([b.get_width() for b in ax.patches], expected["scores"][group][:3], rtol=1e-5)
        assert "signed" in ax.get_xlabel()


def test_rank_features_dotplot(adata):
    n_genes = 3
    axes = gbumap.pl.rank_features(adata, GROUPBY, n_genes=n_genes, kind="dotplot", show=False)
    main = axes["mainplot_ax"]
    stored = adata.uns["rank_features_gbumap"]
    groups = list(stored["names"].dtype.names)
    expected = [g for group in groups for g in stored["names"][group][:n_genes]]
    assert [t.get_text() for t in main.get_xticklabels()] == expected
    assert [t.get_text() for t in main.get_yticklabels()] == groups
    fig = gbumap.pl.rank_features(adata, GROUPBY, n_genes=n_genes, kind="dotplot", return_fig=True)
    assert isinstance(fig, Figure)


def test_reconstruction_title_carries_measured_error(adata):
    bins = 30
    fig = gbumap.pl.reconstruction(adata, bins=bins, return_fig=True)
    panels = _panels(fig)
    assert len(panels) == 3
    match = re.search(r"max relative error ([0-9.]+e[+-]\d+)", fig._suptitle.get_text())
    assert match, fig._suptitle.get_text()
    measured = gbumap.get.reconstruction_error(adata)
    assert float(match.group(1)) == pytest.approx(measured["max_rel"], rel=1e-2)
    assert measured["max_rel"] < 1e-5
    embedded, rebuilt, hist = panels
    (orig,) = [c for c in embedded.collections if len(c.get_offsets()) == adata.n_obs]
    (summed,) = [c for c in rebuilt.collections if len(c.get_offsets()) == adata.n_obs]
    expected = gbumap.get.contributions(adata).sum(axis=-1, dtype=np.float64)
    order = np.lexsort(np.asarray(orig.get_offsets()).T)
    np.testing.assert_allclose(np.asarray(summed.get_offsets())[order], expected[order], atol=1e-4)
    heights = [p.get_height() for p in hist.patches]
    assert len(heights) == bins and sum(heights) == adata.n_obs


@pytest.mark.parametrize("shared", [False, True])
def test_contribution_signed_axis_symmetric(adata, shared):
    genes = ["LYZ", "CST3", "NKG7"]
    fig = gbumap.pl.contribution(adata, genes, reduction=0, shared_scale=shared, return_fig=True)
    panels = _panels(fig)
    assert len(panels) == len(genes)
    values = gbumap.get.contributions(adata, genes=genes, reduction=0).astype(np.float64)
    limits = []
    for ax, gene, col in zip(panels, genes, values.T):
        assert ax.get_title().startswith(gene)
        (points,) = [c for c in ax.collections if len(c.get_offsets()) == adata.n_obs]
        lo, hi = points.get_clim()
        assert lo == pytest.approx(-hi)
        limits.append(hi)
        if not shared:
            assert hi == pytest.approx(np.abs(col).max(), rel=1e-5)
        assert points.get_cmap().name == "RdBu_r"
        # the colour values are the gene's signed contributions
        np.testing.assert_allclose(np.sort(points.get_array()), np.sort(col), rtol=1e-5, atol=1e-7)
    if shared:
        assert limits == pytest.approx([np.abs(values).max()] * len(genes), rel=1e-5)


def test_contribution_normed_l2_shares_all_genes(adata):
    fig = gbumap.pl.contribution(adata, "LYZ", reduction="normed_l2", return_fig=True)
    (ax,) = _panels(fig)
    (points,) = [c for c in ax.collections if len(c.get_offsets()) == adata.n_obs]
    names = list(np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str))
    # share of the cell's total over *all* genes, not over the one gene asked for
    share = gbumap.get.contributions(adata, reduction="normed_l2")[:, names.index("LYZ")]
    np.testing.assert_allclose(np.sort(points.get_array()), np.sort(share), rtol=1e-4)
    assert points.get_array().max() < 1


@pytest.mark.parametrize("component", ["l2", "normed_l2", 1])
def test_feature_bars_heights_are_means(adata, component):
    n_genes = 7
    ax = gbumap.pl.feature_bars(adata, groupby=GROUPBY, group=GROUP, reduction=component, n_genes=n_genes, show=False)
    mask = (adata.obs[GROUPBY] == GROUP).to_numpy()
    means = _mean(adata, component, obs=mask)
    rank = means.abs() if component == 1 else means
    top = rank.sort_values(ascending=False).index[:n_genes]
    assert len(ax.patches) == n_genes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(top)
    np.testing.assert_allclose([p.get_width() for p in ax.patches], means[top].to_numpy(), rtol=1e-5)
    assert f"{mask.sum():,} cells" in ax.get_title()
    if component == 1:
        positive = np.array([p.get_width() >= 0 for p in ax.patches])
        reds = np.array([p.get_facecolor()[0] > p.get_facecolor()[2] for p in ax.patches])
        assert (positive == reds).all()


def test_feature_bars_with_mask_and_names(adata):
    cells = adata.obs_names[:50]
    ax = gbumap.pl.feature_bars(adata, list(cells), n_genes=5, show=False)
    means = _mean(adata, "l2", obs=np.arange(50))
    np.testing.assert_allclose([p.get_width() for p in ax.patches], means.nlargest(5).to_numpy(), rtol=1e-5)
    assert gbumap.get.mean_contributions(adata, list(cells)).to_numpy() == pytest.approx(means.to_numpy(), rel=1e-5)


@pytest.mark.parametrize(
    "plot",
    [
        lambda a, path: gbumap.pl.top_features(a, n_top=4, save=path),
        lambda a, path: gbumap.pl.rank_features(a, GROUPBY, n_genes=2, save=path),
        lambda a, path: gbumap.pl.rank_features(a, GROUPBY, n_genes=2, kind="dotplot", save=path),
        lambda a, path: gbumap.pl.reconstruction(a, color=GROUPBY, save=path),
        lambda a, path: gbumap.pl.contribution(a, ["LYZ"], save=path),
        lambda a, path: gbumap.pl.feature_bars(a, n_genes=5, save=path),
    ],
    ids=["top_features", "rank_bars", "rank_dotplot", "reconstruction", "contribution", "feature_bars"],
)
def test_save_writes_png(adata, tmp_path, plot):
    path = tmp_path / "sub" / "figure.png"
    result = plot(adata, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
    # show=None in a non-interactive backend does not show: axes come back, like scanpy's show=False
    assert result is not None and not isinstance(result, Figure)


def test_any_model_key_and_basis(adata):
    # the same model under another key, without stored Jacobians (rebuilt from the model)
    other = adata.copy()
    other.uns["second"] = other.uns["gbumap"]
    other.obsm["X_second"] = other.obsm["X_gbumap"] * 1.0
    ax = gbumap.pl.feature_bars(other, key="second", n_genes=3, show=False)
    assert len(ax.patches) == 3
    np.testing.assert_allclose([p.get_width() for p in ax.patches], _mean(adata, "l2").nlargest(3), rtol=1e-4)
    fig = gbumap.pl.reconstruction(other, key="second", return_fig=True)
    assert fig._suptitle.get_text().startswith("second: max relative error")
    ax = gbumap.pl.top_features(other, n_top=3, key="second", basis="umap", show=False)
    assert ax.get_xlabel().lower().startswith("umap")


def test_bad_arguments(adata):
    with pytest.raises(ValueError, match="Axis 5"):
        gbumap.pl.contribution(adata, "LYZ", reduction=5)
    with pytest.raises(ValueError, match="reduction must be"):
        gbumap.pl.feature_bars(adata, reduction="l1")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        gbumap.pl.contribution(adata, ["LYZ", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="together"):
        gbumap.pl.feature_bars(adata, groupby=GROUPBY)
    with pytest.raises(KeyError, match="not_a_group"):
        gbumap.pl.feature_bars(adata, groupby=GROUPBY, group="not_a_group")
    with pytest.raises(ValueError, match="kind"):
        gbumap.pl.rank_features(adata, GROUPBY, kind="violin")


def test_reconstruction_accepts_legend_loc(pbmc_fitted):
    import matplotlib.pyplot as plt

    fig = gbumap.pl.reconstruction(pbmc_fitted, color="bulk_labels", legend_loc="on data", return_fig=True, show=False)
    assert len(fig.axes) >= 3
    plt.close(fig)


def test_component_is_a_deprecated_name_of_reduction(adata):
    import matplotlib.pyplot as plt

    with pytest.warns(FutureWarning, match=r"component=\.\.\.\) is deprecated"):
        old = gbumap.pl.feature_bars(adata, component=0, n_genes=4, show=False)
    new = gbumap.pl.feature_bars(adata, reduction=0, n_genes=4, show=False)
    assert [p.get_width() for p in old.patches] == [p.get_width() for p in new.patches]
    with pytest.warns(FutureWarning, match="component"):
        gbumap.pl.contribution(adata, "LYZ", component="normed_l2", return_fig=True)
    with pytest.warns(FutureWarning, match="component"):
        gbumap.pl.rank_features(adata, GROUPBY, component="l2", n_genes=2, show=False)
    plt.close("all")


def test_data_functions_moved_to_get_keep_deprecated_aliases(adata):
    with pytest.warns(FutureWarning, match="gbumap.get.top_feature_groups"):
        old = gbumap.pl.top_feature_groups(adata, n_top=4)
    assert old.equals(gbumap.get.top_feature_groups(adata, n_top=4))
    with pytest.warns(FutureWarning, match="gbumap.get.mean_contributions"):
        old = gbumap.pl.mean_contributions(adata, component="normed_l2")
    assert old.equals(gbumap.get.mean_contributions(adata, reduction="normed_l2"))
