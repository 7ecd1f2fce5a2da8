"""Rotation-free views (radial, tangential, along a contrast), a cell against its group, and fast group sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap._view import model_view

GROUP, OTHER = "CD14+ Monocyte", "CD19+ B"
# a rotation by 0.7 rad composed with a mirror: the same map, other axes
ANGLE = 0.7
ROTATE = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]]) @ np.diag([1.0, -1.0])


def _rotated(adata):
    """A copy whose stored model draws the map turned and mirrored by ``ROTATE`` (Jacobians and embedding too)."""
    out = adata.copy()
    state = out.uns["gbumap"]["encoder"]["state"]
    last = max((k for k in state if k.endswith("weight")), key=lambda k: int(k.split("__")[1]))
    state[last] = (ROTATE @ state[last].astype(np.float64)).astype(state[last].dtype)
    out.obsm["X_gbumap"] = (out.obsm["X_gbumap"].astype(np.float64) @ ROTATE.T).astype(np.float32)
    jacobian = out.obsm["gbumap_jacobian"].astype(np.float64)
    out.obsm["gbumap_jacobian"] = np.einsum("ed,ndk->nek", ROTATE, jacobian).astype(np.float32)
    return out


def _centres(adata, labels):
    contrib = gbumap.get.contributions(adata).astype(np.float64)
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    return contrib, emb, {g: (contrib[labels == g].mean(0), emb[labels == g].mean(0)) for g in set(labels)}


def test_group_sums_equal_the_sum_of_contributions_with_and_without_stored_jacobians(pbmc_fitted):
    view = model_view(pbmc_fitted)
    rows = np.flatnonzero(pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy() == GROUP)
    expected = gbumap.get.contributions(pbmc_fitted).astype(np.float64)[rows].sum(0)
    stored = view.group_sums(pbmc_fitted, rows, batch_size=17).contributions
    del pbmc_fitted.obsm["gbumap_jacobian"]
    computed = view.group_sums(pbmc_fitted, rows, batch_size=1000).contributions
    scale = np.abs(expected).max()
    assert np.abs(stored - expected).max() < 1e-6 * scale
    assert np.abs(computed - expected).max() < 1e-6 * scale


def test_group_sums_without_pca(wine_std):
    import anndata as ad

    X, y = wine_std
    adata = ad.AnnData(X)
    adata.obs["y"] = pd.Categorical(y.astype(str))
    gbumap.tl.fit(adata, n_pcs=None, n_steps=50, verbose=False)
    view = model_view(adata)
    rows = np.flatnonzero(y == 1)
    expected = gbumap.get.contributions(adata).astype(np.float64)[rows].sum(0)
    got = view.group_sums(adata, rows, batch_size=7).contributions
    assert np.abs(got - expected).max() < 1e-6 * np.abs(expected).max()
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    assert np.abs(got.sum(-1) - emb[rows].sum(0)).max() < 1e-4 * np.abs(emb[rows].sum(0)).max()


def test_radial_values_sum_to_the_distance_from_the_group_centre_and_match_numpy(pbmc_fitted):
    labels = pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy()
    radial = gbumap.get.oriented_contributions(pbmc_fitted, groupby="bulk_labels", batch_size=100)
    tangential = gbumap.get.oriented_contributions(pbmc_fitted, frame="tangential", groupby="bulk_labels")
    contrib, emb, centres = _centres(pbmc_fitted, labels)
    distance = np.array([np.linalg.norm(emb[i] - centres[labels[i]][1]) for i in range(len(labels))])
    # the identity: each cell's radial values add up to its distance from its group's mean position
    assert np.abs(radial.sum(axis=1).to_numpy() - distance).max() < 1e-5 * distance.max()

    i = 123
    terms = contrib[i] - centres[labels[i]][0]
    unit = (emb[i] - centres[labels[i]][1]) / distance[i]
    np.testing.assert_allclose(radial.iloc[i].to_numpy(), unit @ terms, atol=1e-6)
    across = np.linalg.norm(terms - np.outer(unit, unit @ terms), axis=0)
    np.testing.assert_allclose(tangential.iloc[i].to_numpy(), across, atol=1e-6)
    assert (tangential.to_numpy() >= 0).all()
    assert list(radial.columns) == list(pbmc_fitted.var_names)
    assert list(radial.index) == list(pbmc_fitted.obs_names)


def test_contrast_frame_averages_to_the_contrast_scores(pbmc_fitted):
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", GROUP, reference=OTHER, score="total")
    along = gbumap.get.oriented_contributions(pbmc_fitted, ["LYZ", "CD79A", "CST3"], frame="contrast")
    table = gbumap.get.rank_features_df(pbmc_fitted, GROUP, key="contrast_gbumap").set_index("names")
    inside = pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy() == GROUP
    np.testing.assert_allclose(along[inside].mean(0), table.loc[along.columns, "scores"], rtol=1e-5, atol=1e-7)
    # over all genes a cell's values add up to its position along the shift, measured from the reference's mean
    full = gbumap.get.oriented_contributions(pbmc_fitted, frame="contrast", obs=np.arange(50))
    emb = pbmc_fitted.obsm["X_gbumap"].astype(np.float64)
    ref_mean = emb[pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy() == OTHER].mean(0)
    shift = np.asarray(pbmc_fitted.uns["contrast_gbumap"]["centroid_shift"][GROUP])
    expected = (emb[:50] - ref_mean) @ (shift / np.linalg.norm(shift))
    np.testing.assert_allclose(full.sum(1), expected, atol=1e-4 * np.abs(emb).max())


def test_every_view_is_the_same_for_a_rotated_and_mirrored_model(pbmc_fitted):
    turned = _rotated(pbmc_fitted)
    # the rotated model really draws the rotated map, and its contributions rotate with it
    np.testing.assert_allclose(
        gbumap.get.model(turned).transform(pbmc_fitted.X[:20]), turned.obsm["X_gbumap"][:20], atol=1e-4
    )
    assert np.abs(gbumap.get.contributions(pbmc_fitted)[:, 0] - gbumap.get.contributions(turned)[:, 0]).max() > 1e-3
    genes = ["LYZ", "CD74", "NKG7", "CST3"]
    for frame in ("radial", "tangential"):
        a = gbumap.get.oriented_contributions(pbmc_fitted, genes, frame=frame, groupby="bulk_labels")
        b = gbumap.get.oriented_contributions(turned, genes, frame=frame, groupby="bulk_labels")
        np.testing.assert_allclose(a, b, atol=1e-5)
    for adata in (pbmc_fitted, turned):
        gbumap.tl.contrast(adata, "bulk_labels", GROUP, reference=OTHER)
    a = gbumap.get.oriented_contributions(pbmc_fitted, genes, frame="contrast")
    b = gbumap.get.oriented_contributions(turned, genes, frame="contrast")
    np.testing.assert_allclose(a, b, atol=1e-5)
    first = gbumap.get.rank_features_df(pbmc_fitted, GROUP, key="contrast_gbumap")
    second = gbumap.get.rank_features_df(turned, GROUP, key="contrast_gbumap")
    np.testing.assert_allclose(first["scores"], second["scores"], atol=1e-6)
    cell = pbmc_fitted.obs_names[5]
    np.testing.assert_allclose(
        gbumap.get.cell_contrast(pbmc_fitted, cell, "bulk_labels")["scores"],
        gbumap.get.cell_contrast(turned, cell, "bulk_labels")["scores"],
        atol=1e-6,
    )


def test_a_cell_against_its_group_is_its_radial_row(pbmc_fitted):
    cell = pbmc_fitted.obs_names[42]
    table = gbumap.get.cell_contrast(pbmc_fitted, cell, "bulk_labels")
    radial = gbumap.get.oriented_contributions(pbmc_fitted, groupby="bulk_labels", obs=[cell]).iloc[0]
    np.testing.assert_allclose(table.set_index("names")["scores"], radial.loc[table["names"]], atol=1e-9)
    assert table["scores"].sum() == pytest.approx(table.attrs["distance"], rel=1e-5)
    assert table["share"].sum() == pytest.approx(1.0, rel=1e-5)
    assert (np.diff(table["scores"].to_numpy()) <= 0).all()
    # against another group: the offset is measured from that group's mean position
    other = gbumap.get.cell_contrast(pbmc_fitted, 42, "bulk_labels", reference=OTHER)
    emb = pbmc_fitted.obsm["X_gbumap"].astype(np.float64)
    ref = emb[pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy() == OTHER].mean(0)
    np.testing.assert_allclose(other.attrs["offset"], emb[42] - ref, rtol=1e-9)
    assert other["scores"].sum() == pytest.approx(np.linalg.norm(emb[42] - ref), rel=1e-5)


def test_views_survive_an_h5ad_round_trip(pbmc_fitted, tmp_path):
    import anndata as ad

    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", GROUP)
    pbmc_fitted.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for frame, kw in (("radial", {"groupby": "bulk_labels"}), ("contrast", {})):
        before = gbumap.get.oriented_contributions(pbmc_fitted, ["LYZ", "CD74"], frame=frame, **kw)
        after = gbumap.get.oriented_contributions(back, ["LYZ", "CD74"], frame=frame, **kw)
        pd.testing.assert_frame_equal(before, after)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda a: gbumap.get.oriented_contributions(a, frame="polar", groupby="bulk_labels"), ValueError, "frame"),
        (lambda a: gbumap.get.oriented_contributions(a, frame="radial"), ValueError, "groupby="),
        (lambda a: gbumap.get.oriented_contributions(a, groupby="nope"), KeyError, "bulk_labels"),
        (lambda a: gbumap.get.oriented_contributions(a, "NOT_A_GENE", groupby="bulk_labels"), KeyError, "NOT_A_GENE"),
        (lambda a: gbumap.get.oriented_contributions(a, frame="contrast"), KeyError, "tl.contrast"),
        (lambda a: gbumap.get.cell_contrast(a, "no-such-cell", "bulk_labels"), KeyError, "obs_names"),
        (lambda a: gbumap.get.cell_contrast(a, 10_000, "bulk_labels"), IndexError, "700 cells"),
        (lambda a: gbumap.get.cell_contrast(a, 0, "bulk_labels", reference="nope"), KeyError, "not among"),
        (lambda a: gbumap.pl.contrast(a), KeyError, "tl.contrast"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(pbmc_fitted, call, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error) as info:
        call(pbmc_fitted)
    assert message in str(info.value)
    assert_unchanged(pbmc_fitted, before)


def test_several_contrasted_groups_need_a_choice(pbmc_fitted):
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", [GROUP, OTHER])
    with pytest.raises(ValueError, match="pass group="):
        gbumap.get.oriented_contributions(pbmc_fitted, "LYZ", frame="contrast")
    with pytest.raises(KeyError, match="not contrasted"):
        gbumap.get.oriented_contributions(pbmc_fitted, "LYZ", frame="contrast", group="CD56+ NK")
    values = gbumap.get.oriented_contributions(pbmc_fitted, "LYZ", frame="contrast", group=OTHER)
    assert values.shape == (pbmc_fitted.n_obs, 1)


def test_contrast_plot_builds_the_shift_head_to_tail_and_writes_nothing(pbmc_fitted):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.quiver import Quiver

    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", GROUP, reference=OTHER)
    before = snapshot(pbmc_fitted)
    ax = gbumap.pl.contrast(pbmc_fitted, n_genes=4, show=False)
    assert_unchanged(pbmc_fitted, before)
    arrows = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(arrows) == 1 + 4 + 1  # the shift, four genes, all other genes
    shift = np.array([arrows[0].U[0], arrows[0].V[0]])
    chain = np.array([[q.U[0], q.V[0]] for q in arrows[1:]])
    emb = pbmc_fitted.obsm["X_gbumap"].astype(np.float64)
    labels = pbmc_fitted.obs["bulk_labels"].astype(str).to_numpy()
    expected = emb[labels == GROUP].mean(0) - emb[labels == OTHER].mean(0)
    np.testing.assert_allclose(shift, expected, rtol=1e-6)
    np.testing.assert_allclose(chain.sum(0), expected, rtol=1e-4, atol=1e-4)  # the chain ends at the group's mean
    # each gene arrow is that gene's term, in rank order
    names = gbumap.get.rank_features_df(pbmc_fitted, GROUP, key="contrast_gbumap")["names"].head(4)
    legends = [c for c in ax.get_children() if type(c).__name__ == "Legend"]
    texts = [t.get_text() for legend in legends for t in legend.get_texts()]
    assert all(any(t.startswith(f"{j + 1}. {n} ") for t in texts) for j, n in enumerate(names)), texts
    assert any(GROUP in t for t in texts), "scanpy's legend of the groups is kept"
    matplotlib.pyplot.close("all")


def test_oriented_plot_colours_cells_by_the_values(pbmc_fitted):
    import matplotlib

    matplotlib.use("Agg")
    before = snapshot(pbmc_fitted)
    axes = gbumap.pl.oriented_contributions(pbmc_fitted, ["LYZ", "CD74"], groupby="bulk_labels", show=False)
    assert_unchanged(pbmc_fitted, before)
    assert len(axes) == 2
    values = gbumap.get.oriented_contributions(pbmc_fitted, "CD74", groupby="bulk_labels")["CD74"].to_numpy()
    drawn = np.asarray(axes[1].collections[0].get_array(), dtype=np.float64)
    np.testing.assert_allclose(np.sort(drawn), np.sort(values), rtol=1e-5, atol=1e-6)  # scanpy draws float32
    low, high = axes[1].collections[0].get_clim()
    assert low == pytest.approx(-high)  # signed frame: centred at 0
    matplotlib.pyplot.close("all")
