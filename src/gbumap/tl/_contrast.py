"""``gbumap.tl.contrast``: each gene's exact share of the vector between two groups on the map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from anndata import AnnData

from .._docs import BATCH_COPY, doc_params
from .._ranking import records
from .._results import KINDS, Result, result_key, write_result
from .._validation import check_batch_size, obs_groups
from .._view import GroupSums, ModelView, model_view

__all__ = ["contrast"]


def _split_terms(view: ModelView, mean_group: GroupSums, mean_ref: GroupSums) -> tuple[np.ndarray, np.ndarray]:
    """The difference and context parts of each gene's term, ``(axes, genes)`` each.

    difference: ``(J̄_group + J̄_ref)/2 · P_g · (x̄_group,g − x̄_ref,g)``; context:
    ``(J̄_group − J̄_ref) · P_g · (m_g − b_g)`` with ``m`` the midpoint of the
    groups' mean input (both divided by the degree).
    """
    est = view.estimator
    average_jac = view.feature_jacobian((mean_group.jacobian + mean_ref.jacobian) / 2)
    change_jac = view.feature_jacobian(mean_group.jacobian - mean_ref.jacobian)
    midpoint = (mean_group.expression + mean_ref.expression) / 2
    difference = average_jac * (mean_group.expression - mean_ref.expression)
    context = change_jac * (midpoint - est.baseline_)
    return difference / est.homogeneity_degree_, context / est.homogeneity_degree_


@doc_params(batch_copy=BATCH_COPY)
def contrast(
    adata: AnnData,
    groupby: str,
    group: str | Sequence[str],
    reference: str = "rest",
    *,
    score: Literal["difference", "total"] = "difference",
    key: str = "gbumap",
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Why a group sits apart from another on the map, gene by gene, exactly.

    The shift between the mean positions of ``group`` and ``reference`` is the
    sum over genes of the difference of their mean contributions,
    ``Δ = Σ_g T_g`` with ``T_g = C̄_g(group) − C̄_g(reference)``, with no
    approximation: each cell's contributions sum to its position. Each term
    splits exactly into three parts (``J̄`` a group's mean Jacobian mapped to
    genes through the loadings, ``x̄`` its mean input, ``m_g`` the midpoint of
    the two groups' mean input, ``b_g`` the model's baseline):

    - ``difference_term``: ``(J̄_group + J̄_ref)/2 · (x̄_group,g − x̄_ref,g)``,
      the gene's mean expression difference times how strongly the map reads
      the gene, on average over the two places. A gene both groups express
      alike has none.
    - ``context_term``: ``(J̄_group − J̄_ref) · (m_g − b_g)``, the gene's
      level common to both groups, read differently by the map in the two
      places (a shared lineage gene lands here).
    - ``covariance_term``: the rest, from how a gene's expression co-varies
      with the map's local reading of it inside each group.

    Each part is reported by its component along ``Δ`` (map units; positive:
    the gene pushes the group away from the reference, negative: it holds it
    towards it). Over all genes the three parts together sum to ``|Δ|``.
    ``across`` is the length of a gene's whole term across ``Δ`` (movement
    other genes cancel).

    The result is written in the format of ``sc.tl.rank_genes_groups``, one
    field per contrasted group, genes ordered by ``scores``, so
    ``sc.pl.rank_genes_groups(adata, key=key_added)`` draws it; read it with
    :func:`gbumap.get.rank_features_df` (``key=`` the result's key). It holds
    no p-values (the terms are exact, not estimates), so
    ``sc.get.rank_genes_groups_df``, which expects them, does not read it.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` and its embedding
        ``obsm["X_<key>"]``.
    groupby
        Categorical ``obs`` column defining the groups.
    group
        The group, or several groups, each contrasted with ``reference``.
    reference
        ``"rest"`` (all other labelled cells) or the name of one group.
    score
        What ``scores`` holds and ranks by: ``"difference"`` (the default)
        the difference part along ``Δ``, which ranks first the genes that
        differ between the groups and move them apart; ``"total"`` the
        whole term along ``Δ``, whose values sum to ``|Δ|`` over all genes.
        The method page compares the two on the simulator and on
        pbmc68k_reduced.
    key
        The model key.
    key_added
        ``uns`` key of the result (default ``"contrast_<key>"``).
    {batch_copy}
    ``None``, or the modified copy when ``copy=True``. Writes
    ``uns[key_added]`` with ``params``; rank-ordered record arrays ``names``,
    ``scores``, ``share`` (``scores / |Δ|``), ``across``, ``difference_term``,
    ``context_term`` and ``covariance_term``; ``centroid_shift`` (``Δ`` per group, from the
    embedding); ``reconstruction_gap`` (``max |Σ_g T_g − Δ| / |Δ|`` per
    group: float rounding only); and ``terms`` (``{"axis_1": …, …}``: each
    gene's total term on each map axis, in the order of ``names``, drawn by
    :func:`gbumap.pl.contrast`).

    Examples
    --------
    >>> gbumap.tl.contrast(adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B")  # doctest: +SKIP
    >>> gbumap.get.rank_features_df(adata, "CD14+ Monocyte", key="contrast_gbumap").head()  # doctest: +SKIP
    """
    if score not in ("difference", "total"):
        raise ValueError(f"score must be 'difference' or 'total'; got {score!r}.")
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    groups = obs_groups(adata, groupby, group, min_groups=2, what="group").names
    if reference != "rest":
        obs_groups(adata, groupby, reference, what="reference")
    if reference in groups:
        raise ValueError(
            f"reference {reference!r} is also a group to contrast; a group's shift against itself is zero. "
            "Choose another reference or reference='rest'."
        )
    if view.embedding_key not in adata.obsm:
        raise KeyError(
            f"obsm[{view.embedding_key!r}] not found; run gbumap.tl.fit(adata, key_added={key!r}) first."
        )
    key_added = result_key(adata, "contrast", key_added, key)
    labels = obs_groups(adata, groupby).labels
    labelled = np.flatnonzero(labels != None)  # noqa: E711 - elementwise on objects
    cell_labels = labels[labelled].astype(str)  # group names are compared as strings, as they are stored
    named = groups + ([] if reference == "rest" else [reference])
    masks = {name: cell_labels == name for name in named}
    too_small = {g: int(m.sum()) for g, m in masks.items() if m.sum() < 2}
    if reference == "rest":
        too_small.update({f"rest of {g}": int((~m).sum()) for g, m in masks.items() if (~m).sum() < 2})
    if too_small:
        raise ValueError(f"Groups with fewer than 2 cells cannot be contrasted: {too_small}.")

    emb = np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)
    jacobian = view.stored_jacobian(adata)
    members = {name: labelled[masks[name]] for name in named}
    sums = {name: view.group_sums(adata, rows, batch_size, jacobian) for name, rows in members.items()}
    if reference == "rest":
        total = view.group_sums(adata, labelled, batch_size, jacobian)

    fields = KINDS["contrast"].ranked
    columns: dict[str, dict[str, np.ndarray]] = {f: {} for f in fields}
    shift, gap = {}, {}
    axis_terms: list[dict[str, np.ndarray]] = [{} for _ in range(emb.shape[1])]
    for g in groups:
        rest = (total - sums[g]) if reference == "rest" else sums[reference]
        mean_group, mean_ref = sums[g].mean(), rest.mean()
        pos_group = emb[members[g]].mean(axis=0)
        pos_ref = emb[labelled[~masks[g]]].mean(axis=0) if reference == "rest" else emb[members[reference]].mean(axis=0)
        terms = mean_group.contributions - mean_ref.contributions  # (axes, genes)
        difference, context = _split_terms(view, mean_group, mean_ref)
        delta = pos_group - pos_ref
        length = float(np.linalg.norm(delta))
        if length == 0.0:
            raise ValueError(f"{g!r} and {reference!r} have the same mean position; there is no shift to explain.")
        direction = delta / length
        along = direction @ terms
        across = np.linalg.norm(terms - np.outer(direction, along), axis=0)
        parts = {"difference_term": direction @ difference, "context_term": direction @ context}
        parts["covariance_term"] = along - parts["difference_term"] - parts["context_term"]
        ranked = along if score == "total" else parts["difference_term"]
        order = np.argsort(-ranked, kind="stable")
        columns["names"][g] = view.feature_names[order].astype(str)
        columns["scores"][g] = ranked[order]
        columns["share"][g] = ranked[order] / length
        columns["across"][g] = across[order]
        for field, values in parts.items():
            columns[field][g] = values[order]
        for d, row in enumerate(terms[:, order]):
            axis_terms[d][g] = row
        shift[g] = delta
        gap[g] = np.array([np.abs(terms.sum(axis=1) - delta).max() / length])

    result = {
        "params": {
            "groupby": groupby,
            "reference": reference,
            "score": score,
            "method": "gbumap_contrast",
            "model_key": key,
        },
        "names": records(columns["names"], "O"),
        **{f: records(columns[f], np.float64) for f in fields[1:]},
        "centroid_shift": records(shift, np.float64),
        "terms": {f"axis_{d + 1}": records(t, np.float64) for d, t in enumerate(axis_terms)},
        "reconstruction_gap": records(gap, np.float64),
    }
    return write_result(adata, key_added, Result("contrast", result), copy=copy)
