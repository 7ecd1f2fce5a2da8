"""Per-group gene rankings from contributions: the computation behind ``tl.rank_features``.

It lives below ``tl``, ``get`` and ``pl`` so that each can call it:
``tl.rank_features`` writes what it returns, ``pl.rank_features`` draws it
without writing, and ``tl.stability`` and ``tl.randomization_check`` rank
further models with it, with no AnnData in between. The block's fields are
owned by :mod:`gbumap._results` (kind ``"rank_features"``).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._attribution import Reduction, reduce_contributions, reduction_label
from ._dask import is_dask_array
from ._validation import GroupLabels, check_batch_size, missing_key_error

__all__ = [
    "MIN_GROUP_SIZE",
    "SCORES",
    "SmallGroupWarning",
    "benjamini_hochberg",
    "check_score",
    "rank_groups",
    "rank_positions",
    "ranked_values",
    "records",
    "score_label",
    "warn_small_groups",
]

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


def check_score(score: str) -> str:
    """``score`` after checking it is one of :data:`SCORES`."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {score!r}.")
    return score


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values, in the order of ``p``."""
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(ranked, 0, 1)
    return out


def records(columns: dict[str, np.ndarray], dtype) -> np.recarray:
    """A record array with one field per group (``rank_genes_groups``' layout: group names never become keys)."""
    return pd.DataFrame(columns).to_records(index=False, column_dtypes={k: dtype for k in columns})


def ranked_values(result: Mapping, genes: np.ndarray, field: str = "scores") -> np.ndarray:
    """``(n_groups, n_genes)`` values of a ranking's per-group ``field``, in the order of ``genes``."""
    index = pd.Index(genes)
    groups = result["names"].dtype.names
    out = np.empty((len(groups), len(genes)))
    for i, group in enumerate(groups):
        order = index.get_indexer(np.asarray(result["names"][group]).astype(str))
        out[i, order] = np.asarray(result[field][group], dtype=np.float64)
    return out


def rank_positions(result: Mapping, genes: np.ndarray) -> np.ndarray:
    """``(n_groups, n_genes)`` 1-based rank of every gene in a ranking, in the order of ``genes``."""
    index = pd.Index(genes)
    groups = result["names"].dtype.names
    out = np.empty((len(groups), len(genes)), dtype=np.int64)
    for i, group in enumerate(groups):
        out[i, index.get_indexer(np.asarray(result["names"][group]).astype(str))] = np.arange(1, len(genes) + 1)
    return out


def _outside_package_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside gbumap (3.11 lacks skip_file_prefixes)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1  # the function that calls warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def warn_small_groups(groups: Sequence[str], sizes: Sequence[int], groupby: str, key_added: str | None) -> None:
    """Warn, naming each group and its size, when a ranked group has fewer than ``MIN_GROUP_SIZE`` cells.

    ``key_added``: the ranking that records the sizes (``None`` when the result stores none).
    """
    small = [(str(g), int(n)) for g, n in zip(groups, sizes) if n < MIN_GROUP_SIZE]
    if not small:
        return
    named = ", ".join(f"{g!r} ({n} cells)" for g, n in small)
    warnings.warn(
        f"Small groups in obs[{groupby!r}]: {named}. With fewer than {MIN_GROUP_SIZE} cells a group's gene list "
        "is fragile: random subsets of 5 to 20 cells of large pbmc68k_reduced and simulated groups shared only "
        "62-90% of the whole group's top 10 (benchmarks/small_groups.py), and a few unusual cells can lead the "
        "list. Read these lists as provisional: collect more cells, merge the group with a related one, or "
        "leave it out with groups=."
        + ("" if key_added is None else f" The sizes are in uns[{key_added!r}]['group_sizes']."),
        SmallGroupWarning,
        stacklevel=_outside_package_stacklevel(),
    )


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
    from ._anndata_input import InputSpec, feature_matrix

    matrix, _ = feature_matrix(adata, InputSpec(layer=layer), view.feature_names, lazy=True)
    return matrix


def rank_groups(  # noqa: PLR0915 (one pass over the cells accumulating every statistic of every group)
    adata: AnnData,
    view,
    labels: GroupLabels,
    *,
    reduction: Reduction = "l2",
    score: str = "weighted_mean",
    n_genes: int | None = None,
    layer: str | None = None,
    batch_size: int = 4096,
    modality: str | None = None,
) -> dict:
    """The ranking of :func:`gbumap.tl.rank_features` as a block (a dict), written nowhere.

    Each group of ``labels.names`` is compared with every other labelled
    cell. ``view`` is the model (a :class:`~gbumap._view.ModelView`; its
    stored Jacobians are used when ``obsm`` holds them under its key);
    ``reduction`` is already checked (:func:`gbumap._attribution.check_reduction`).
    ``modality`` (a multimodal model) lists only that modality's features;
    their p-values are adjusted among themselves.
    """
    check_score(score)
    allowed = modality_features(view, modality)
    batch_size = check_batch_size(batch_size)
    codes = labels.codes
    group_codes = labels.name_codes
    sizes = labels.sizes
    groups = labels.names

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
    # several modalities: a modality measured above 0 in nearly every cell (CLR proteins, with their ambient
    # counts) is "detected" where it is above its mean instead (see dense_detection)
    info = view.record.modalities
    means = view.estimator.baseline_ if info is not None and view.estimator.baseline == "mean" else None
    above_nz = np.zeros((n_grp, n_feat)) if means is not None else None
    tot_above = np.zeros(n_feat) if means is not None else None
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
        if means is not None:
            above = (expr > means).astype(np.float64)
            above_nz += onehot.T @ above
            tot_above += above.sum(0)

    n_all = len(labelled)
    detection = None
    if means is not None:
        detection = dense_detection(info, tot_nz / max(n_all, 1))
        cols = np.flatnonzero(np.isin(info.feature_codes, [m for m, rule in enumerate(detection) if rule != "above 0"]))
        expr_nz[:, cols], tot_nz[cols] = above_nz[:, cols], tot_above[cols]
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
    info = view.record.modalities
    of_feature = None if info is None else info.of_features()
    if allowed is not None:
        names, of_feature = names[allowed], of_feature[allowed]
        statistic, lfc, pvals, pts_in, pts_rest = (a[:, allowed] for a in (statistic, lfc, pvals, pts_in, pts_rest))
        mean_in, expr_sum = mean_in[:, allowed], expr_sum[:, allowed]
        n_feat = len(allowed)
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
    if of_feature is not None:
        fields["modality"] = (of_feature, "O")
    group_names = [str(g) for g in groups]
    for field, (values, dtype) in fields.items():
        cols = {}
        for gi, g in enumerate(group_names):
            cols[g] = values[order[gi]] if values.ndim == 1 else values[gi][order[gi]]
        result[field] = records(cols, dtype)
    adj = {g: benjamini_hochberg(pvals[gi])[order[gi]] for gi, g in enumerate(group_names)}
    result["pvals_adj"] = records(adj, "float64")
    # one record, one field per group (as names: any group name writes to .h5ad and zarr)
    result["group_sizes"] = records({g: [int(n)] for g, n in zip(group_names, sizes)}, "int64")
    result["params"] = {
        "groupby": labels.groupby,
        "reference": "rest",
        "method": "gbumap_contributions",
        "use_raw": False,
        "layer": str(view.spec.layer) if view.spec.layer else "None",
        "corr_method": "benjamini-hochberg",
        "model_key": view.key,
        "reduction": str(reduction),
        "score": score,
        "baseline": str(view.estimator.baseline),
        "expression_layer": "None" if layer is None else str(layer),
    }
    if info is not None:
        result["params"]["modality"] = "all" if modality is None else str(modality)
    if detection is not None:
        result["params"]["detection"] = "; ".join(f"{n}: {rule}" for n, rule in zip(info.names, detection))
    return result


#: A modality whose features are above 0 in more than this share of the cells, on average, is dense.
DENSE_DETECTION = 0.9


def dense_detection(info, detected: np.ndarray) -> list[str]:
    """Per modality, what "detected" means for ``pts``: ``"above 0"``, or ``"above its mean"`` for a dense one.

    ``detected`` is each feature's share of cells above 0. Counts-like data
    (log-normalised RNA) are 0 in most cells, and "above 0" says the gene is
    expressed; CLR-normalised proteins are above 0 almost everywhere
    (ambient counts), so there "above 0" says nothing and the default score,
    weighted by ``pts − pts_rest``, would put every protein near 0.
    """
    rules = []
    for m in range(len(info.names)):
        share = float(np.mean(detected[info.feature_codes == m]))
        rules.append("above its mean" if share > DENSE_DETECTION else "above 0")
    return rules


def modality_features(view, modality: str | None) -> np.ndarray | None:
    """Positions of ``modality``'s features among the model's (``None``: all); an unknown name raises."""
    if modality is None:
        return None
    info = view.record.modalities
    if info is None:
        raise ValueError(
            f"modality={modality!r} needs a multimodal model; the model under uns[{view.key!r}] reads one modality."
        )
    if str(modality) not in set(info.names):
        raise ValueError(f"modality must be one of {list(info.names)}; got {modality!r}.")
    return info.columns(int(np.flatnonzero(info.names == str(modality))[0]))
