"""``gbumap.tl.randomization_check``: how much of an explanation comes from what the model learned."""

from __future__ import annotations

import copy as copy_module
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._attribution import Reduction, check_reduction
from .._docs import MODEL_GROUPBY, doc_params
from .._ranking import check_score, rank_groups, ranked_values, warn_small_groups
from .._registry import ModelRecord, encode_record
from .._results import Result, result_key, write_result
from .._runs import run_model, run_view
from .._validation import check_batch_size, check_int, obs_groups
from .._view import model_view

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["randomization_check", "randomized_model", "randomized_registry"]


def _randomized(module: torch.nn.Module, method: str, seed: int) -> torch.nn.Module:
    """A copy of ``module`` with re-initialised (``"reinit"``) or shuffled (``"shuffle"``) weights."""
    import torch

    out = copy_module.deepcopy(module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if method == "shuffle":
            for param in out.parameters():
                flat = param.reshape(-1)
                param.copy_(flat[torch.randperm(flat.numel(), generator=generator)].reshape(param.shape))
            return out
        # reset_parameters draws from torch's global generator: seed it inside a fork so the
        # caller's random state is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in [m for m in out.modules() if hasattr(m, "reset_parameters")]:
                m.reset_parameters()
            if hasattr(out, "linears"):  # gbumap's encoder: the initialisation it was trained from
                for lin in out.linears:
                    torch.nn.init.kaiming_normal_(lin.weight, a=out.negative_slope, nonlinearity="leaky_relu")
    return out


def randomized_model(record: ModelRecord, method: str, seed: int):
    """``record``'s model with a randomised encoder (:func:`_randomized`), sharing everything else."""
    return run_model(record.model, _randomized(record.model.encoder_, method, seed), None)


def randomized_registry(record: ModelRecord, method: str, seed: int) -> dict:
    """``uns`` registry of ``record``'s model with a randomised encoder, everything else unchanged.

    For storing a randomised model in an AnnData (``benchmarks/ranking_scores.py`` does);
    :func:`randomization_check` ranks the randomised models without storing them.
    """
    return encode_record(record.replace(model=randomized_model(record, method, seed)))


@doc_params(model_groupby=MODEL_GROUPBY)
def randomization_check(
    adata: AnnData,
    groupby: str,
    *,
    key: str = "gbumap",
    n_randomizations: int = 3,
    method: Literal["reinit", "shuffle"] = "reinit",
    score: str = "weighted_mean",
    reduction: Reduction = "l2",
    n_top: int = 10,
    random_state: int = 0,
    batch_size: int = 4096,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Compare each group's gene ranking with the ranking of the same network with random weights.

    A contribution is ``J(x)·(x − b)``: even a network that learned nothing
    gives large contributions to genes far from the baseline, so a gene list
    can look right for reasons unrelated to the map (the "sanity check" of
    Adebayo et al., 2018). This check ranks the genes of every group twice,
    with the trained encoder and with ``n_randomizations`` copies of it whose
    weights are re-initialised (``method="reinit"``) or shuffled within each
    weight matrix (``"shuffle"``), everything else (PCA, baseline, input
    scaling, ranking) unchanged, and reports how alike the lists are.

    Read it per group. ``top_overlap`` compares the final lists (the
    default score also weighs each gene by its detection rates, which do not
    depend on the model at all, so some overlap is expected); ``spearman``
    compares the part that depends on the model, the group's mean
    contribution of every gene. Values near 1 mean the explanation follows
    the expression offsets and the trained map adds little to it; low values
    mean it reflects what the model learned about the layout. Neither value
    says the list is biologically right.

    Parameters
    ----------
    {model_groupby}
    key
        The model key.
    n_randomizations
        Randomised copies to average over.
    method
        ``"reinit"``: fresh weights from the encoder's own initialisation;
        ``"shuffle"``: each weight matrix's entries permuted (same weight
        distribution, no learned structure).
    score, reduction
        The ranking compared, as in :func:`gbumap.tl.rank_features`.
    n_top
        Size of the top lists whose overlap is reported.
    random_state
        Seed of the first randomisation (the others use the next seeds).
    batch_size
        Cells per batch.
    key_added
        ``uns`` key of the result (default ``"randomization_<key>"``).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the new AnnData, with ``uns[key_added]`` holding ``params``
    and ``per_group``: a DataFrame (one row per group) with
    ``top_overlap`` (mean share of the trained top ``n_top`` found in the
    randomised top ``n_top``), ``top_overlap_sd`` and ``spearman`` (mean rank
    correlation, over all genes, of the group's mean contribution under the
    trained and the randomised network), and ``summary``: their medians over
    groups.

    Examples
    --------
    >>> gbumap.tl.randomization_check(adata, "bulk_labels")  # doctest: +SKIP
    >>> adata.uns["randomization_gbumap"]["per_group"]  # doctest: +SKIP
    """
    from scipy.stats import spearmanr

    labels = obs_groups(adata, groupby, min_groups=2, min_cells=2, purpose="; ranking needs at least 2 per group")
    n_randomizations = check_int(n_randomizations, "n_randomizations")
    if method not in ("reinit", "shuffle"):
        raise ValueError(f"method must be 'reinit' or 'shuffle'; got {method!r}.")
    check_score(score)
    n_top = check_int(n_top, "n_top")
    view = model_view(adata, key)
    reduction = check_reduction(reduction, view.estimator.n_components)
    batch_size = check_batch_size(batch_size)
    key_added = result_key(adata, "randomization", key_added, key)
    genes = view.feature_names
    n_top = min(int(n_top), len(genes))

    # the trained model and every randomised copy are ranked as tl.rank_features ranks; nothing is written
    # until the end, and the randomised models are never stored
    warn_small_groups(labels.names, labels.sizes, groupby, None)
    ranking = dict(reduction=reduction, score=score, batch_size=batch_size)
    trained_ranking = rank_groups(adata, view, labels, **ranking)
    trained = ranked_values(trained_ranking, genes, "scores")
    trained_mean = ranked_values(trained_ranking, genes, "mean_contribution")
    groups = list(trained_ranking["names"].dtype.names)
    top_trained = np.argsort(-trained, axis=1, kind="stable")[:, :n_top]

    overlaps, correlations = [], []
    for r in range(int(n_randomizations)):
        seed = int(random_state) + r
        random_view = run_view(view, randomized_model(view.record, method, seed), f"{key} (randomised, seed {seed})")
        random_ranking = rank_groups(adata, random_view, labels, **ranking)
        random_scores = ranked_values(random_ranking, genes, "scores")
        random_mean = ranked_values(random_ranking, genes, "mean_contribution")
        top_random = np.argsort(-random_scores, axis=1, kind="stable")[:, :n_top]
        overlaps.append([len(np.intersect1d(a, b)) / n_top for a, b in zip(top_trained, top_random)])
        correlations.append([spearmanr(a, b).statistic for a, b in zip(trained_mean, random_mean)])
    overlaps, correlations = np.array(overlaps), np.array(correlations)
    per_group = pd.DataFrame(
        {
            "top_overlap": overlaps.mean(0),
            "top_overlap_sd": overlaps.std(0, ddof=1) if len(overlaps) > 1 else np.zeros(len(groups)),
            "spearman": correlations.mean(0),
        },
        index=pd.Index(groups, name=groupby),
    )
    result = {
        "params": {
            "groupby": groupby,
            "model_key": key,
            "n_randomizations": int(n_randomizations),
            "method": method,
            "score": score,
            "reduction": str(reduction),
            "n_top": int(n_top),
            "random_state": int(random_state),
        },
        "per_group": per_group,
        "summary": {"median_top_overlap": float(per_group["top_overlap"].median()),
                    "median_spearman": float(per_group["spearman"].median())},
    }
    return write_result(adata, key_added, Result("randomization", result), copy=copy)
