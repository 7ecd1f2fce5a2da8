"""tl.gene_set_contributions: each gene set's exact share of every cell's position, and its ranking per group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _adata_snapshot import assert_unchanged, snapshot
from _two_groups import two_group_adata
from scipy import stats

import gbumap
from gbumap._view import model_view

GMT = Path(__file__).parent / "data" / "small.gmt"
MONO, B = "CD14+ Monocyte", "CD19+ B"
KEY = "gene_sets_gbumap"


def _expected(adata, sets: dict[str, list[str]], key: str = "gbumap") -> np.ndarray:
    """``(cells, axes, sets)`` from the dense per-gene contributions, with plain numpy."""
    contrib = gbumap.get.contributions(adata, key=key).astype(np.float64)  # cells × axes × genes
    genes = pd.Index(model_view(adata, key).feature_names.astype(str))
    out = []
    for members in sets.values():
        idx = genes.get_indexer(members)
        out.append(contrib[:, :, idx[idx >= 0]].sum(-1))
    return np.stack(out, axis=-1)


def _relative_errors(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per set: max |difference| over cells and axes, relative to the set's largest value."""
    scale = np.abs(expected).max(axis=(0, 1))
    return np.abs(found.astype(np.float64) - expected).max(axis=(0, 1)) / scale


# ----------------------------------------------------------------------------- GMT files
def test_read_gmt_reads_the_bundled_file_and_round_trips(tmp_path):
    sets = gbumap.read_gmt(GMT)
    assert list(sets) == ["monocyte", "B", "NK", "T", "platelet/mono"]
    assert sets["B"] == ["CD79A", "CD79B", "MS4A1", "CD74", "HLA-DRA"]

    written = {"one": ["A", "B", "C"], "two words": ["X"], "slash/name": ["C", "D"]}
    lines = [f"{name}\tdescription of {name}\t" + "\t".join(genes) for name, genes in written.items()]
    path = tmp_path / "sets.gmt"
    path.write_text("\n".join(lines) + "\n")
    assert gbumap.read_gmt(path) == written
    assert gbumap.read_gmt(str(path)) == written


def test_read_gmt_strips_skips_blank_lines_and_deduplicates(tmp_path):
    path = tmp_path / "messy.gmt"
    path.write_text("\n  set1 \t desc\t A \tB\tA\t\t\n\n\nset2\tdesc\tC\t\n")
    assert gbumap.read_gmt(path) == {"set1": ["A", "B"], "set2": ["C"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\tdesc\tX\nb\tdesc\n", "line 2"),  # no gene
        ("a\tdesc\tX\n\nb\tdesc\t\t\n", "line 3"),  # only empty gene fields
        ("a\tdesc\tX\nb\tdesc\tY\na\tdesc\tZ\n", "line 3: set 'a' was already defined on line 1"),
        ("\n\n", "no gene sets"),
    ],
)
def test_read_gmt_names_the_bad_line(tmp_path, text, message):
    path = tmp_path / "bad.gmt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        gbumap.read_gmt(path)


def test_read_gmt_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gmt"):
        gbumap.read_gmt(tmp_path / "nope.gmt")


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("stored_jacobians", [True, False])
def test_set_contributions_are_the_exact_sums_of_their_genes(pbmc_fitted, stored_jacobians):
    adata = pbmc_fitted
    if not stored_jacobians:
        del adata.obsm["gbumap_jacobian"]
    sets = gbumap.read_gmt(GMT)
    gbumap.tl.gene_set_contributions(adata, GMT, batch_size=128)
    values = adata.obsm[KEY]
    assert values.shape == (adata.n_obs, 2, len(sets)) and values.dtype == np.float32
    errors = _relative_errors(values, _expected(adata, sets))
    assert errors.max() < 1e-5, dict(zip(sets, errors))

    table = adata.uns[KEY]["sets"]
    assert list(table.index) == list(sets)
    assert table.loc["platelet/mono", "size"] == 5 and table.loc["platelet/mono", "n_seen"] == 2
    assert table.loc["platelet/mono", "genes"] == "FCGR3A,LYZ"
    assert (table["n_seen"] == table["size"]).sum() == 4


def test_a_partition_of_the_genes_adds_up_to_the_embedding_and_overlaps_count_twice(pbmc_fitted):
    adata = pbmc_fitted
    genes = model_view(adata).feature_names.astype(str)
    parts = {f"part{i}": list(chunk) for i, chunk in enumerate(np.array_split(genes, 3))}
    gbumap.tl.gene_set_contributions(adata, parts, key_added="parts")
    emb = adata.obsm["X_gbumap"].astype(np.float64)
    rebuilt = adata.obsm["parts"].astype(np.float64).sum(-1)
    assert np.abs(rebuilt - emb).max() / np.abs(emb).max() < 1e-5

    # overlapping sets are not additive: LYZ is in both, so it counts in both
    overlapping = {"mono": ["LYZ", "CST3"], "lyz+fcn1": ["LYZ", "FCN1"], "union": ["LYZ", "CST3", "FCN1"]}
    gbumap.tl.gene_set_contributions(adata, overlapping, key_added="overlap")
    v = adata.obsm["overlap"].astype(np.float64)
    lyz = gbumap.get.contributions(adata, genes="LYZ")[:, :, 0].astype(np.float64)
    np.testing.assert_allclose(v[..., 0] + v[..., 1] - lyz, v[..., 2], atol=1e-5 * np.abs(v).max())
    assert np.abs(v[..., 0] + v[..., 1] - v[..., 2]).max() > 1e-3 * np.abs(v).max()


def test_batches_do_not_change_the_result(pbmc_fitted):
    gbumap.tl.gene_set_contributions(pbmc_fitted, GMT, key_added="small", batch_size=37, groupby="bulk_labels")
    gbumap.tl.gene_set_contributions(pbmc_fitted, GMT, key_added="large", groupby="bulk_labels")
    np.testing.assert_allclose(pbmc_fitted.obsm["small"], pbmc_fitted.obsm["large"], rtol=1e-6, atol=1e-7)
    small = gbumap.get.rank_features_df(pbmc_fitted, key="small")
    large = gbumap.get.rank_features_df(pbmc_fitted, key="large")
    pd.testing.assert_frame_equal(small, large, rtol=1e-6)


@pytest.fixture(scope="module")
def no_pca_session():
    adata = two_group_adata(240, 30, n_markers=6)
    gbumap.tl.fit(adata, n_pcs=0, n_steps=40, verbose=False)
    gbumap.tl.contributions(adata, verbose=False)
    return adata


@pytest.mark.parametrize("stored_jacobians", [True, False])
def test_exact_on_a_model_without_pca(no_pca_session, stored_jacobians):
    adata = no_pca_session.copy()
    assert gbumap.get.model(adata).components_ is None
    assert "gbumap_jacobian" in adata.obsm
    if not stored_jacobians:
        del adata.obsm["gbumap_jacobian"]
    sets = {"markers": [f"g{j}" for j in range(6)], "others": [f"g{j}" for j in range(4, 30)], "mixed": ["g0", "zz"]}
    gbumap.tl.gene_set_contributions(adata, sets, groupby="group", batch_size=50, n_top=5)
    errors = _relative_errors(adata.obsm[KEY], _expected(adata, sets))
    assert errors.max() < 1e-5, dict(zip(sets, errors))
    table = gbumap.get.rank_features_df(adata, "a", key=KEY)
    assert table["names"].iloc[0] == "markers"


def test_round_trips_through_h5ad_and_zarr(pbmc_fitted, tmp_path):
    import anndata as ad

    adata = pbmc_fitted
    sets = gbumap.read_gmt(GMT)
    gbumap.tl.gene_set_contributions(adata, sets, groupby="bulk_labels")
    before = gbumap.get.rank_features_df(adata, key=KEY)
    adata.write_h5ad(tmp_path / "a.h5ad")
    adata.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        np.testing.assert_array_equal(back.obsm[KEY], adata.obsm[KEY])
        pd.testing.assert_frame_equal(gbumap.get.rank_features_df(back, key=KEY), before, check_dtype=False)
        pd.testing.assert_frame_equal(back.uns[KEY]["sets"], adata.uns[KEY]["sets"], check_dtype=False)
        scores = gbumap.get.gene_set_scores(back)
        assert list(scores.var_names) == list(sets)
        np.testing.assert_array_equal(scores.var["n_seen"], [6, 5, 5, 4, 2])
    # recomputed from what the file holds, the result is the same (a model read back from zarr cannot be
    # decoded yet: the registry rejects numpy StringDType arrays, a separate issue)
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    gbumap.tl.gene_set_contributions(back, sets, key_added="again")
    errors = _relative_errors(back.obsm["again"], _expected(back, sets))
    assert errors.max() < 1e-5


# ----------------------------------------------------------------------------- ranking and enrichment
def test_sets_rank_by_the_groups_mean_length_and_markers_come_first(pbmc_fitted):
    adata = pbmc_fitted
    gbumap.tl.gene_set_contributions(adata, GMT, groupby="bulk_labels")
    values = adata.obsm[KEY].astype(np.float64)
    length = np.sqrt((values**2).sum(1))
    names = list(adata.uns[KEY]["sets"].index)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    for group in (MONO, B):
        table = gbumap.get.rank_features_df(adata, group, key=KEY).set_index("names")
        expected = pd.Series(length[labels == group].mean(0), index=names)
        np.testing.assert_allclose(table["scores"], expected.loc[table.index], rtol=1e-6)
        rest = pd.Series(length[labels != group].mean(0), index=names)
        lfc = np.log2((expected + 1e-9) / (rest + 1e-9))
        np.testing.assert_allclose(table["logfoldchanges"], lfc.loc[table.index], rtol=1e-4)
        assert (np.diff(table["scores"].to_numpy()) <= 0).all()
    mono = gbumap.get.rank_features_df(adata, MONO, key=KEY)["names"].tolist()
    b = gbumap.get.rank_features_df(adata, B, key=KEY)["names"].tolist()
    assert mono.index("monocyte") == 0, mono
    # Measured over seeds 0-3 (either training mode): the monocyte set is first for monocytes every
    # time; for B cells the B set and the monocyte set (HLA class II genes, shared) trade first place
    # (B first in 2 of 4 seeds on edge batches, 1 of 4 full batch) and the B set is always in the top 2,
    # above the T, NK and platelet sets.
    assert b.index("B") <= 1 and b.index("B") < min(b.index(s) for s in ("T", "NK", "platelet/mono")), b


def test_enrichment_matches_scipy_on_rank_features_top_genes(pbmc_fitted):
    adata = pbmc_fitted
    n_top = 30
    gbumap.tl.gene_set_contributions(adata, GMT, groupby="bulk_labels", n_top=n_top)
    n_genes = len(model_view(adata).feature_names)
    sets = adata.uns[KEY]["sets"]
    # the group's top genes are tl.rank_features' default top list (computed by glassbox_umap)
    ranked = gbumap.get.rank_features_df(adata, MONO, key="rank_features_gbumap")
    top = ranked.loc[ranked["scores"] > 0, "names"].head(n_top).tolist()
    stored = [g for g in adata.uns[KEY]["top_genes"][MONO] if g]
    assert stored == top

    table = gbumap.get.rank_features_df(adata, MONO, key=KEY).set_index("names")
    pvals = {}
    for name in sets.index:
        members = set(sets.loc[name, "genes"].split(","))
        hits = [g for g in top if g in members]
        assert table.loc[name, "overlap"] == len(hits)
        assert table.loc[name, "overlap_genes"] == ",".join(hits)
        pvals[name] = stats.hypergeom(n_genes, sets.loc[name, "n_seen"], len(top)).sf(len(hits) - 1)
    pvals = pd.Series(pvals)
    np.testing.assert_allclose(table.loc[pvals.index, "pvals"], pvals, rtol=1e-10)
    np.testing.assert_allclose(
        table.loc[pvals.index, "pvals_adj"], stats.false_discovery_control(pvals.to_numpy()), rtol=1e-10
    )
    assert table.loc["monocyte", "pvals"] < 1e-3 and table.loc["monocyte", "overlap"] >= 3


# ----------------------------------------------------------------------------- scanpy plots
def test_gene_set_scores_feed_scanpys_plots(pbmc_fitted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = pbmc_fitted
    gbumap.tl.gene_set_contributions(adata, GMT, groupby="bulk_labels")
    before = snapshot(adata)
    scores = gbumap.get.gene_set_scores(adata)
    assert_unchanged(adata, before)
    assert scores.shape == (adata.n_obs, 5)
    values = adata.obsm[KEY].astype(np.float64)
    np.testing.assert_allclose(scores.X, np.sqrt((values**2).sum(1)), rtol=1e-6)
    assert list(scores.var.columns) == ["size", "n_seen", "genes"]
    np.testing.assert_array_equal(scores.obsm["X_gbumap"], adata.obsm["X_gbumap"])
    pd.testing.assert_frame_equal(scores.obs, adata.obs)

    sc.pl.rank_genes_groups_dotplot(scores, key=KEY, n_genes=2, show=False)
    sc.pl.matrixplot(scores, list(scores.var_names), "bulk_labels", show=False)
    sc.pl.embedding(scores, basis="gbumap", color=["monocyte", "platelet/mono"], show=False)
    plt.close("all")

    along = gbumap.get.gene_set_scores(adata, reduction=1)
    np.testing.assert_array_equal(along.X, adata.obsm[KEY][:, 1, :])
    both = gbumap.get.gene_set_scores(adata, reduction=None)
    np.testing.assert_array_equal(both.layers["gbumap1"], adata.obsm[KEY][:, 0, :])
    np.testing.assert_array_equal(both.X, scores.X)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"reduction": "normed_l2"}, ValueError, "overlap"),
        ({"reduction": 2}, ValueError, "Axis 2"),
        ({"key": "missing"}, KeyError, "gene_set_contributions"),
    ],
)
def test_gene_set_scores_bad_input(pbmc_fitted, kwargs, error, message):
    gbumap.tl.gene_set_contributions(pbmc_fitted, GMT)
    with pytest.raises(error, match=message):
        gbumap.get.gene_set_scores(pbmc_fitted, **kwargs)


# ----------------------------------------------------------------------------- copies and bad input
def test_copy_returns_a_new_object_and_leaves_the_input(pbmc_fitted):
    before = snapshot(pbmc_fitted)
    out = gbumap.tl.gene_set_contributions(pbmc_fitted, GMT, groupby="bulk_labels", copy=True)
    assert_unchanged(pbmc_fitted, before)
    assert KEY in out.obsm and "names" in out.uns[KEY]
    assert gbumap.tl.gene_set_contributions(pbmc_fitted, GMT) is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"gene_sets": {"empty": []}}, ValueError, "'empty' lists no genes"),
        ({"gene_sets": {"ok": ["LYZ"], "unseen": ["NOPE1", "NOPE2"]}}, ValueError, "'unseen' lists 2 genes, 0 of"),
        ({"gene_sets": {"ok": ["LYZ", "CST3"]}, "min_genes": 3}, ValueError, "min_genes=3"),
        ({"gene_sets": {}}, ValueError, "gene_sets is empty"),
        ({"gene_sets": ["LYZ", "CST3"]}, TypeError, "dict"),
        ({"gene_sets": {"one": "LYZ"}}, TypeError, "['LYZ']"),
        ({"gene_sets": "no_such_file.gmt"}, FileNotFoundError, "no_such_file.gmt"),
        ({"gene_sets": GMT, "groupby": "no_such_column"}, KeyError, "bulk_labels"),
        ({"gene_sets": GMT, "n_top": 0}, ValueError, "n_top"),
        ({"gene_sets": GMT, "batch_size": 0}, ValueError, "batch_size"),
        ({"gene_sets": GMT, "key": "missing"}, Exception, "missing"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(pbmc_fitted, kwargs, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error) as info:
        gbumap.tl.gene_set_contributions(pbmc_fitted, **kwargs)
    assert message in str(info.value)
    assert_unchanged(pbmc_fitted, before)


def test_a_single_group_is_refused(pbmc_fitted):
    pbmc_fitted.obs["one"] = pd.Categorical(["x"] * pbmc_fitted.n_obs)
    before = snapshot(pbmc_fitted)
    with pytest.raises(ValueError, match="at least two groups"):
        gbumap.tl.gene_set_contributions(pbmc_fitted, GMT, groupby="one")
    assert_unchanged(pbmc_fitted, before)


def test_drop_small_skips_unseen_sets_records_them_and_round_trips(pbmc_fitted, tmp_path):
    import anndata as ad

    sets = {"monocyte": ["LYZ", "CST3", "FCN1"], "absent": ["NOT_A_GENE_1", "NOT_A_GENE_2"], "one": ["CD74", "XYZ"]}
    before = snapshot(pbmc_fitted)
    with pytest.raises(ValueError, match="drop_small=True"):
        gbumap.tl.gene_set_contributions(pbmc_fitted, sets)
    assert_unchanged(pbmc_fitted, before)
    gbumap.tl.gene_set_contributions(pbmc_fitted, sets, min_genes=2, drop_small=True)
    result = pbmc_fitted.uns["gene_sets_gbumap"]
    assert list(result["sets"].index) == ["monocyte"]
    assert sorted(result["dropped"]) == ["absent", "one"]
    assert pbmc_fitted.obsm["gene_sets_gbumap"].shape[2] == 1
    pbmc_fitted.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert sorted(back.uns["gene_sets_gbumap"]["dropped"]) == ["absent", "one"]
    # nothing left: still an error
    with pytest.raises(ValueError, match="absent"):
        gbumap.tl.gene_set_contributions(pbmc_fitted, {"absent": ["NOT_A_GENE_1"]}, drop_small=True, key_added="x")
    assert "x" not in pbmc_fitted.uns


def test_nothing_dropped_round_trips(pbmc_fitted, tmp_path):
    import anndata as ad

    gbumap.tl.gene_set_contributions(pbmc_fitted, {"monocyte": ["LYZ", "CST3"]})
    assert len(pbmc_fitted.uns["gene_sets_gbumap"]["dropped"]) == 0
    pbmc_fitted.write_h5ad(tmp_path / "a.h5ad")
    assert len(ad.read_h5ad(tmp_path / "a.h5ad").uns["gene_sets_gbumap"]["dropped"]) == 0
