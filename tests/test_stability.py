"""tl.stability: seed-to-seed variability of the map and of the per-group rankings."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap._registry import RegistryError, encode_record, read_record
from gbumap.tl import _stability

GROUP = "CD14+ Monocyte"
KEY = "stability_gbumap"


def _dense(adata):
    """The model's input as tl.stability reads it (sparse here: a dense copy rounds differently)."""
    from gbumap._view import model_view

    return model_view(adata, "gbumap").matrix(adata)


@pytest.fixture(scope="module")
def stable(pbmc_fitted_session):
    """One stability run (3 models: the reference, a run with the reference's seed 0, one with seed 1).

    Records the unaligned embeddings handed to the alignment and counts the kNN searches.
    """
    import gbumap._graph as graph_module

    adata = pbmc_fitted_session.copy()
    captured, searches = [], []
    align, search = _stability.procrustes_align, graph_module.nearest_neighbors

    def spy_align(Y, R):
        captured.append(np.array(Y))
        return align(Y, R)

    def spy_search(*args, **kwargs):
        searches.append(1)
        return search(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(_stability, "procrustes_align", spy_align)
    mp.setattr(graph_module, "nearest_neighbors", spy_search)
    try:
        with pytest.warns(UserWarning, match="reference's seed"):
            gbumap.tl.stability(adata, 3, groupby="bulk_labels", random_state=0, n_top=20, verbose=False)
    finally:
        mp.undo()
    return adata, captured, len(searches)


def test_rebuilt_models_reproduce_the_run_embeddings(stable):
    adata, captured, _ = stable
    models = gbumap.get.stability_models(adata)
    assert [m.random_state for m in models] == [0, 1]
    assert list(adata.uns[KEY]["seeds"]) == [0, 1]
    assert len(captured) == 2
    X = _dense(adata)
    for model, run in zip(models, captured):
        np.testing.assert_array_equal(model.transform(X).astype(np.float64), run)
    # the runs share the reference's input side exactly
    ref = gbumap.get.model(adata)
    for model in models:
        np.testing.assert_array_equal(model.baseline_, ref.baseline_)
        np.testing.assert_array_equal(model.components_, ref.components_)
        assert model.input_norm_offset_ == ref.input_norm_offset_
    # different seeds give different maps
    assert not np.allclose(captured[0], captured[1])


def test_the_reference_seed_repeats_the_reference_and_other_seeds_do_not(stable):
    adata, captured, _ = stable
    ref = gbumap.get.model(adata)
    models = gbumap.get.stability_models(adata)
    same = models[0].encoder_.state_dict()
    for name, value in ref.encoder_.state_dict().items():
        assert np.array_equal(same[name].numpy(), value.numpy()), name  # bitwise on the CPU
    X = _dense(adata)
    np.testing.assert_array_equal(models[0].transform(X), ref.transform(X))
    residual = adata.uns[KEY]["alignment"]["residual"]
    scale = adata.uns[KEY]["alignment"]["scale"]
    # only the float32 rounding between the training-time and transform-time input (about 1e-6)
    assert residual[0] < 1e-4 and abs(scale[0] - 1) < 1e-5
    assert residual[1] > 100 * residual[0]


def _procrustes_numpy(Y, R):
    """Similarity Procrustes from its SVD definition (no scipy)."""
    Yc, Rc = Y - Y.mean(0), R - R.mean(0)
    U, S, Vt = np.linalg.svd(Yc.T @ Rc)
    rotation = U @ Vt
    scale = S.sum() / (Yc**2).sum()
    return scale * Yc @ rotation + R.mean(0)


def test_spread_and_residuals_equal_an_independent_procrustes(stable):
    adata, _, _ = stable
    X = _dense(adata)
    reference = adata.obsm["X_gbumap"].astype(np.float64)
    runs = [m.transform(X).astype(np.float64) for m in gbumap.get.stability_models(adata)]
    aligned = [_procrustes_numpy(Y, reference) for Y in runs]
    d2 = np.stack([((A - reference) ** 2).sum(1) for A in aligned])
    cells = [0, 17, 350, 699]
    spread = adata.obs[f"{KEY}_spread"].to_numpy()
    np.testing.assert_allclose(spread[cells], np.sqrt(d2.mean(0))[cells], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adata.uns[KEY]["alignment"]["residual"], np.sqrt(d2.mean(1)), rtol=1e-6, atol=1e-9)
    assert spread.dtype == np.float32 and (spread >= 0).all() and spread.max() > 0


def test_ranking_fields_match_each_models_own_rank_features(stable):
    adata, _, _ = stable
    record = read_record(adata, "gbumap")
    check = adata.copy()
    gbumap.tl.rank_features(check, "bulk_labels", key_added="r0")
    rankings = [check.uns["r0"]]
    for i, model in enumerate(gbumap.get.stability_models(adata)):
        check.uns[f"m{i}"] = encode_record(record.replace(model=model))
        gbumap.tl.rank_features(check, "bulk_labels", key=f"m{i}", key_added=f"r{i + 1}")
        rankings.append(check.uns[f"r{i + 1}"])
    result = adata.uns[KEY]
    genes = record.feature_names
    groups = list(result["names"].dtype.names)
    assert groups == list(rankings[0]["names"].dtype.names)
    for group in groups:
        ranks = np.stack(
            [pd.Index(np.asarray(r["names"][group]).astype(str)).get_indexer(genes) + 1.0 for r in rankings]
        )
        table = gbumap.get.rank_features_df(adata, group, key=KEY).set_index("names")
        assert len(table) == len(genes)
        order = pd.Index(genes).get_indexer(table.index)
        np.testing.assert_array_equal(table["median_rank"], np.median(ranks, 0)[order])
        iqr = np.percentile(ranks, 75, axis=0) - np.percentile(ranks, 25, axis=0)
        np.testing.assert_allclose(table["rank_iqr"], iqr[order])
        top = (ranks <= 20).mean(0)[order]
        np.testing.assert_allclose(table["top_fraction"], top, rtol=1e-6)
        assert ((table["top_fraction"] >= 0) & (table["top_fraction"] <= 1)).all()
        assert set(np.round(table["top_fraction"] * 3, 4)) <= {0.0, 1.0, 2.0, 3.0}
        assert (np.diff(table["median_rank"].to_numpy()) >= 0).all()
        ref_scores = rankings[0]["scores"][group]
        ref_names = np.asarray(rankings[0]["names"][group]).astype(str)
        np.testing.assert_array_equal(
            table["scores"].to_numpy(), np.asarray(ref_scores)[pd.Index(ref_names).get_indexer(table.index)]
        )
    # the reference's top genes are in the stable list when its rank is reproducible
    assert (gbumap.get.rank_features_df(adata, GROUP, key=KEY)["top_fraction"].head(3) >= 2 / 3).all()


def test_the_graph_is_searched_once_and_timed(stable):
    adata, _, n_searches = stable
    assert n_searches == 1
    timings = adata.uns[KEY]["timings"]
    assert timings["graph"] >= 0 and timings["reference_training"] > 0
    assert np.shape(timings["training"]) == (2,) and (np.asarray(timings["training"]) > 0).all()
    assert adata.uns[KEY]["params"]["graph_source"] == "gbumap"


def test_h5ad_round_trip_keeps_result_and_models(stable, tmp_path):
    import anndata as ad

    adata, captured, _ = stable
    path = tmp_path / "stability.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obs[f"{KEY}_spread"], adata.obs[f"{KEY}_spread"])
    for field in ("median_rank", "rank_iqr", "top_fraction", "scores"):
        np.testing.assert_array_equal(back.uns[KEY][field][GROUP], adata.uns[KEY][field][GROUP])
    X = _dense(back)
    for model, run in zip(gbumap.get.stability_models(back), captured):
        np.testing.assert_array_equal(model.transform(X).astype(np.float64), run)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda w: w.__setitem__("linears__0__weight", w["linears__0__weight"][:, :-1]), "shape"),
        (lambda w: w.__setitem__("linears__1__weight", w["linears__1__weight"].astype(np.float64)), "float32"),
        (lambda w: w.pop("linears__2__weight"), "missing"),
        (lambda w: w.__setitem__("extra", np.zeros(3, np.float32)), "unexpected"),
    ],
)
def test_tampered_weights_are_refused(stable, tamper, message):
    adata = stable[0].copy()
    tamper(adata.uns[KEY]["models"]["run_2"]["weights"])
    with pytest.raises(RegistryError, match=message):
        gbumap.get.stability_models(adata)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_models": 1}, ValueError, "n_models must be an integer >= 2"),
        ({"n_models": 2.5}, ValueError, "n_models"),
        ({"n_models": True}, ValueError, "n_models"),
        ({"bootstrap": 0}, ValueError, r"bootstrap must be a fraction of cells in \(0, 1\]"),
        ({"bootstrap": 1.5}, ValueError, "bootstrap"),
        ({"groupby": "nope"}, KeyError, "nope"),
        ({"key": "absent"}, KeyError, "No gbumap model under uns\\['absent'\\]"),
        ({"n_top": 0}, ValueError, "n_top must be an integer >= 1"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(pbmc_fitted, kwargs, error, message):
    before = snapshot(pbmc_fitted)
    with pytest.raises(error, match=message):
        gbumap.tl.stability(pbmc_fitted, **{"verbose": False, **kwargs})
    assert_unchanged(pbmc_fitted, before)


def test_bootstrap_trains_on_a_subset_and_copy_leaves_the_input(pbmc_fitted, monkeypatch):
    from gbumap import GlassBoxUMAP

    seen = []
    fit = GlassBoxUMAP.fit

    def spy(self, X, *args, **kwargs):
        seen.append((X.shape[0], kwargs["graph"].shape))
        return fit(self, X, *args, **kwargs)

    captured = []
    align = _stability.procrustes_align
    monkeypatch.setattr(GlassBoxUMAP, "fit", spy)
    monkeypatch.setattr(_stability, "procrustes_align", lambda Y, R: (captured.append(np.array(Y)), align(Y, R))[1])
    before = snapshot(pbmc_fitted)
    out = gbumap.tl.stability(pbmc_fitted, 2, bootstrap=0.5, verbose=False, copy=True, key_added="boot")
    assert_unchanged(pbmc_fitted, before)
    assert seen == [(350, (350, 350))]
    assert "names" not in out.uns["boot"] and out.uns["boot"]["params"]["bootstrap"] == 0.5
    (model,) = gbumap.get.stability_models(out, key="boot")
    ref = gbumap.get.model(out)
    np.testing.assert_array_equal(model.baseline_, ref.baseline_)  # not the subset's mean
    assert model.input_norm_offset_ == ref.input_norm_offset_
    emb = model.transform(_dense(out))
    assert emb.shape == (700, 2)
    np.testing.assert_array_equal(emb.astype(np.float64), captured[0])
    assert np.isfinite(out.obs["boot_spread"]).all()


def test_the_plot_runs_and_writes_nothing(stable):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = stable[0]
    before = snapshot(adata)
    fig = gbumap.pl.stability(adata, GROUP, n_genes=8, return_fig=True)
    assert len(fig.axes) >= 2  # the map (with its colour bar) and the genes
    bars = fig.axes[-1].patches if len(fig.axes[-1].patches) else fig.axes[1].patches
    assert len(bars) == 8
    plt.close(fig)
    axes = gbumap.pl.stability(adata, show=False)
    assert len(axes) == 1
    plt.close("all")
    with pytest.raises(KeyError, match="not ranked"):
        gbumap.pl.stability(adata, "no such group", show=False)
    assert_unchanged(adata, before)


def test_no_warning_with_the_default_seeds(pbmc_fitted):
    """Default seeds start after the reference's; no duplicated run, no warning (one short extra run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gbumap.tl.stability(pbmc_fitted, 2, verbose=False)
    assert list(pbmc_fitted.uns[KEY]["seeds"]) == [1]


def test_small_groups_warn_once_not_once_per_model(pbmc_fitted):
    """The reference's ranking names the groups under 30 cells; the further runs' rankings stay quiet."""
    with pytest.warns(gbumap.tl.SmallGroupWarning) as caught:
        gbumap.tl.stability(pbmc_fitted, 3, groupby="bulk_labels", verbose=False)
    small = [str(w.message) for w in caught if issubclass(w.category, gbumap.tl.SmallGroupWarning)]
    assert len(small) == 1 and "'CD34+' (13 cells)" in small[0]
    assert caught[0].filename == __file__
