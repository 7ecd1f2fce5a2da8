"""``gbumap.tl.rank_knockouts``: which gene's removal moves each group most, first order for all, exact for the top."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from .._ranking import records
from .._results import KINDS, Result, result_key, write_result
from .._validation import check_batch_size, check_int, obs_groups
from .._view import ModelView, model_view
from ._perturb import (
    agreement_rtol,
    as_float_array,
    dense,
    embedding_scale,
    jacobian_at,
    stored_jacobian,
    target_vector,
)

__all__ = ["rank_knockouts"]

# Cells × axes × genes float64 values held at once by the first-order pass (2**22: 32 MB per array).
_BLOCK_VALUES = 2**22


def _knockout_targets(value, view: ModelView) -> tuple[np.ndarray, str]:
    """The value every gene is knocked out to, per gene, and its label."""
    est = view.estimator
    n_genes = len(view.feature_names)
    vector = target_vector(value, est.baseline_, n_genes)
    if vector is not None:
        return vector, "baseline" if isinstance(value, str) else f"{float(value):g}"
    arr = as_float_array(value)
    if arr.shape != (n_genes,):
        raise ValueError(
            f"value has shape {arr.shape}; expected a number, 'baseline' or one value per model gene ({n_genes},)."
        )
    return arr.copy(), "per gene"


def _first_order(adata, view, rows, group, n_groups, targets, batch_size) -> tuple[np.ndarray, ...]:
    """Per group and gene: summed first-order displacement lengths, vectors and input values.

    For cell ``i`` and gene ``g`` knocked out (``Δ = t_g − x_ig``):
    ``|z'|² = |z|² + 2Δ(z·P_g) + Δ²|P_g|²`` gives ``s'`` for every gene at
    once, and ``J(u)·(u' − u) = (J(u)·P_g)·Δ/s' + J(u)·z·(1/s' − 1/s)``.
    """
    est = view.estimator
    n_genes, d = len(view.feature_names), est.n_components
    loadings = None if est.components_ is None else est.components_.astype(np.float64)
    stored = stored_jacobian(adata, view)
    scale = embedding_scale(adata, view)
    rtol = agreement_rtol(est)
    step = max(1, min(batch_size, _BLOCK_VALUES // (d * n_genes)))
    lengths, inputs = np.zeros((n_groups, n_genes)), np.zeros((n_groups, n_genes))
    vectors = np.zeros((n_groups, d, n_genes))
    labels = view.batch_labels(adata)
    for start in range(0, len(rows), step):
        r, g = rows[start : start + step], group[start : start + step]
        block = view.matrix(adata, rows=r)
        x = dense(block)
        z = view.input_offsets(block, None if labels is None else labels[r])  # the batch shift is held fixed
        u, s = est.scaled_input(z)
        f_u = est.apply_encoder(u).astype(np.float64)
        tol = rtol * (scale if scale is not None else float(np.abs(f_u).max()) or 1.0)
        jac = jacobian_at(est, None if stored is None else stored[r], u, s, f_u, tol)
        delta = targets.astype(block.dtype).astype(np.float64)[None, :] - x
        if loadings is None:
            along, square, per_gene = z, 1.0, jac
        else:
            along, square = z @ loadings, (loadings**2).sum(axis=0)
            per_gene = (jac.reshape(-1, jac.shape[2]) @ loadings).reshape(len(r), d, n_genes)
        norm2 = np.einsum("ij,ij->i", z, z)[:, None] + 2 * delta * along + delta**2 * square
        s_new = np.where(delta == 0, s, est.input_divisor_from_norm2(norm2))
        rescale = np.einsum("ndk,nk->nd", jac, z)
        pred = per_gene * (delta / s_new)[:, None, :] + rescale[:, :, None] * (1 / s_new - 1 / s)[:, None, :]
        onehot = np.eye(n_groups)[g]
        lengths += onehot.T @ np.sqrt((pred**2).sum(axis=1))
        vectors += np.tensordot(onehot, pred, axes=(0, 0))
        inputs += onehot.T @ x
    return lengths, vectors, inputs


def _one_gene_shift(est, z: np.ndarray, gene: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``z' = z + P[:, gene_i]·Δ_i`` row by row: each row with its own single gene edited."""
    if est.components_ is None:
        out = z.copy()
        out[np.arange(len(z)), gene] += delta
        return out
    return z + delta[:, None] * est.components_[:, gene].T.astype(np.float64)


def _exact(adata, view, rows, genes, targets, batch_size) -> tuple[np.ndarray, np.ndarray]:
    """Mean exact displacement length and length of the mean displacement, per gene of ``genes``, over ``rows``."""
    est = view.estimator
    d = est.n_components
    lengths, vectors = np.zeros(len(genes)), np.zeros((len(genes), d))
    step = max(1, batch_size // max(len(genes), 1))
    labels = view.batch_labels(adata)
    for start in range(0, len(rows), step):
        block = view.matrix(adata, rows=rows[start : start + step])
        block_labels = None if labels is None else labels[rows[start : start + step]]
        x = dense(block[:, genes])
        delta = targets[genes].astype(block.dtype).astype(np.float64)[None, :] - x
        cell, which = np.nonzero(delta)
        if len(cell) == 0:
            continue
        z = view.input_offsets(block, block_labels)
        u = est.scaled_input(z)[0]
        z_new = _one_gene_shift(est, z[cell], genes[which], delta[cell, which])
        u_new = est.scaled_input(z_new)[0]
        f_u = est.apply_encoder(u).astype(np.float64)
        f_new = est.apply_encoder(u_new).astype(np.float64)
        disp = np.where((u_new == u[cell]).all(axis=1)[:, None], 0.0, f_new - f_u[cell])
        np.add.at(lengths, which, np.linalg.norm(disp, axis=1))
        np.add.at(vectors, which, disp)
    n = len(rows)
    return lengths / n, np.linalg.norm(vectors / n, axis=1)


def rank_knockouts(
    adata: AnnData,
    groupby: str,
    *,
    groups: str | Sequence[str] | None = None,
    value: float | str | np.ndarray = 0.0,
    key: str = "gbumap",
    n_exact: int = 10,
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes by how far knocking each one out moves each group's cells on the map.

    Every gene is knocked out on its own (set to ``value`` in the model's
    input, all other genes kept) in every cell of the group, and the cell's
    move is predicted to first order from the model's Jacobian, for all genes
    at once: with ``Δ = value − x_g``, ``z' = z + P_g·Δ`` and
    ``|z'|² = |z|² + 2Δ(z·P_g) + Δ²|P_g|²``, so the new divisor ``s'`` of
    each cell and gene costs one product, and the prediction is
    ``J(u)·(u' − u) = J(u)·P_g·Δ/s' + J(u)·z·(1/s' − 1/s)`` (see
    :func:`gbumap.tl.perturb`). Genes are ranked by the group's mean
    predicted displacement length. The ``n_exact`` top genes of each group
    are then verified: the group's cells are re-encoded through the model
    with that gene knocked out, and the exact mean length is stored beside
    the first-order one.

    The result is written in the format of ``sc.tl.rank_genes_groups``, one
    field per group, genes ordered by ``scores``, so
    ``sc.pl.rank_genes_groups(adata, key=key_added)`` draws it; read it with
    :func:`gbumap.get.rank_features_df` (``key=`` the result's key).

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    groupby
        ``obs`` column defining the groups.
    groups
        Groups to rank (default: every group with cells).
    value
        What a knocked-out gene is set to: a number (default 0), ``"baseline"``
        (the gene's baseline value in the model) or one value per model gene.
    key
        The model key.
    n_exact
        Top genes per group verified by re-encoding (0: none).
    key_added
        ``uns`` key of the result (default ``"rank_knockouts_<key>"``).
    batch_size
        Cells per batch (the first-order pass also bounds its blocks to
        about 32 MB per array).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes
    ``uns[key_added]`` with ``params`` and rank-ordered record arrays (one
    field per group): ``names``; ``scores`` (first-order mean displacement
    length, map units); ``shift`` (first-order length of the mean
    displacement: moves in different directions cancel in it);
    ``exact_scores`` and ``exact_shift`` (the same, exact, for the top
    ``n_exact`` genes; NaN below); ``mean_expression`` (the group's mean
    model input for the gene).

    Examples
    --------
    >>> gbumap.tl.rank_knockouts(adata, "bulk_labels", groups=["CD14+ Monocyte"])  # doctest: +SKIP
    >>> gbumap.get.rank_features_df(adata, "CD14+ Monocyte", key="rank_knockouts_gbumap").head()  # doctest: +SKIP
    """
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    n_exact = check_int(n_exact, "n_exact", 0, words="an integer ≥ 0")
    chosen = obs_groups(adata, groupby, groups)
    wanted, group_of = chosen.names, chosen.group_of
    targets, label = _knockout_targets(value, view)
    key_added = result_key(adata, "rank_knockouts", key_added, key)

    rows = np.flatnonzero(group_of >= 0)
    lengths, vectors, inputs = _first_order(adata, view, rows, group_of[rows], len(wanted), targets, batch_size)
    sizes = np.bincount(group_of[rows], minlength=len(wanted)).astype(np.float64)[:, None]
    scores, shift = lengths / sizes, np.linalg.norm(vectors / sizes[:, :, None], axis=1)
    n_top = min(int(n_exact), len(view.feature_names))
    columns: dict[str, dict[str, np.ndarray]] = {f: {} for f in KINDS["rank_knockouts"].ranked}
    for i, g in enumerate(wanted):
        order = np.argsort(-scores[i], kind="stable")
        exact_scores, exact_shift = np.full(len(order), np.nan), np.full(len(order), np.nan)
        if n_top:
            members = np.flatnonzero(group_of == i)
            exact_scores[:n_top], exact_shift[:n_top] = _exact(adata, view, members, order[:n_top], targets, batch_size)
        columns["names"][g] = view.feature_names[order].astype(str)
        columns["scores"][g] = scores[i, order]
        columns["shift"][g] = shift[i, order]
        columns["exact_scores"][g] = exact_scores
        columns["exact_shift"][g] = exact_shift
        columns["mean_expression"][g] = inputs[i, order] / sizes[i]

    result = {
        "params": {
            "groupby": groupby,
            "reference": "unperturbed",
            "method": "gbumap_knockout",
            "model_key": key,
            "value": label,
            "n_exact": n_top,
            "use_raw": False,
        },
        "names": records(columns.pop("names"), "O"),
        **{f: records(c, np.float64) for f, c in columns.items()},
    }
    return write_result(adata, key_added, Result("rank_knockouts", result), copy=copy)
