"""Tests for the single-cell simulator ``gbumap.datasets.simulate``."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gbumap.datasets import ROLES, simulate, truth_matrix

# A small design that still has every ingredient (365 structured genes of 500).
SMALL = dict(
    n_lineages=3,
    types_per_lineage=3,
    genes_per_type=15,
    genes_per_lineage=20,
    n_state_genes=10,
    n_housekeeping=30,
    n_noise=50,
)


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return simulate(2_000, 500, **SMALL, random_state=0)


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank_a = np.argsort(np.argsort(a, kind="stable"), kind="stable")
    rank_b = np.argsort(np.argsort(b, kind="stable"), kind="stable")
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_shapes_and_types(adata):
    assert adata.shape == (2_000, 500)
    counts = adata.layers["counts"]
    for m in (adata.X, counts):
        assert isinstance(m, sp.csr_matrix)
        assert m.dtype == np.float32
        assert m.has_sorted_indices
    assert np.array_equal(adata.X.indptr, counts.indptr)
    assert np.array_equal(adata.X.indices, counts.indices)
    assert adata.obs_names.is_unique and adata.var_names.is_unique

    obs = adata.obs
    n_types = SMALL["n_lineages"] * SMALL["types_per_lineage"]
    assert isinstance(obs["cell_type"].dtype, pd.CategoricalDtype)
    assert isinstance(obs["lineage"].dtype, pd.CategoricalDtype)
    assert len(obs["cell_type"].cat.categories) == n_types
    assert set(obs["cell_type"]) == set(obs["cell_type"].cat.categories)  # every type present
    assert obs["state"].between(0, 1).all()
    for col in ("size_factor", "depth", "n_counts", "n_genes"):
        assert col in obs
    lineage_of = adata.uns["simulation"]["lineage_of"]
    assert (obs["cell_type"].astype(str).map(lineage_of) == obs["lineage"].astype(str)).all()

    var = adata.var
    assert list(var["role"].cat.categories) == list(ROLES)
    expected = {
        "housekeeping": SMALL["n_housekeeping"],
        "noise": SMALL["n_noise"],
        "lineage": SMALL["n_lineages"] * SMALL["genes_per_lineage"],
        "type": n_types * SMALL["genes_per_type"],
        "state": n_types * SMALL["n_state_genes"],
    }
    expected["background"] = 500 - sum(expected.values())
    expected["progenitor"] = 0  # only a simulation with a trajectory has progenitor genes
    assert var["role"].value_counts().to_dict() == expected
    assert (var.loc[var["role"].isin(["housekeeping", "noise", "background"]), "lfc"] == 0).all()
    assert (var.loc[var["role"].isin(["lineage", "type", "state"]), "lfc"] > 0).all()
    # roles are scattered over gene positions, not in blocks
    assert var["role"].iloc[:100].nunique() >= 4


def test_uns_is_plain(adata):
    sim = adata.uns["simulation"]
    for ct, genes in sim["truth"].items():
        assert isinstance(ct, str)
        assert isinstance(genes, np.ndarray) and genes.dtype.kind == "U"
    for group in sim["programs"].values():
        for genes in group.values():
            assert isinstance(genes, np.ndarray) and genes.dtype.kind == "U"
    for key, value in sim["params"].items():
        assert type(value) in (int, float, str), (key, value)
    assert sim["params"]["random_state"] == 0
    assert sim["params"]["n_cells"] == 2_000


def test_truth_consistent_with_var_roles(adata):
    var = adata.var
    sim = adata.uns["simulation"]
    table = truth_matrix(adata)
    assert table.shape == (adata.n_vars, len(sim["truth"]))
    assert table.dtypes.eq(bool).all()
    assert list(table.columns) == list(adata.obs["cell_type"].cat.categories)
    assert table.index.equals(adata.var_names)
    per_type = SMALL["genes_per_type"] + SMALL["genes_per_lineage"] + SMALL["n_state_genes"]
    for ct in table.columns:
        lineage = sim["lineage_of"][ct]
        expected = (
            ((var["role"] == "type") & (var["program"] == ct))
            | ((var["role"] == "state") & (var["program"] == ct))
            | ((var["role"] == "lineage") & (var["program"] == lineage))
        )
        assert table[ct].equals(expected.rename(ct))
        assert set(sim["truth"][ct]) == set(adata.var_names[expected.to_numpy()])
        assert len(sim["truth"][ct]) == per_type
        parts = [sim["programs"]["type"][ct], sim["programs"]["state"][ct], sim["programs"]["lineage"][lineage]]
        assert set(np.concatenate(parts)) == set(sim["truth"][ct])
    # housekeeping, noise and background genes are in no truth set
    assert not table[var["role"].isin(["housekeeping", "noise", "background"]).to_numpy()].any(axis=None)


def test_truth_matrix_follows_gene_subsets(adata):
    subset = adata[:, adata.var_names[::3]]
    table = truth_matrix(subset)
    assert table.index.equals(subset.var_names)
    assert table.equals(truth_matrix(adata).loc[subset.var_names])
    with pytest.raises(ValueError, match="simulation"):
        truth_matrix(ad.AnnData(np.zeros((2, 2), dtype=np.float32)))


def test_counts_are_nonnegative_integers(adata):
    data = adata.layers["counts"].data
    assert (data > 0).all()  # no explicit zeros
    assert np.array_equal(data, np.round(data))
    totals = np.asarray(adata.layers["counts"].sum(axis=1)).ravel()
    np.testing.assert_allclose(adata.obs["n_counts"], totals)
    np.testing.assert_array_equal(adata.obs["n_genes"], np.diff(adata.layers["counts"].indptr))


def test_x_is_log_normalised_counts(adata):
    # What sc.pp.normalize_total(target_sum=1e4) then sc.pp.log1p compute, written out
    # here because importing scanpy alone takes several seconds.
    counts = _dense(adata.layers["counts"]).astype(np.float64)
    ref = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(_dense(adata.X), ref, rtol=1e-6, atol=1e-6)


def test_sparsity_is_realistic():
    adata = simulate(1_000, 2_000, random_state=1)
    counts = adata.layers["counts"]
    density = counts.nnz / np.prod(counts.shape)
    assert 0.05 < density < 0.35
    detected = np.asarray((counts > 0).mean(axis=0)).ravel()
    background = (adata.var["role"] == "background").to_numpy()
    assert 0.05 < np.median(detected[background]) < 0.3
    assert ((detected > 0.03) & (detected < 0.35)).mean() > 0.6
    # housekeeping genes are expressed almost everywhere and far above the programs
    means = np.asarray(counts.mean(axis=0)).ravel()
    hk = (adata.var["role"] == "housekeeping").to_numpy()
    programs = adata.var["role"].isin(["lineage", "type", "state"]).to_numpy()
    assert np.median(detected[hk]) > 0.9
    assert np.median(means[hk]) > 10 * np.median(means[programs])


def test_same_seed_same_data_other_seed_differs(adata):
    again = simulate(2_000, 500, **SMALL, random_state=0)
    assert (again.layers["counts"] != adata.layers["counts"]).nnz == 0
    assert (again.X != adata.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, adata.obs)
    pd.testing.assert_frame_equal(again.var, adata.var)

    other = simulate(2_000, 500, **SMALL, random_state=1)
    assert (other.layers["counts"] != adata.layers["counts"]).nnz > 0
    assert not other.obs["cell_type"].equals(adata.obs["cell_type"])
    assert not other.var["role"].equals(adata.var["role"])


def test_independent_of_chunk_size_and_threads(adata):
    chunked = simulate(2_000, 500, **SMALL, chunk_size=7, n_jobs=2, random_state=0)
    assert (chunked.layers["counts"] != adata.layers["counts"]).nnz == 0
    assert (chunked.X != adata.X).nnz == 0
    pd.testing.assert_frame_equal(chunked.obs, adata.obs)
    # a smaller simulation is the prefix of a larger one
    head = simulate(1_100, 500, **SMALL, random_state=0)
    assert (head.layers["counts"] != adata.layers["counts"][:1_100]).nnz == 0
    pd.testing.assert_frame_equal(head.obs, adata.obs.iloc[:1_100])


def test_random_state_none_is_recorded():
    kwargs = dict(SMALL, n_cells=200, n_genes=400)
    first = simulate(**kwargs, random_state=None)
    seed = first.uns["simulation"]["params"]["random_state"]
    assert isinstance(seed, int)
    again = simulate(**kwargs, random_state=seed)
    assert (again.layers["counts"] != first.layers["counts"]).nnz == 0


def test_depth_varies(adata):
    obs = adata.obs
    assert obs["size_factor"].std() > 0.2
    assert obs["n_counts"].max() > 3 * obs["n_counts"].min()
    assert np.corrcoef(obs["depth"], obs["n_counts"])[0, 1] > 0.8
    assert 0.8 < obs["n_counts"].mean() / 2_500 < 1.2  # depth_mean
    flat = simulate(600, 500, **SMALL, depth_sigma=0.0, random_state=0)
    assert np.allclose(flat.obs["size_factor"], 1.0)
    assert flat.obs["n_counts"].std() < 0.5 * obs["n_counts"].std()


def test_truth_genes_are_up_in_their_type(adata):
    X = adata.X
    cell_type = adata.obs["cell_type"].to_numpy()
    table = truth_matrix(adata)
    var = adata.var
    for ct in table.columns:
        inside = cell_type == ct
        diff = np.asarray(X[inside].mean(axis=0)).ravel() - np.asarray(X[~inside].mean(axis=0)).ravel()
        assert (diff[table[ct].to_numpy()] > 0).mean() > 0.9, ct
        # the type program of another type is not up here
        others = ((var["role"] == "type") & (var["program"] != ct)).to_numpy()
        assert (diff[others] > 0).mean() < 0.3, ct


def test_state_genes_follow_pseudotime(adata):
    X = adata.X
    obs = adata.obs
    state_genes = adata.uns["simulation"]["programs"]["state"]
    for ct, genes in state_genes.items():
        cells = (obs["cell_type"] == ct).to_numpy()
        score = np.asarray(X[cells][:, adata.var_names.get_indexer(genes)].sum(axis=1)).ravel()
        assert _spearman(score, obs["state"].to_numpy()[cells]) > 0.3, ct
        # other types do not carry this type's ramp
        other = (obs["cell_type"] != ct).to_numpy()
        score = np.asarray(X[other][:, adata.var_names.get_indexer(genes)].sum(axis=1)).ravel()
        assert abs(_spearman(score, obs["state"].to_numpy()[other])) < 0.15, ct


def test_noise_genes_have_high_variance(adata):
    X = adata.X
    variance = np.asarray(X.multiply(X).mean(axis=0)).ravel() - np.asarray(X.mean(axis=0)).ravel() ** 2
    top = np.argsort(-variance)[: SMALL["n_noise"]]
    assert (adata.var["role"].to_numpy()[top] == "noise").mean() > 0.5


def test_naive_mean_score_fails_differential_score_works(adata):
    X = adata.X
    cell_type = adata.obs["cell_type"].to_numpy()
    table = truth_matrix(adata)
    role = adata.var["role"].to_numpy()
    naive, differential = [], []
    for ct in table.columns:
        inside = cell_type == ct
        mean_in = np.asarray(X[inside].mean(axis=0)).ravel()
        mean_out = np.asarray(X[~inside].mean(axis=0)).ravel()
        labels = table[ct].to_numpy()
        naive.append(_auroc(mean_in, labels))
        differential.append(_auroc(mean_in - mean_out, labels))
        # the highest means in a type are housekeeping genes
        assert (role[np.argsort(-mean_in)[:20]] == "housekeeping").all()
    assert np.mean(naive) < 0.8
    assert np.mean(differential) > 0.95
    assert np.mean(differential) - np.mean(naive) > 0.15


def test_h5ad_round_trip(adata, tmp_path):
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.X != adata.X).nnz == 0
    assert (back.layers["counts"] != adata.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    pd.testing.assert_frame_equal(back.var, adata.var)
    sim, back_sim = adata.uns["simulation"], back.uns["simulation"]
    assert back_sim["params"] == sim["params"]
    assert back_sim["lineage_of"] == sim["lineage_of"]
    for ct, genes in sim["truth"].items():
        np.testing.assert_array_equal(np.asarray(back_sim["truth"][ct]).astype(str), genes)
    pd.testing.assert_frame_equal(truth_matrix(back), truth_matrix(adata))


def test_nb_sampler_matches_negative_binomial():
    from gbumap.datasets._simulate import _sample_nb

    rng = np.random.default_rng(0)
    # columns: (mean, size θ) pairs spanning both sampling paths (inverse CDF and Gamma-Poisson)
    params = [(0.02, 3.0), (0.3, 3.0), (2.0, 0.25), (5.0, 1.0), (30.0, 3.0), (12.0, 0.3)]
    mu = np.tile(np.array([m for m, _ in params], dtype=np.float32), (20_000, 1))
    theta = np.array([t for _, t in params], dtype=np.float32)
    row_nnz, cols, values = _sample_nb(mu, theta, rng)
    counts = sp.csr_matrix((values, cols, np.r_[0, np.cumsum(row_nnz)]), shape=mu.shape).toarray()
    assert (values > 0).all() and np.array_equal(values, np.round(values))
    for j, (m, t) in enumerate(params):
        x = counts[:, j]
        se = np.sqrt((m + m * m / t) / x.size)
        assert abs(x.mean() - m) < 5 * se, (m, t)
        p0 = (1 + m / t) ** -t
        assert abs((x == 0).mean() - p0) < 5 * np.sqrt(p0 * (1 - p0) / x.size) + 1e-4, (m, t)
        assert 0.85 < x.var() / (m + m * m / t) < 1.15, (m, t)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(n_genes=100), ValueError),
        (dict(n_cells=0), ValueError),
        (dict(dispersion=0.0), ValueError),
        (dict(lfc_spread=1.0), ValueError),
        (dict(n_jobs=0), ValueError),
        (dict(n_cells=10.5), TypeError),
        (dict(depth_mean=float("nan")), ValueError),
        (dict(n_batches=0), ValueError),
        (dict(n_batches=2.5), TypeError),
        (dict(n_batches=2, batch_gene_fraction=1.5), ValueError),
        (dict(n_batches=2, batch_lfc=-0.1), ValueError),
        (dict(n_batches=2, batch_depth_sigma=float("nan")), ValueError),
    ],
)
def test_invalid_arguments(kwargs, error):
    args = dict(n_cells=100, n_genes=2_000) | kwargs
    with pytest.raises(error):
        simulate(**args)


# ------------------------------------------------------------ branching trajectory
@pytest.fixture(scope="module")
def branching() -> ad.AnnData:
    return simulate(3_000, 520, **SMALL, trajectory_fraction=0.3, n_progenitor_genes=20, random_state=0)


def test_trajectory_labels_times_and_fates(branching):
    obs = branching.obs
    on = obs["trajectory_time"].notna().to_numpy()
    assert abs(on.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / on.size)
    fates = ["L0_T0", "L1_T0", "L2_T0"]
    assert list(obs["fate"].cat.categories) == fates
    assert obs["fate"].notna().to_numpy().tolist() == on.tolist()
    labels = obs["cell_type"].astype(str).to_numpy()
    time = obs["trajectory_time"].to_numpy()
    assert set(labels[on]) == {"progenitor", *[f"{f}_transitional" for f in fates]}
    assert (time[labels == "progenitor"] < 1 / 3).all() and (time[on & (labels != "progenitor")] >= 1 / 3).all()
    transitional = on & (labels != "progenitor")
    assert (labels[transitional] == obs["fate"].astype(str).to_numpy()[transitional] + "_transitional").all()
    # lineage follows the fate; within-type state is undefined on the trajectory
    fate_lineage = obs["fate"].astype(str).str[:2].to_numpy()
    assert (obs["lineage"].astype(str).to_numpy()[on] == fate_lineage[on]).all()
    assert obs["state"].isna().to_numpy().tolist() == on.tolist()
    assert "progenitor" in list(branching.var["role"].cat.categories)
    assert (branching.var["role"] == "progenitor").sum() == 20


def test_trajectory_expression_moves_from_progenitor_to_fate(branching):
    X = _dense(branching.X)
    obs = branching.obs
    var = branching.var
    time = obs["trajectory_time"].to_numpy()
    progenitor_genes = (var["role"] == "progenitor").to_numpy()
    for fate in ("L0_T0", "L1_T0", "L2_T0"):
        cells = (obs["fate"] == fate).to_numpy()
        fate_genes = ((var["role"] == "type") & (var["program"] == fate)).to_numpy()
        score_fate = X[np.ix_(cells, fate_genes)].mean(1)
        score_prog = X[np.ix_(cells, progenitor_genes)].mean(1)
        assert _spearman(time[cells], score_fate) > 0.5
        assert _spearman(time[cells], score_prog) < -0.5
        # transitional cells lie between the progenitors and the mature type, not on either
        mid = cells & (time > 0.4) & (time < 0.6)
        mature = (obs["cell_type"] == fate).to_numpy()
        early = cells & (time < 0.1)
        m_mid, m_mature, m_early = (X[np.ix_(rows, fate_genes)].mean() for rows in (mid, mature, early))
        assert m_early < m_mid < m_mature


def test_trajectory_truth_and_reproducibility(branching):
    truth = branching.uns["simulation"]["truth"]
    var = branching.var
    assert set(truth["progenitor"]) == set(var.index[var["role"] == "progenitor"])
    fate_genes = var.index[((var["role"] == "type") & (var["program"] == "L1_T0")) | (var["program"] == "L1")]
    assert set(fate_genes) <= set(truth["L1_T0_transitional"])
    assert truth_matrix(branching).shape == (520, 13)
    again = simulate(3_000, 520, **SMALL, trajectory_fraction=0.3, n_progenitor_genes=20, chunk_size=5, n_jobs=2,
                     random_state=0)
    assert (again.X != branching.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, branching.obs)


def test_trajectory_arguments_are_checked():
    with pytest.raises(ValueError, match="trajectory_fraction"):
        simulate(100, 2_000, trajectory_fraction=1.0)
    with pytest.raises(ValueError, match="progenitor"):
        simulate(100, 500, **SMALL, trajectory_fraction=0.1, n_progenitor_genes=200)


# ------------------------------------------------------------------------ batches
@pytest.fixture(scope="module")
def batched() -> ad.AnnData:
    return simulate(3_000, 500, **SMALL, n_batches=3, random_state=0)


@pytest.mark.parametrize("trajectory", [{}, dict(trajectory_fraction=0.2, n_progenitor_genes=20)])
def test_one_batch_is_no_batch(trajectory):
    kwargs = dict(SMALL, **trajectory, random_state=0)
    plain = simulate(1_100, 520, **kwargs)
    one = simulate(1_100, 520, **kwargs, n_batches=1, batch_gene_fraction=0.9, batch_lfc=3.0, batch_depth_sigma=1.0)
    assert (one.X != plain.X).nnz == 0 and (one.layers["counts"] != plain.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(one.obs, plain.obs)
    pd.testing.assert_frame_equal(one.var, plain.var)
    assert "batch" not in one.obs and "batch_gene" not in one.var
    assert set(one.uns["simulation"]) == set(plain.uns["simulation"])
    assert one.uns["simulation"]["params"] == plain.uns["simulation"]["params"]


def test_batch_columns_and_proportions(batched):
    obs, var, sim = batched.obs, batched.var, batched.uns["simulation"]
    assert list(obs["batch"].cat.categories) == ["B0", "B1", "B2"]
    share = obs["batch"].value_counts(normalize=True).to_numpy()
    assert np.abs(share - 1 / 3).max() < 4 * np.sqrt((1 / 3) * (2 / 3) / batched.n_obs)
    assert var["batch_gene"].dtype == bool and var["batch_only"].dtype == bool
    effects = sim["batch_effects"]
    assert effects.shape == (3, 500) and effects.dtype == np.float64
    assert ((effects != 0).sum(axis=1) == 150).all()  # round(0.3 · 500) genes per batch
    magnitude = np.abs(effects[effects != 0])
    assert magnitude.min() >= 0.8 * 0.7 - 1e-12 and magnitude.max() <= 0.8 * 1.3 + 1e-12
    assert 0.3 < (effects > 0).sum() / (effects != 0).sum() < 0.7  # both signs
    assert sim["batch_depth"].shape == (3,) and (sim["batch_depth"] > 0).all()
    params = sim["params"]
    assert params["n_batches"] == 3 and params["batch_gene_fraction"] == 0.3
    assert params["batch_lfc"] == 0.8 and params["batch_depth_sigma"] == 0.2


def test_batch_only_genes_are_unstructured_batch_genes(batched):
    var, effects = batched.var, batched.uns["simulation"]["batch_effects"]
    batch_gene = var["batch_gene"].to_numpy()
    assert batch_gene.tolist() == (effects != 0).any(axis=0).tolist()
    unstructured = var["role"].isin(["housekeeping", "noise", "background"]).to_numpy()
    assert var["batch_only"].to_numpy().tolist() == (batch_gene & unstructured).tolist()
    assert var["batch_only"].sum() > 0 and (batch_gene & ~unstructured).sum() > 0


def test_batches_leave_the_biology_unchanged(batched):
    # the gene design and the cells' types and states come from streams the batches do not touch
    plain = simulate(3_000, 500, **SMALL, random_state=0)
    pd.testing.assert_frame_equal(batched.var.drop(columns=["batch_gene", "batch_only"]), plain.var)
    for column in ("cell_type", "lineage", "state"):
        pd.testing.assert_series_equal(batched.obs[column], plain.obs[column])
    depth = batched.uns["simulation"]["batch_depth"][batched.obs["batch"].cat.codes.to_numpy()]
    np.testing.assert_allclose(batched.obs["size_factor"], plain.obs["size_factor"] * depth, rtol=1e-6)


def test_batch_effect_is_visible(batched):
    X = _dense(batched.X)
    codes = batched.obs["batch"].cat.codes.to_numpy()
    effects = batched.uns["simulation"]["batch_effects"]
    only = batched.var["batch_only"].to_numpy()
    for b in range(3):
        others = np.delete(effects, b, axis=0)
        up = only & (effects[b] > 0.6) & (others == 0).all(axis=0)
        down = only & (effects[b] < -0.6) & (others == 0).all(axis=0)
        assert up.sum() >= 3 and down.sum() >= 3
        inside, outside = codes == b, codes != b
        assert X[np.ix_(inside, up)].mean() > X[np.ix_(outside, up)].mean() + 0.2
        assert X[np.ix_(inside, down)].mean() < X[np.ix_(outside, down)].mean() - 0.1
        # gene by gene, the strongest up-shifted batch-only gene is higher in its batch
        g = np.flatnonzero(up)[np.argmax(effects[b, up])]
        assert X[inside, g].mean() > X[outside, g].mean()


def test_batches_are_reproducible_and_prefix_stable(batched):
    head = simulate(1_100, 500, **SMALL, n_batches=3, random_state=0)
    assert (head.layers["counts"] != batched.layers["counts"][:1_100]).nnz == 0
    assert (head.X != batched.X[:1_100]).nnz == 0
    pd.testing.assert_frame_equal(head.obs, batched.obs.iloc[:1_100])
    pd.testing.assert_frame_equal(head.var, batched.var)
    np.testing.assert_array_equal(head.uns["simulation"]["batch_effects"], batched.uns["simulation"]["batch_effects"])
    tail = simulate(952, 500, **SMALL, n_batches=3, random_state=0, first_cell=2_048)
    assert (tail.X != batched.X[2_048:]).nnz == 0
    pd.testing.assert_series_equal(tail.obs["batch"], batched.obs["batch"].iloc[2_048:])
    chunked = simulate(3_000, 500, **SMALL, n_batches=3, chunk_size=7, n_jobs=2, random_state=0)
    assert (chunked.X != batched.X).nnz == 0
    pd.testing.assert_frame_equal(chunked.obs, batched.obs)


def test_write_simulated_with_batches_equals_simulate(batched, tmp_path):
    from gbumap.datasets import write_simulated

    path = write_simulated(tmp_path / "sim.h5ad", 3_000, 500, chunk_size=1_100, counts=True, random_state=0,
                           n_batches=3, **SMALL)
    back = ad.read_h5ad(path)
    assert (back.X != batched.X).nnz == 0 and (back.layers["counts"] != batched.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(back.obs, batched.obs)
    pd.testing.assert_frame_equal(back.var, batched.var)
    np.testing.assert_array_equal(back.uns["simulation"]["batch_effects"], batched.uns["simulation"]["batch_effects"])
    np.testing.assert_array_equal(back.uns["simulation"]["batch_depth"], batched.uns["simulation"]["batch_depth"])
    assert back.uns["simulation"]["params"]["n_batches"] == 3


# ---------------------------------------------------------------------------
# the same output as before the simulator was split into helpers, on any machine

sys.path.insert(0, str(Path(__file__).parent / "data"))
import make_simulation_reference as reference  # noqa: E402 - the script that wrote the stored summary


@pytest.fixture(scope="module")
def recorded():
    with np.load(reference.OUT) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.mark.parametrize("case", list(reference.CASES))
def test_output_is_the_recorded_simulation(case, recorded):
    """Integers and sparsity bit for bit, floats to their dtype's rounding, against e99dd7b's simulator.

    ``tests/data/make_simulation_reference.py`` checked the recorded checksums
    before storing the summary; comparing floats to rounding keeps the test
    true on CPUs whose BLAS kernels round the simulator's one dot product
    differently (AVX-512 against AVX2).
    """
    if ".".join(np.__version__.split(".")[:2]) != reference.RECORDED_NUMPY:
        pytest.skip(f"recorded with numpy {reference.RECORDED_NUMPY}; this is numpy {np.__version__}")
    kwargs, _ = reference.CASES[case]
    got = reference.summary(simulate(**kwargs))
    want = {key.split("|", 1)[1]: value for key, value in recorded.items() if key.startswith(f"{case}|")}
    assert set(got) == set(want), set(got) ^ set(want)
    for key, old in want.items():
        new = np.asarray(got[key])
        assert new.dtype == old.dtype and new.shape == old.shape, (key, new.dtype, old.dtype, new.shape, old.shape)
        if old.dtype.kind == "f":
            rtol = 1e-5 if old.dtype == np.float32 or key.startswith("X/") else 1e-12
            np.testing.assert_allclose(new, old, rtol=rtol, atol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(new, old, err_msg=key)


def test_the_recorded_comparison_catches_a_changed_simulation(recorded):
    """One more count in one cell, or a mean off by 1e-4, fails the comparison."""
    kwargs, _ = reference.CASES["plain"]
    adata = simulate(**kwargs)
    counts = adata.layers["counts"].copy()
    counts.data[0] += 1
    adata.layers["counts"] = counts
    assert reference.summary(adata)["counts/sha256"] != recorded["plain|counts/sha256"]
    adata = simulate(**kwargs)
    adata.var["base_mean"] *= np.float32(1 + 1e-4)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(
            reference.summary(adata)["var/base_mean"], recorded["plain|var/base_mean"], rtol=1e-5
        )
