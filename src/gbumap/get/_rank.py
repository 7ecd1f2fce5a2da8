"""Reading :func:`gbumap.tl.rank_features` results back as a tidy table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._results import KINDS, RANKED_FIELDS, SCANPY_RANKED_FIELDS, find_ranking, result_groups

__all__ = ["rank_features_df", "RANK_FIELDS", "GROUP_FIELDS"]

#: Rank-ordered per-group fields, as in ``sc.tl.rank_genes_groups`` (owned by :mod:`gbumap._results`).
RANK_FIELDS = SCANPY_RANKED_FIELDS
#: Further rank-ordered per-group fields written by ``tl.rank_features``.
GROUP_FIELDS = tuple(f for f in KINDS["rank_features"].ranked if f not in SCANPY_RANKED_FIELDS)
# Results written by gbumap 0.1 kept genes × groups DataFrames under these keys instead.
_LEGACY_TABLES = {
    "pct_nz_group": "pts",
    "pct_nz_reference": "pts_rest",
    "mean_contribution": "mean_contribution",
    "mean_expression": "mean_expression",
}


def rank_features_df(
    adata: AnnData,
    group: str | Sequence[str] | None = None,
    *,
    key: str = "rank_features_gbumap",
) -> pd.DataFrame:
    """One group's (or several groups') ranking as a table, best gene first.

    The columns of :func:`scanpy.get.rank_genes_groups_df` (``names``,
    ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj``) plus
    ``pct_nz_group`` and ``pct_nz_reference`` (fraction of the group's and of
    the other cells with the gene above 0), ``mean_contribution`` and
    ``mean_expression``, and ``group`` when several groups are asked for.
    It also reads :func:`gbumap.tl.contrast` results (``key="contrast_<model
    key>"``: ``share``, ``across``, ``difference_term``, ``context_term``,
    ``covariance_term``), :func:`gbumap.tl.rank_knockouts` results
    (``shift``, ``exact_scores``, ``exact_shift``) and the set rankings of
    :func:`gbumap.tl.gene_set_contributions` (``overlap``, ``overlap_genes``),
    and :func:`gbumap.tl.stability` rankings (``median_rank``, ``rank_iqr``,
    ``top_fraction``).

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.rank_features` ran.
    group
        Group name(s) (default: all groups).
    key
        The ranking's ``uns`` key.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> gbumap.get.rank_features_df(adata, "CD14+ Monocyte").head()  # doctest: +SKIP
    """
    result = find_ranking(
        adata,
        key,
        "run gbumap.tl.rank_features (or tl.contrast, tl.rank_knockouts, tl.gene_set_contributions with groupby, "
        "tl.stability with groupby) first",
    )
    available = result_groups(result)
    groups = available if group is None else ([group] if isinstance(group, str) else list(group))
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise KeyError(f"Groups {unknown} are not in uns[{key!r}]; it ranks {available}.")
    frames = []
    for g in groups:
        names = np.asarray(result["names"][g]).astype(str)
        frame = pd.DataFrame({"names": names})
        for field in RANKED_FIELDS[1:]:
            if field in result:
                frame[field] = np.asarray(result[field][g])
            elif field in _LEGACY_TABLES and isinstance(result.get(_LEGACY_TABLES[field]), pd.DataFrame):
                frame[field] = result[_LEGACY_TABLES[field]][g].reindex(names).to_numpy()
        if len(groups) > 1:
            frame.insert(0, "group", g)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _ranked_group_sizes(adata: AnnData, key: str) -> dict[str, int]:
    """Each ranked group's number of cells: the ``group_sizes`` that ``tl.rank_features`` records.

    Rankings written before the sizes were recorded fall back to counting ``obs[groupby]``
    (groups it cannot count are left out).
    """
    result = adata.uns[key]
    groups = result_groups(result)
    if "group_sizes" in result:
        sizes = result["group_sizes"]
        return {g: int(np.asarray(sizes[g]).ravel()[0]) for g in groups}
    groupby = str(result.get("params", {}).get("groupby", ""))
    if groupby not in adata.obs.columns:
        return {}
    counts = adata.obs[groupby].astype(str).value_counts()
    return {g: int(counts[g]) for g in groups if g in counts.index}
