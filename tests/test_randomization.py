"""The model-randomisation check: explanations must depend on what the model learned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import gbumap
from gbumap.tl import _randomization


@pytest.fixture(scope="module")
def simulated():
    adata = gbumap.datasets.simulate(3000, 800, n_noise=150, n_housekeeping=40, genes_per_type=20,
                                     genes_per_lineage=25, n_state_genes=10, random_state=0)
    gbumap.tl.glassbox_umap(adata, mask_var=False, n_steps=800, verbose=False)
    return adata


def _noise_rejection(adata, key: str, cells: np.ndarray) -> float:
    """Median over cells of the AUROC separating the cell's true program genes from pure-noise genes by |C|."""
    from sklearn.metrics import roc_auc_score

    truth = gbumap.datasets.truth_matrix(adata)
    noise = (adata.var["role"] == "noise").to_numpy()
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    magnitude = gbumap.get.contributions(adata, obs=cells, key=key, reduction="l2")
    values = []
    for row, cell in enumerate(cells):
        own = truth[labels[cell]].to_numpy()
        keep = own | noise
        values.append(roc_auc_score(own[keep], magnitude[row, keep]))
    return float(np.median(values))


def test_trained_explanations_reject_noise_genes_that_random_ones_favour(simulated):
    """The yardstick of benchmarks/ranking_scores.py: a random network explains cells by their noisiest genes."""
    adata = simulated.copy()
    cells = np.random.default_rng(0).choice(adata.n_obs, 300, replace=False)
    trained = _noise_rejection(adata, "gbumap", cells)
    record = gbumap._registry.read_record(adata, "gbumap")
    random = []
    for seed in range(2):
        adata.uns["random"] = _randomization.randomized_registry(record, "reinit", seed)
        random.append(_noise_rejection(adata, "random", cells))
    print(f"per-cell truth-vs-noise AUROC: trained {trained:.3f}, randomised {random}")
    assert trained > max(random) + 0.1


def test_randomization_check_reports_per_group_agreement(simulated):
    adata = simulated.copy()
    before = set(adata.uns)
    gbumap.tl.randomization_check(adata, "cell_type", n_randomizations=2)
    assert set(adata.uns) - before == {"randomization_gbumap"}
    result = adata.uns["randomization_gbumap"]
    table = result["per_group"]
    assert list(table.index) == list(adata.obs["cell_type"].cat.categories)
    assert table["top_overlap"].between(0, 1).all() and table["spearman"].between(-1, 1).all()
    # the learned map changes the lists and the mean contributions (measured: overlap 0.71, rank correlation 0.94)
    assert table["top_overlap"].mean() < 0.9 and table["spearman"].mean() < 0.98
    assert result["summary"]["median_top_overlap"] == pytest.approx(table["top_overlap"].median())
    assert result["params"]["method"] == "reinit" and result["params"]["n_top"] == 10


def test_randomization_check_of_an_unchanged_network_agrees_fully(simulated, monkeypatch):
    """The comparison itself: a 'randomisation' that changes nothing must give identical rankings."""
    monkeypatch.setattr(_randomization, "_randomized", lambda module, method, seed: module)
    adata = simulated.copy()
    gbumap.tl.randomization_check(adata, "cell_type", n_randomizations=1)
    table = adata.uns["randomization_gbumap"]["per_group"]
    np.testing.assert_allclose(table["top_overlap"], 1.0)
    np.testing.assert_allclose(table["spearman"], 1.0)


@pytest.mark.parametrize("method", ["reinit", "shuffle"])
def test_randomized_networks_keep_the_architecture_and_change_the_weights(simulated, method):
    module = gbumap.get.model(simulated).encoder_
    other = _randomization._randomized(module, method, 0)
    assert [p.shape for p in other.parameters()] == [p.shape for p in module.parameters()]
    assert all(not np.array_equal(a.detach(), b.detach()) for a, b in zip(other.parameters(), module.parameters()))
    if method == "shuffle":  # same values, other places
        for a, b in zip(other.parameters(), module.parameters()):
            np.testing.assert_array_equal(np.sort(a.detach().ravel()), np.sort(b.detach().ravel()))


def test_randomizing_leaves_the_callers_random_state_alone(simulated):
    import torch

    module = gbumap.get.model(simulated).encoder_
    before = torch.get_rng_state()
    first = _randomization._randomized(module, "reinit", 3)
    assert torch.equal(torch.get_rng_state(), before)
    again = _randomization._randomized(module, "reinit", 3)  # seeded: the same weights every time
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))


def test_randomization_check_round_trips_and_refuses_bad_input(simulated, tmp_path):
    import anndata as ad

    adata = simulated.copy()
    out = gbumap.tl.randomization_check(adata, "cell_type", n_randomizations=1, method="shuffle", copy=True)
    assert "randomization_gbumap" not in adata.uns
    out.write_h5ad(tmp_path / "r.h5ad")
    back = ad.read_h5ad(tmp_path / "r.h5ad")
    pd.testing.assert_frame_equal(back.uns["randomization_gbumap"]["per_group"],
                                  out.uns["randomization_gbumap"]["per_group"], check_names=False)
    before = set(adata.uns)
    with pytest.raises(ValueError, match="n_randomizations"):
        gbumap.tl.randomization_check(adata, "cell_type", n_randomizations=0)
    with pytest.raises(ValueError, match="method must be"):
        gbumap.tl.randomization_check(adata, "cell_type", method="zero")
    with pytest.raises(KeyError, match="lineages"):
        gbumap.tl.randomization_check(adata, "lineages")
    assert set(adata.uns) == before
