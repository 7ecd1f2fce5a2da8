"""``gbumap.tl.randomization_check``: how much of an explanation comes from what the model learned."""

from __future__ import annotations

import copy as copy_module
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_input import sharing_arrays
from .._attribution import Reduction
from .._registry import ModelRecord, encode_record
from .._view import model_view
from ._rank import SCORES, SmallGroupWarning, check_groupby, rank_features

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["randomization_check", "randomized_registry"]

_SCRATCH_KEY = "_gbumap_randomized"


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


def randomized_registry(record: ModelRecord, method: str, seed: int) -> dict:
    """``uns`` registry of ``record``'s model with a randomised encoder, everything else unchanged."""
    model = copy_module.copy(record.model)  # shares the projection; gets its own encoder
    model.encoder_ = _randomized(record.model.encoder_, method, seed)
    return encode_record(record.replace(model=model))


def _group_values(result, genes: np.ndarray, field: str) -> np.ndarray:
    """``(n_groups, n_genes)`` values of a ranking's per-group ``field``, in the order of ``genes``."""
    index = pd.Index(genes)
    out = np.empty((len(result["names"].dtype.names), len(genes)))
    for i, group in enumerate(result["names"].dtype.names):
        order = index.get_indexer(np.asarray(result["names"][group]).astype(str))
        out[i, order] = np.asarray(result[field][group], dtype=np.float64)
    return out


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
    adata
        AnnData with a fitted model under ``key``.
    groupby
        Categorical ``obs`` column defining the groups.
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

    check_groupby(adata, groupby)
    if isinstance(n_randomizations, bool) or int(n_randomizations) < 1:
        raise ValueError(f"n_randomizations must be a positive integer; got {n_randomizations!r}.")
    if method not in ("reinit", "shuffle"):
        raise ValueError(f"method must be 'reinit' or 'shuffle'; got {method!r}.")
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {score!r}.")
    if isinstance(n_top, bool) or int(n_top) < 1:
        raise ValueError(f"n_top must be a positive integer; got {n_top!r}.")
    view = model_view(adata, key)
    genes = view.feature_names
    n_top = min(int(n_top), len(genes))

    # work on a shell sharing adata's arrays: adata itself is written only at the end
    shell = sharing_arrays(adata, obs_columns=[groupby], uns_keys=[key])
    rank_features(shell, groupby, key=key, score=score, reduction=reduction, key_added="trained", batch_size=batch_size)
    trained = _group_values(shell.uns["trained"], genes, "scores")
    trained_mean = _group_values(shell.uns["trained"], genes, "mean_contribution")
    groups = list(shell.uns["trained"]["names"].dtype.names)
    top_trained = np.argsort(-trained, axis=1, kind="stable")[:, :n_top]

    overlaps, correlations = [], []
    for r in range(int(n_randomizations)):
        # no stored Jacobians under this key: the contributions are computed from the randomised model
        shell.uns[_SCRATCH_KEY] = randomized_registry(view.record, method, int(random_state) + r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallGroupWarning)  # said once, by the trained model's ranking
            rank_features(shell, groupby, key=_SCRATCH_KEY, score=score, reduction=reduction, key_added="random",
                          batch_size=batch_size)
        random_scores = _group_values(shell.uns["random"], genes, "scores")
        random_mean = _group_values(shell.uns["random"], genes, "mean_contribution")
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
    target = adata.copy() if copy else adata
    target.uns[key_added or f"randomization_{key}"] = result
    return target if copy else None
