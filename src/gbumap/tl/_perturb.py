"""``gbumap.tl.perturb``: edit genes in the model's input, re-encode the cells, and compare with the first order.

The shared pieces (choosing genes, the edit, re-encoding, the Jacobian at a
cell) are also used by :func:`gbumap.tl.rank_knockouts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_input import select_obs
from .._results import Result, result_key, write_result
from .._validation import check_batch_size, check_number, obs_column
from .._view import ModelView, model_view

# perturb and, for tl.rank_knockouts, the shared pieces of a perturbation
__all__ = [
    "AGREEMENT_RTOL",
    "agreement_rtol",
    "as_float_array",
    "dense",
    "embedding_scale",
    "jacobian_at",
    "perturb",
    "stored_jacobian",
    "target_vector",
]

#: Tolerance of "agreement" between the exact move and the first-order prediction,
#: relative to the largest absolute coordinate of the embedding, per model dtype.
AGREEMENT_RTOL = {"float32": 1e-4, "float64": 1e-10}


# ---------------------------------------------------------------------- shared pieces
def _check_genes(view: ModelView, genes: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``genes`` among the model's features, and their names; clear errors otherwise."""
    if not isinstance(genes, str) and not isinstance(genes, (Sequence, np.ndarray, pd.Index)):
        raise TypeError(f"genes must be a gene name or a list of names; got {type(genes).__name__}.")
    wanted = [genes] if isinstance(genes, str) else list(genes)
    names = np.asarray([str(g) for g in wanted], dtype=object)
    if len(names) == 0:
        raise ValueError("genes is empty; name at least one of the model's genes.")
    index = pd.Index(names)
    if index.has_duplicates:
        dups = index[index.duplicated()].unique()
        raise ValueError(f"genes names {', '.join(dups)} more than once; name each gene once.")
    idx = pd.Index(view.feature_names).get_indexer(index)
    if (idx < 0).any():
        missing = names[idx < 0]
        shown = ", ".join(missing[:20]) + (" …" if len(missing) > 20 else "")
        raise KeyError(
            f"{len(missing)} of the {len(names)} genes asked are not among the model's "
            f"{len(view.feature_names)} features: {shown}. Only the model's input genes can be perturbed."
        )
    return idx, names.astype(str)


def dense(block) -> np.ndarray:
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def _is_number(value) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def target_vector(value, baseline: np.ndarray, n_genes: int, name: str = "value") -> np.ndarray | None:
    """``value`` as one float per gene (a number, ``"baseline"`` or a 1-D array), else ``None``."""
    if isinstance(value, str):
        if value != "baseline":
            raise ValueError(f"{name} must be a number, 'baseline' or an array; got {value!r}.")
        return np.asarray(baseline, dtype=np.float64).copy()
    if _is_number(value):
        if not np.isfinite(float(value)):
            raise ValueError(f"{name} must be finite; got {value!r}.")
        return np.full(n_genes, float(value))
    return None


def as_float_array(value, name: str = "value") -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number, 'baseline' or a numeric array; got {type(value).__name__}."
        ) from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


@dataclass(frozen=True)
class _Edit:
    """How the chosen genes change: set to ``target`` (per gene or per cell and gene) or scaled by ``fold_change``."""

    target: np.ndarray | None
    fold_change: float | None
    log1p: bool
    label: str  # the value, in words, for params
    description: str  # "→ 0", "× 2 (count scale)": for titles

    def apply(self, x: np.ndarray, positions: np.ndarray, dtype) -> np.ndarray:
        """The edited values of the chosen genes for the selected cells at ``positions``, in the input's dtype."""
        if self.fold_change is None:
            new = self.target if self.target.ndim == 1 else self.target[positions]
            new = np.broadcast_to(new, x.shape)
        elif self.log1p:
            with np.errstate(invalid="ignore"):
                new = np.log1p(self.fold_change * np.expm1(x))
            if not np.isfinite(new).all():
                raise ValueError(
                    "log1p=True expects log1p-transformed input (values ≥ 0); the model's input has negative "
                    "values for these genes, where log1p(fold_change·expm1(x)) is undefined."
                )
        else:
            new = self.fold_change * x
        # the model reads its input in this dtype, so the edited input is rounded to it too
        return np.asarray(new, dtype=dtype).astype(np.float64)


def _resolve_edit(value, fold_change, log1p: bool, baseline: np.ndarray, n_cells: int) -> _Edit:
    """Validate ``value`` / ``fold_change`` / ``log1p`` into an ``_Edit`` (raises before anything is computed)."""
    n_genes = len(baseline)
    if fold_change is not None:
        if not (_is_number(value) and float(value) == 0.0):
            raise ValueError("Pass either value= or fold_change=, not both: fold_change multiplies the input.")
        check_number(fold_change, "fold_change", 0, words="a finite number ≥ 0")
        if not isinstance(log1p, (bool, np.bool_)):
            raise ValueError(f"log1p must be True or False; got {log1p!r}.")
        f = float(fold_change)
        scale = " (count scale)" if log1p else ""
        return _Edit(None, f, bool(log1p), f"fold_change {f:g}{scale}", f"× {f:g}{scale}")
    if log1p:
        raise ValueError("log1p=True applies to fold_change only; pass fold_change= as well, or drop log1p.")
    vector = target_vector(value, baseline, n_genes)
    if vector is not None:
        label = "baseline" if isinstance(value, str) else f"{float(value):g}"
        return _Edit(vector, None, False, label, f"→ {label}")
    arr = as_float_array(value)
    if arr.ndim == 0:
        return _Edit(np.full(n_genes, float(arr)), None, False, f"{float(arr):g}", f"→ {float(arr):g}")
    if arr.shape == (n_genes,):
        return _Edit(arr.copy(), None, False, "per gene", "→ given values")
    if arr.shape == (n_cells, n_genes):
        return _Edit(arr.copy(), None, False, "per cell and gene", "→ given values")
    raise ValueError(
        f"value has shape {arr.shape}; expected a number, 'baseline', an array of shape ({n_genes},) "
        f"(one value per gene) or ({n_cells}, {n_genes}) (one per selected cell and gene)."
    )


def _shifted_input(est, z: np.ndarray, gene_idx: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``z' = z + P[:, genes]·Δx`` (without PCA: the genes' entries of ``z`` moved by ``Δx``).

    Exact algebra for ``z' = P·(x' − b)``: only the edited genes' columns of
    the loadings are touched.
    """
    if est.components_ is None:
        out = z.copy()
        out[:, gene_idx] += delta
        return out
    return z + delta @ est.components_[:, gene_idx].T.astype(np.float64)


def _is_default_encoder(est) -> bool:
    from .._encoder import HomogeneousMLP

    return isinstance(est.encoder_, HomogeneousMLP)


def _encode(est, u: np.ndarray):
    """``f(u)`` and, for the default encoder, the sign (pre-activation > 0) of every hidden unit (a tensor)."""
    import torch  # imported here: ``import gbumap.tl`` stays light

    module = est.encoder_
    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(u)).to(est.device_)
        if not _is_default_encoder(est):
            return module(h).cpu().numpy().astype(np.float64), None
        out, signs = module.forward_with_signs(h)
        return out.cpu().numpy().astype(np.float64), signs


def _encode_pair(est, u: np.ndarray, u_new: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``f(u)``, ``f(u')`` and, for the default encoder, how many hidden units changed sign per cell."""
    out, signs = _encode(est, np.concatenate([u, u_new]))
    n = len(u)
    flips = None if signs is None else (signs[:n] != signs[n:]).sum(dim=1).cpu().numpy()
    return out[:n], out[n:], flips


def stored_jacobian(adata: AnnData, view: ModelView):
    """``obsm["<key>_jacobian"]`` when it has the model's shape, else ``None`` (then it is recomputed)."""
    try:
        return view.stored_jacobian(adata)
    except ValueError:  # another model's Jacobians: perturbation recomputes rather than refusing
        return None


def jacobian_at(
    est, stored: np.ndarray | None, u: np.ndarray, divisor: np.ndarray, f_u: np.ndarray, tol: float
) -> np.ndarray:
    """The encoder's Jacobian ``J(u)`` per cell, ``(n, n_axes, n_inputs)`` in float64.

    The stored ``J(u)/s`` times ``s`` wherever it satisfies Euler's identity
    ``J(u)·u = k·f(u)`` within ``tol`` (so a Jacobian stored before the input
    changed is never used); recomputed from the encoder for the other cells.
    """
    n = len(u)
    if stored is not None:
        jac = np.asarray(stored, dtype=np.float64) * divisor[:, :, None]
        euler = np.einsum("ndk,nk->nd", jac, u.astype(np.float64)) - est.homogeneity_degree_ * f_u
        redo = np.abs(euler).max(axis=1) > tol
    else:
        jac = np.empty((n, est.n_components, est.n_inputs_))
        redo = np.ones(n, dtype=bool)
    if redo.any():
        jac[redo] = est.jacobian_at(u[redo])
    return jac


def embedding_scale(adata: AnnData, view: ModelView) -> float | None:
    """``max |embedding|`` of ``obsm["X_<key>"]`` (``None`` when it is not stored)."""
    if view.embedding_key not in adata.obsm:
        return None
    return float(np.abs(np.asarray(adata.obsm[view.embedding_key])).max()) or 1.0


def agreement_rtol(est) -> float:
    return AGREEMENT_RTOL.get(str(est.dtype), AGREEMENT_RTOL["float32"])


# ---------------------------------------------------------------------- perturb
@dataclass
class _Moves:
    """Per selected cell: exact and first-order displacements, their deviation and the activation flips."""

    exact: np.ndarray
    first_order: np.ndarray
    deviation: np.ndarray
    flips: np.ndarray | None
    changed: np.ndarray
    scale: float


def _moves(adata, view, rows, gene_idx, edit, batch_size) -> _Moves:
    est = view.estimator
    n, d = len(rows), est.n_components
    exact, first = np.zeros((n, d)), np.zeros((n, d))
    flips = np.zeros(n) if _is_default_encoder(est) else None
    changed = np.zeros(n, dtype=bool)
    stored = stored_jacobian(adata, view)
    scale = embedding_scale(adata, view)
    rtol = agreement_rtol(est)
    seen_max = 0.0
    labels = view.batch_labels(adata)
    for start in range(0, n, batch_size):
        pos = np.arange(start, min(start + batch_size, n))
        block = view.matrix(adata, rows=rows[pos])
        x = dense(block[:, gene_idx])
        delta = edit.apply(x, pos, block.dtype) - x
        moved = (delta != 0).any(axis=1)
        if not moved.any():
            continue
        # the batch shift is a per-cell constant here, like the baseline: held at the cell's own value
        z = view.input_offsets(
            block[np.flatnonzero(moved)], None if labels is None else labels[rows[pos[moved]]]
        )
        z_new = _shifted_input(est, z, gene_idx, delta[moved])
        (u, s), (u_new, s_new) = est.scaled_input(z), est.scaled_input(z_new)
        f_u, f_new, n_flips = _encode_pair(est, u, u_new)
        seen_max = max(seen_max, float(np.abs(f_u).max()))
        tol = rtol * (scale if scale is not None else seen_max or 1.0)
        jac = jacobian_at(est, None if stored is None else stored[rows[pos[moved]]], u, s, f_u, tol)
        target = pos[moved]
        exact[target] = np.where((u_new == u).all(axis=1)[:, None], 0.0, f_new - f_u)
        first[target] = np.einsum("ndk,nk->nd", jac, z_new / s_new - z / s)
        changed[target] = True
        if flips is not None:
            flips[target] = n_flips
    deviation = np.linalg.norm(exact - first, axis=1)
    return _Moves(exact, first, deviation, flips, changed, scale if scale is not None else seen_max or 1.0)


def _group_table(labels: pd.Series, moves: _Moves, tol: float, axis_names: list[str]) -> pd.DataFrame:
    """Per group of the perturbed cells: size, mean displacement vector, its length and the mean length."""
    codes = labels.astype("category")
    rows = []
    for name in codes.cat.categories:
        inside = (codes == name).to_numpy()
        if not inside.any():
            continue
        disp, first = moves.exact[inside], moves.first_order[inside]
        mean = disp.mean(axis=0)
        changed = moves.changed[inside]
        row = {"n_cells": int(inside.sum())}
        row.update({f"mean_displacement_{a}": float(v) for a, v in zip(axis_names, mean)})
        row["length_of_mean"] = float(np.linalg.norm(mean))
        row["mean_length"] = float(np.linalg.norm(disp, axis=1).mean())
        row["first_order_mean_length"] = float(np.linalg.norm(first, axis=1).mean())
        row["agreement"] = float((moves.deviation[inside][changed] <= tol).mean()) if changed.any() else np.nan
        rows.append(pd.Series(row, name=str(name)))
    if not rows:
        raise ValueError("None of the perturbed cells has a label in obs[groupby].")
    table = pd.DataFrame(rows)
    table["n_cells"] = table["n_cells"].astype(np.int64)
    return table


def perturb(
    adata: AnnData,
    genes: str | Sequence[str],
    value: float | str | np.ndarray = 0.0,
    *,
    fold_change: float | None = None,
    log1p: bool = False,
    key: str = "gbumap",
    obs=None,
    groupby: str | None = None,
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Change genes in silico and move the cells through the stored model, exactly and to first order.

    The named genes are changed in a copy of the model's input (``X``, a
    layer or ``raw``, wherever the model reads; never in ``adata`` itself),
    the cells are re-encoded through the stored model, including its PCA
    loadings and input scaling, and each cell's displacement on the map is
    stored next to the first-order prediction from the model's Jacobian.

    With ``z = P·(x − b)`` (PCA loadings ``P``, baseline ``b``; ``z = x − b``
    without PCA), divisor ``s = sqrt(|z|² + c²)`` (``s = 1`` for
    ``input_norm="none"``) and encoder input ``u = z/s``, an edit
    ``x → x'`` of genes ``G`` gives ``z' = z + Σ_{g∈G} P_g·Δx_g`` (only the
    edited genes' loadings are used), ``s'`` and ``u' = z'/s'``, and

    * the **exact** displacement ``f(u') − f(u)``, the encoder run again;
    * the **first-order** prediction ``J(u)·(u' − u)``, which splits into a
      per-gene part and a rescaling part:
      ``Σ_{g∈G} (J(u)/s')·P_g·Δx_g + k·f(u)·(s/s' − 1)``, ``k`` the encoder's
      homogeneity degree (1 for the default encoder). The rescaling part is
      the change of the cell's divisor; it is 0 without input scaling, where
      the per-gene part of a knock-out to the baseline is exactly minus the
      genes' contributions.

    The default encoder is piecewise linear and homogeneous of degree 1, so
    ``f(u') = J(u)·u'`` exactly while ``u'`` stays in the linear region of
    ``u`` (no hidden unit changes sign): the prediction then equals the exact
    displacement to float precision. A cell *agrees* when
    ``|exact − first order| ≤ rtol × max |embedding|``, ``rtol = 1e-4`` for
    float32 models and ``1e-10`` for float64 (``max |embedding|`` over
    ``obsm["X_<key>"]``); for the default encoder the number of hidden units
    that changed sign is also counted per cell.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key``.
    genes
        One gene or several, each a feature of the model, each named once.
    value
        What the genes are set to: a number; ``"baseline"`` (each gene's
        baseline value in the model: its mean for ``baseline="mean"``, 0 for
        ``"zero"``); an array with one value per gene; or an array of shape
        ``(n_selected_cells, n_genes)``, its rows in the order of the
        selected cells. Ignored with ``fold_change``.
    fold_change
        Multiply the genes' input values by this factor (≥ 0) instead.
    log1p
        With ``fold_change``: apply it on the count scale,
        ``x' = log1p(fold_change · expm1(x))``, for ``log1p``-normalised input.
    key
        The model key.
    obs
        Cells to perturb: ``None`` (all), a boolean mask, obs names or integer
        positions. Other cells get NaN (not perturbed).
    groupby
        ``obs`` column; per-group summaries of the perturbed cells are stored.
    key_added
        Where results go (default ``"perturb_<key>"``).
    batch_size
        Cells per batch.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes

    ``obsm[key_added]``
        ``(n_cells, n_axes)`` exact displacement (NaN for cells not perturbed;
        exactly 0 for perturbed cells whose input the edit leaves unchanged).
    ``obsm[key_added + "_first_order"]``
        The first-order prediction ``J(u)·(u' − u)``.
    ``obs[key_added + "_deviation"]``
        ``|exact − first order|`` per cell; ``obs[key_added + "_flips"]``
        the number of hidden units that changed sign (default encoder only).
    ``uns[key_added]``
        ``params``; ``genes``; ``values`` (the target value per gene, when
        there is one); ``n_cells`` (perturbed) and ``n_changed`` (whose input
        changed); ``agreement`` (the fraction of changed cells that agree),
        ``tolerance`` (absolute), ``max_deviation``; ``flip_fraction`` (the
        fraction of changed cells with a sign change, NaN for custom
        encoders); ``mean_length`` (mean displacement length); with
        ``groupby``, ``groups``: a table per group with ``n_cells``,
        ``mean_displacement_<axis>``, ``length_of_mean``, ``mean_length``,
        ``first_order_mean_length`` and ``agreement``.

    Examples
    --------
    >>> gbumap.tl.perturb(adata, ["LYZ", "S100A8"], groupby="bulk_labels")  # doctest: +SKIP
    >>> adata.uns["perturb_gbumap"]["groups"]  # doctest: +SKIP
    >>> gbumap.tl.perturb(adata, "CD79A", fold_change=4, log1p=True, key_added="cd79a_up")  # doctest: +SKIP
    """
    view = model_view(adata, key)
    est = view.estimator
    batch_size = check_batch_size(batch_size)
    gene_idx, names = _check_genes(view, genes)
    rows = select_obs(adata, obs)
    if len(rows) == 0:
        raise ValueError("obs selects no cells.")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("obs names some cells more than once; name each cell once.")
    if groupby is not None and obs_column(adata, groupby).iloc[rows].isna().all():
        raise ValueError(f"None of the selected cells has a label in obs[{groupby!r}].")
    edit = _resolve_edit(value, fold_change, log1p, est.baseline_[gene_idx], len(rows))
    key_added = result_key(adata, "perturb", key_added, key)

    moves = _moves(adata, view, rows, gene_idx, edit, batch_size)
    tol = agreement_rtol(est) * moves.scale
    n_changed = int(moves.changed.sum())
    if n_changed == 0:
        warnings.warn(
            f"The edit leaves the input of all {len(rows)} selected cells unchanged (e.g. a knock-out of genes "
            "they do not express): every displacement is 0.",
            UserWarning,
            stacklevel=2,
        )
    agree = moves.deviation[moves.changed] <= tol
    flipped = None if moves.flips is None else moves.flips[moves.changed] > 0
    result = {
        "params": {
            "model_key": key,
            "method": "gbumap_perturb",
            "value": edit.label,
            "fold_change": "None" if edit.fold_change is None else edit.fold_change,
            "log1p": bool(edit.log1p),
            "description": f"{_gene_text(names)} {edit.description}",
            "groupby": "None" if groupby is None else groupby,
            "rtol": agreement_rtol(est),
        },
        "genes": names.astype(object),
        "n_cells": len(rows),
        "n_changed": n_changed,
        "agreement": float(agree.mean()) if n_changed else np.nan,
        "tolerance": tol,
        "max_deviation": float(moves.deviation.max()),
        "flip_fraction": np.nan if flipped is None or not n_changed else float(flipped.mean()),
        "mean_length": float(np.linalg.norm(moves.exact, axis=1).mean()),
    }
    if edit.target is not None and edit.target.ndim == 1:
        result["values"] = edit.target.copy()
    if groupby is not None:
        axes = [str(i + 1) for i in range(est.n_components)]
        result["groups"] = _group_table(adata.obs[groupby].iloc[rows], moves, tol, axes)

    def full(values: np.ndarray) -> np.ndarray:
        out = np.full((adata.n_obs, *values.shape[1:]), np.nan)
        out[rows] = values
        return out

    obsm = {key_added: full(moves.exact), f"{key_added}_first_order": full(moves.first_order)}
    obs = {f"{key_added}_deviation": full(moves.deviation)}
    if moves.flips is not None:
        obs[f"{key_added}_flips"] = full(moves.flips)
    return write_result(adata, key_added, Result("perturb", result, obsm=obsm, obs=obs), copy=copy)


def _gene_text(names: np.ndarray) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
