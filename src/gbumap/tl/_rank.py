"""``gbumap.tl.rank_features``: per-group gene rankings from contributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_input import missing_key_error
from .._attribution import Reduction, reduce_contributions
from .._validation import check_batch_size
from ..get._model import model_view

__all__ = ["rank_features"]


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(ranked, 0, 1)
    return out


def _recarray(columns: dict[str, np.ndarray], dtype) -> np.recarray:
    return pd.DataFrame(columns).to_records(index=False, column_dtypes={k: dtype for k in columns})


def check_groupby(adata: AnnData, groupby: str) -> None:
    """Raise unless ``obs[groupby]`` exists and holds at least two groups of cells."""
    if groupby not in adata.obs.columns:
        raise missing_key_error("obs column", groupby, adata.obs.columns)
    present = pd.unique(adata.obs[groupby].dropna())
    if len(present) < 2:
        only = repr(str(present[0])) if len(present) else "no labelled cells"
        raise ValueError(
            f"obs[{groupby!r}] has a single group among its cells ({only}); rank_features compares each "
            "group with the rest, so it needs at least two groups."
        )


def rank_features(
    adata: AnnData,
    groupby: str,
    *,
    key: str = "gbumap",
    reduction: Reduction = "l2",
    score: Literal["logfc", "t", "mean"] = "logfc",
    groups: Sequence[str] | None = None,
    n_genes: int | None = None,
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes per group by their contributions to the embedding.

    The result is written in the format of ``sc.tl.rank_genes_groups``, so
    ``sc.get.rank_genes_groups_df(adata, group, key=key_added)`` and
    ``sc.pl.rank_genes_groups_dotplot(adata, key=key_added)`` read it.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    groupby
        Categorical ``obs`` column defining the groups.
    key
        The model key.
    reduction
        Per-cell score of a gene: ``"l2"`` (magnitude of its contribution
        vector), ``"normed_l2"`` (that magnitude as a share of the cell's
        total), or an axis index (signed contribution along that axis: genes
        pushing cells towards the positive end rank first).
    score
        What ranks the genes (and fills ``scores``): ``"logfc"`` (default),
        the log2 ratio of the group's mean contribution to the rest's (for a
        signed axis: their difference) — genes that move this group's cells
        more than they move other cells; ``"t"``, Welch's t statistic of the
        per-cell contributions, group against rest; ``"mean"``, the group's
        mean contribution alone, which also ranks high the genes that move
        every cell (e.g. those whose absence in this group places it away
        from the others). On simulated data with known programs, ``"logfc"``
        recovered each type's genes best (mean AUROC 0.994, against 0.969 for
        ``"t"`` and 0.803 for ``"mean"``; ``benchmarks/ranking_scores.py``,
        shown on the performance page).
    groups
        Subset of groups to rank (default: all). The rest is always every
        other cell.
    n_genes
        Genes kept per group (default: all the model's genes).
    key_added
        ``uns`` key of the result (default ``"rank_features_<key>"``).
    batch_size
        Cells per batch.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the new AnnData, with ``uns[key_added]`` holding:

    ``names``, ``scores``
        Per group, genes sorted by ``scores``, the statistic chosen by ``score``.
    ``logfoldchanges``
        log2 of the group's mean over the rest's mean (for ``"l2"`` and
        ``"normed_l2"``); for a signed axis, the group-minus-rest difference.
    ``pvals``, ``pvals_adj``
        Welch's t-test of the per-cell scores, group vs rest, and its
        Benjamini–Hochberg correction per group.
    ``pts``, ``pts_rest``
        Fraction of cells expressing each gene (value > 0) in the group and in
        the rest, as in ``rank_genes_groups(pts=True)``.
    ``mean_contribution``
        The group's mean contribution per gene (genes × groups DataFrame).
    ``mean_expression``
        Mean expression per gene and group (genes × groups DataFrame), to
        filter out genes that move cells without being expressed there.

    Examples
    --------
    >>> gbumap.tl.rank_features(adata, "bulk_labels")  # doctest: +SKIP
    >>> sc.get.rank_genes_groups_df(adata, "CD14+ Monocyte", key="rank_features_gbumap")  # doctest: +SKIP
    """
    if groupby not in adata.obs.columns:
        raise missing_key_error("obs column", groupby, adata.obs.columns)
    view = model_view(adata, key)
    labels = adata.obs[groupby]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype("category")
    categories = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy()
    if groups is None:
        groups = categories
    unknown = [g for g in groups if str(g) not in categories]
    if unknown:
        raise KeyError(f"Groups {unknown} not in obs[{groupby!r}]; it has {categories}.")
    check_groupby(adata, groupby)
    batch_size = check_batch_size(batch_size)
    group_codes = np.array([categories.index(str(g)) for g in groups])
    sizes = np.bincount(codes[codes >= 0], minlength=len(categories))[group_codes]
    if (sizes < 2).any():
        small = [g for g, s in zip(groups, sizes) if s < 2]
        raise ValueError(f"Groups {small} have fewer than 2 cells; ranking needs at least 2 per group.")
    if isinstance(reduction, str) and reduction not in ("l2", "normed_l2"):
        raise ValueError(f"reduction must be 'l2', 'normed_l2' or an axis index; got {reduction!r}.")
    if reduction is None:
        raise ValueError("rank_features needs a reduction: 'l2', 'normed_l2' or an axis index.")
    if score not in ("t", "logfc", "mean"):
        raise ValueError(f"score must be 't', 'logfc' or 'mean'; got {score!r}.")

    names = view.feature_names
    n_feat = len(names)
    n_grp = len(groups)
    sums = np.zeros((n_grp, n_feat))
    sq = np.zeros((n_grp, n_feat))
    expr_sum = np.zeros((n_grp, n_feat))
    expr_nz = np.zeros((n_grp, n_feat))
    tot_sum = np.zeros(n_feat)
    tot_sq = np.zeros(n_feat)
    tot_expr = np.zeros(n_feat)
    tot_nz = np.zeros(n_feat)
    X = view.matrix(adata)
    labelled = np.flatnonzero(codes >= 0)
    for rows, contrib in view.iter_contributions(adata, labelled, batch_size=batch_size):
        per_cell = reduce_contributions(contrib, reduction).astype(np.float64)
        onehot = (codes[rows][:, None] == group_codes[None, :]).astype(np.float64)
        expr = X[rows]
        expr = expr.toarray() if sp.issparse(expr) else np.asarray(expr)
        nz = (expr > 0).astype(np.float64)
        sums += onehot.T @ per_cell
        sq += onehot.T @ per_cell**2
        expr_sum += onehot.T @ expr
        expr_nz += onehot.T @ nz
        tot_sum += per_cell.sum(0)
        tot_sq += (per_cell**2).sum(0)
        tot_expr += expr.sum(0)
        tot_nz += nz.sum(0)

    n_all = len(labelled)
    n_in = sizes[:, None].astype(np.float64)
    n_rest = n_all - n_in
    mean_in = sums / n_in
    var_in = np.maximum(sq / n_in - mean_in**2, 0) * n_in / np.maximum(n_in - 1, 1)
    rest_sum = tot_sum[None, :] - sums
    rest_sq = tot_sq[None, :] - sq
    safe_rest = np.maximum(n_rest, 1)
    mean_rest = rest_sum / safe_rest
    var_rest = np.maximum(rest_sq / safe_rest - mean_rest**2, 0) * safe_rest / np.maximum(safe_rest - 1, 1)

    from scipy import stats

    se = np.sqrt(var_in / n_in + var_rest / safe_rest)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, (mean_in - mean_rest) / se, 0.0)
        dof_num = (var_in / n_in + var_rest / safe_rest) ** 2
        dof_den = (var_in / n_in) ** 2 / np.maximum(n_in - 1, 1) + (var_rest / safe_rest) ** 2 / np.maximum(
            safe_rest - 1, 1
        )
        dof = np.where(dof_den > 0, dof_num / dof_den, 1.0)
    pvals = 2 * stats.t.sf(np.abs(t), dof)
    pvals = np.where(se > 0, pvals, 1.0)
    signed = not isinstance(reduction, str)
    if signed:
        lfc = mean_in - mean_rest
    else:
        eps = 1e-9
        lfc = np.log2((mean_in + eps) / (mean_rest + eps))

    statistic = {"t": t, "logfc": lfc, "mean": mean_in}[score]
    keep = n_feat if n_genes is None else min(int(n_genes), n_feat)
    order = np.argsort(-statistic, axis=1, kind="stable")[:, :keep]
    result = {}
    fields = {
        "names": (names, "O"),
        "scores": (statistic, "float32"),
        "logfoldchanges": (lfc, "float32"),
        "pvals": (pvals, "float64"),
    }
    group_names = [str(g) for g in groups]
    for field, (values, dtype) in fields.items():
        cols = {}
        for gi, g in enumerate(group_names):
            cols[g] = values[order[gi]] if field == "names" else values[gi][order[gi]]
        result[field] = _recarray(cols, dtype)
    adj = {g: _benjamini_hochberg(pvals[gi])[order[gi]] for gi, g in enumerate(group_names)}
    result["pvals_adj"] = _recarray(adj, "float64")
    result["params"] = {
        "groupby": groupby,
        "reference": "rest",
        "method": "gbumap_contributions",
        "use_raw": False,
        "layer": str(view.spec.layer) if view.spec.layer else "None",
        "corr_method": "benjamini-hochberg",
        "model_key": key,
        "reduction": str(reduction),
        "score": score,
        "baseline": str(view.estimator.baseline),
    }
    result["pts"] = pd.DataFrame((expr_nz / n_in).T, index=names, columns=group_names)
    result["pts_rest"] = pd.DataFrame(
        ((tot_nz[None, :] - expr_nz) / safe_rest).T, index=names, columns=group_names
    )
    result["mean_contribution"] = pd.DataFrame(mean_in.T, index=names, columns=group_names)
    result["mean_expression"] = pd.DataFrame((expr_sum / n_in).T, index=names, columns=group_names)
    target = adata.copy() if copy else adata
    target.uns[key_added or f"rank_features_{key}"] = result
    return target if copy else None
