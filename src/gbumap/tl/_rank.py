"""``gbumap.tl.rank_features``: per-group gene rankings from contributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from anndata import AnnData

from .._attribution import Reduction, check_reduction
from .._docs import MODEL_GROUPBY, doc_params
from .._ranking import (
    MIN_GROUP_SIZE,
    SCORES,
    SmallGroupWarning,
    check_score,
    rank_groups,
    score_label,
    warn_small_groups,
)
from .._results import Result, result_key, write_result
from .._validation import check_batch_size, obs_column, obs_groups
from .._view import model_view

__all__ = ["rank_features", "SCORES", "score_label", "MIN_GROUP_SIZE", "SmallGroupWarning", "warn_small_groups"]


@doc_params(model_groupby=MODEL_GROUPBY)
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
    modality: str | None = None,
) -> AnnData | None:
    """Rank genes per group by their contributions to the embedding.

    The result is written in the format of ``sc.tl.rank_genes_groups``, so
    ``sc.get.rank_genes_groups_df(adata, group, key=key_added)`` and
    ``sc.pl.rank_genes_groups_dotplot(adata, key=key_added)`` read it.

    Parameters
    ----------
    {model_groupby}
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
        Subset of groups to rank (default: every group with cells). The
        rest is always every other labelled cell.
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
    modality
        For a multimodal model (genes and proteins): rank only this modality's
        features (e.g. ``"ADT"``), with p-values adjusted among them. Default:
        every feature of every modality in one ranking.

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
    ``modality``
        Multimodal models only: each listed feature's modality, in rank order.
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
    obs_column(adata, groupby)
    view = model_view(adata, key)
    labels = obs_groups(
        adata, groupby, groups, min_groups=2, min_cells=2, purpose="; ranking needs at least 2 per group"
    )
    batch_size = check_batch_size(batch_size)
    reduction = check_reduction(reduction, view.estimator.n_components)
    check_score(score)
    key_added = result_key(adata, "rank_features", key_added, key)
    warn_small_groups(labels.names, labels.sizes, groupby, key_added)
    block = rank_groups(
        adata, view, labels, reduction=reduction, score=score, n_genes=n_genes, layer=layer, batch_size=batch_size,
        modality=modality,
    )
    return write_result(adata, key_added, Result("rank_features", block), copy=copy)
