"""``gbumap.tl.rank_features``: per-group gene rankings from contributions."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_input import missing_key_error
from .._attribution import Reduction, check_reduction, reduce_contributions, reduction_label
from .._dask import is_dask_array
from .._validation import check_batch_size
from .._view import model_view

__all__ = ["rank_features", "SCORES", "score_label", "MIN_GROUP_SIZE", "SmallGroupWarning", "check_groupby",
           "warn_small_groups"]

#: Groups with fewer cells than this get a :class:`SmallGroupWarning`: their top-10 lists are
#: fragile. Measured by ``benchmarks/small_groups.py`` (the smallest subset size at which random
#: subsets of large groups keep at least 80% of the whole group's top 10, on pbmc68k_reduced and
#: on the simulator; see :doc:`/performance`).
MIN_GROUP_SIZE = 30


class SmallGroupWarning(UserWarning):
    """A group ranked by :func:`gbumap.tl.rank_features` has fewer than 30 cells: its gene list is fragile.

    Silence it with ``warnings.filterwarnings("ignore", category=gbumap.tl.SmallGroupWarning)``.

    Examples
    --------
    >>> import warnings, gbumap
    >>> warnings.filterwarnings("ignore", category=gbumap.tl.SmallGroupWarning)
    >>> issubclass(gbumap.tl.SmallGroupWarning, UserWarning)
    True
    """

#: What each ``score`` ranks by; ``{r}`` is the per-cell reduction's name.
SCORES = {
    "weighted_mean": "mean {r} in the group × max(0, pts − pts_rest)",
    "t": "Welch's t of the {r}, group vs rest",
    "logfc": "log2 ratio of the group's mean {r} to the rest's",
    "mean": "mean {r} in the group",
}


def score_label(score: str, reduction: Reduction = "l2", key: str = "gbumap") -> str:
    """What a ranking's ``scores`` are, in words (axis labels, summaries)."""
    return SCORES.get(score, score).format(r=reduction_label(reduction, key))


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


def _expression(adata: AnnData, view, layer: str | None):
    """The matrix whose values give detection rates and mean expression, columns in the model's gene order.

    Dask input stays lazy (the rows of each batch are read when needed).
    """
    if layer is None:
        return view.matrix(adata, lazy=True)
    if not view.gene_level:
        raise ValueError(
            f"Model {view.key!r} explains columns of {view.spec.description}, not genes; layer= cannot be used."
        )
    if layer not in adata.layers:
        raise missing_key_error("layer", layer, adata.layers.keys())
    from .._anndata_input import InputSpec, feature_matrix

    matrix, _ = feature_matrix(adata, InputSpec(layer=layer), view.feature_names, lazy=True)
    return matrix


def check_groupby(adata: AnnData, groupby: str) -> None:
    """Raise unless ``obs[groupby]`` exists and holds at least two groups of cells."""
    if groupby not in adata.obs.columns:
        raise missing_key_error("obs column", groupby, adata.obs.columns)
    present = pd.unique(adata.obs[groupby].dropna())
    if len(present) < 2:
        only = repr(str(present[0])) if len(present) else "no labelled cells"
        raise ValueError(
            f"obs[{groupby!r}] has a single group among its cells ({only}); groups are explained against "
            "each other, so it needs at least two groups."
        )


def _outside_package_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside gbumap (3.11 lacks skip_file_prefixes)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1  # the function that calls warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def warn_small_groups(groups: Sequence[str], sizes: Sequence[int], groupby: str, key_added: str) -> None:
    """Warn, naming each group and its size, when a ranked group has fewer than ``MIN_GROUP_SIZE`` cells."""
    small = [(str(g), int(n)) for g, n in zip(groups, sizes) if n < MIN_GROUP_SIZE]
    if not small:
        return
    named = ", ".join(f"{g!r} ({n} cells)" for g, n in small)
    warnings.warn(
        f"Small groups in obs[{groupby!r}]: {named}. With fewer than {MIN_GROUP_SIZE} cells a group's gene list "
        "is fragile: random subsets of 5 to 20 cells of large pbmc68k_reduced and simulated groups shared only "
        "62-90% of the whole group's top 10 (benchmarks/small_groups.py), and a few unusual cells can lead the "
        "list. Read these lists as provisional: collect more cells, merge the group with a related one, or "
        f"leave it out with groups=. The sizes are in uns[{key_added!r}]['group_sizes'].",
        SmallGroupWarning,
        stacklevel=_outside_package_stacklevel(),
    )


def rank_features(
    adata: AnnData,
    groupby: str,
    *,
    key: str = "gbumap",
    reduction: Reduction = "l2",
    score: Literal["weighted_mean", "t", "logfc", "mean"] = "weighted_mean",
    groups: Sequence[str] | None = None,
    n_genes: int | None = None,
    layer: str | None = None,
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
        What ranks the genes (and fills ``scores``). ``pts`` and ``pts_rest``
        are the fractions of the group's and of the other cells in which the
        gene is above 0.

        ``"weighted_mean"`` (default)
            The group's mean contribution times ``max(0, pts − pts_rest)``:
            genes that move this group's cells strongly *and* are expressed
            in more of its cells than of the others'. A gene expressed as
            often (or less often) elsewhere scores 0, so every gene in a
            default top list is expressed in a larger fraction of the group
            than of the rest.
        ``"t"``
            Welch's t statistic of the per-cell contributions, group vs rest.
        ``"logfc"``
            The log2 ratio of the group's mean contribution to the rest's
            (for a signed axis: their difference). It favours genes that are
            nearly absent elsewhere, however little they place the group.
        ``"mean"``
            The group's mean contribution alone; it also ranks high the genes
            whose *absence* places the group (negative markers).

        Measured by ``benchmarks/ranking_scores.py`` (three seeds of
        ``pbmc68k_reduced``; simulator AUROC against the true programs):
        see :doc:`/performance` for the table. In short, ``weighted_mean`` finds
        as many canonical monocyte and NK markers in the top 10 as
        ``sc.tl.rank_genes_groups`` (t-test) or more, one fewer B-cell marker,
        and recovers the simulated programs with an AUROC of 0.96; ``logfc``
        recovers them as well (0.98) but finds almost no canonical markers on
        real cells; ``mean`` lists negative markers.
    groups
        Subset of groups to rank (default: all). The rest is always every
        other cell.
    n_genes
        Genes kept per group (default: all the model's genes).
    layer
        Where the expression for ``pts``, ``pts_rest`` and ``mean_expression``
        (and so the default score's detection weight) is read: a layer with
        the model's genes. Default: the model's own input. Pass the
        log-normalised layer when the model was trained on scaled or
        regressed values, where "above 0" means "above average", not
        "detected".
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
    ``pct_nz_group``, ``pct_nz_reference``
        Fraction of the group's cells and of the other cells in which each
        gene is above 0 (``pts`` and ``pts_rest`` above).
    ``mean_contribution``
        The group's mean per-cell contribution (in the chosen ``reduction``).
    ``mean_expression``
        The group's mean of the model's input, to tell genes that are high in
        a group from genes that place it by being low.
    ``group_sizes``
        Each ranked group's number of cells: one record, one field per group
        (``uns[key_added]["group_sizes"]["CD34+"][0]``).

    Every ranked field is a record array with one field per group, in rank order,
    as ``names``; so any group name (``"CD4+/CD25 T Reg"`` too) is stored
    without a key of its own and the result writes to ``.h5ad`` and zarr.
    :func:`gbumap.get.rank_features_df` returns one group as a table.

    Warns (:class:`~gbumap.tl.SmallGroupWarning`, a ``UserWarning``) naming
    every ranked group with fewer than 30 cells, and its size. 30 is measured
    by ``benchmarks/small_groups.py``: random subsets of 5 to 20 cells of
    large groups kept on average 79–90% (``pbmc68k_reduced``) and 62–79%
    (simulator) of the whole group's top 10; subsets of 30 kept 95% and 86%
    (see :doc:`/performance`).

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
    reduction = check_reduction(reduction, view.estimator.n_components)
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {score!r}.")
    key_added = key_added or f"rank_features_{key}"
    warn_small_groups(groups, sizes, groupby, key_added)

    names = view.feature_names
    n_feat = len(names)
    n_grp = len(groups)
    sums = np.zeros((n_grp, n_feat))
    sq = np.zeros((n_grp, n_feat))
    expr_sum = np.zeros((n_grp, n_feat))
    expr_nz = np.zeros((n_grp, n_feat))
    tot_sum = np.zeros(n_feat)
    tot_sq = np.zeros(n_feat)
    tot_nz = np.zeros(n_feat)
    # the expression is the model's own input unless layer= names another: then each batch is read once
    X = None if layer is None else _expression(adata, view, layer)
    labelled = np.flatnonzero(codes >= 0)
    for rows, contrib, block in view.iter_contributions(adata, labelled, batch_size=batch_size, with_input=True):
        per_cell = reduce_contributions(contrib, reduction).astype(np.float64)
        onehot = (codes[rows][:, None] == group_codes[None, :]).astype(np.float64)
        if X is None:
            expr = block
        else:
            expr = X[rows]
            expr = expr.compute() if is_dask_array(expr) else expr
            expr = expr.toarray() if sp.issparse(expr) else np.asarray(expr)
        nz = (expr > 0).astype(np.float64)
        sums += onehot.T @ per_cell
        sq += onehot.T @ per_cell**2
        expr_sum += onehot.T @ expr
        expr_nz += onehot.T @ nz
        tot_sum += per_cell.sum(0)
        tot_sq += (per_cell**2).sum(0)
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

    pts_in = expr_nz / n_in
    pts_rest = (tot_nz[None, :] - expr_nz) / safe_rest
    if score == "weighted_mean":
        statistic = mean_in * np.maximum(pts_in - pts_rest, 0.0)
    else:
        statistic = {"t": t, "logfc": lfc, "mean": mean_in}[score]
    keep = n_feat if n_genes is None else min(int(n_genes), n_feat)
    order = np.argsort(-statistic, axis=1, kind="stable")[:, :keep]
    result = {}
    fields = {
        "names": (names, "O"),
        "scores": (statistic, "float32"),
        "logfoldchanges": (lfc, "float32"),
        "pvals": (pvals, "float64"),
        "pct_nz_group": (pts_in, "float32"),
        "pct_nz_reference": (pts_rest, "float32"),
        "mean_contribution": (mean_in, "float32"),
        "mean_expression": (expr_sum / n_in, "float32"),
    }
    group_names = [str(g) for g in groups]
    for field, (values, dtype) in fields.items():
        cols = {}
        for gi, g in enumerate(group_names):
            cols[g] = values[order[gi]] if field == "names" else values[gi][order[gi]]
        result[field] = _recarray(cols, dtype)
    adj = {g: _benjamini_hochberg(pvals[gi])[order[gi]] for gi, g in enumerate(group_names)}
    result["pvals_adj"] = _recarray(adj, "float64")
    # one record, one field per group (as names: any group name writes to .h5ad and zarr)
    result["group_sizes"] = _recarray({g: [int(n)] for g, n in zip(group_names, sizes)}, "int64")
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
        "expression_layer": "None" if layer is None else str(layer),
    }
    target = adata.copy() if copy else adata
    target.uns[key_added] = result
    return target if copy else None
