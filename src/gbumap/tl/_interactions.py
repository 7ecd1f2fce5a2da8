"""``gbumap.tl.interaction_modules``: gene–gene interaction modules of a bilinear model, exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._results import Result, result_key, write_result
from .._validation import check_batch_size, check_int
from .._view import ModelView, model_view

__all__ = ["interaction_modules", "module_views"]


def _quadratic_forms(view: ModelView) -> np.ndarray:
    """``Q_d`` of the stored bilinear encoder, ``(axes, inputs, inputs)`` in float64; other encoders raise."""
    from .._encoder import BilinearEncoder

    encoder = view.estimator.encoder_
    if not isinstance(encoder, BilinearEncoder):
        raise ValueError(
            f"Interaction modules need a bilinear model; the model under {view.key!r} uses "
            f"{type(encoder).__name__}. Fit one with gbumap.tl.fit(adata, encoder='bilinear', key_added=...)."
        )
    import torch

    with torch.no_grad():
        return encoder.quadratic_forms().double().cpu().numpy()


def module_views(forms: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Eigen-pairs ``(values, vectors)`` of each axis's ``Q_d`` and of ``Σ_d Q_d²`` (the ``"l2"`` view).

    ``Q_d`` is symmetric, so ``f_d(u) = Σ_k λ_k (v_k·u)²`` over all its
    eigen-pairs; ``Σ_d Q_d²`` is positive semi-definite and unchanged when the
    map is rotated or mirrored (``Q'_e = Σ_d R_ed Q_d``), and
    ``Σ_k λ_k (v_k·u)² = Σ_d |Q_d u|²``.
    """
    views = {}
    for d, form in enumerate(forms):
        values, vectors = np.linalg.eigh(form)
        views[f"axis_{d + 1}"] = (values, vectors)
    views["l2"] = np.linalg.eigh(np.einsum("dkl,dlm->km", forms, forms))
    return views


def interaction_modules(
    adata: AnnData,
    n_modules: int = 5,
    *,
    key: str = "gbumap",
    key_added: str | None = None,
    batch_size: int = 65536,
    copy: bool = False,
) -> AnnData | None:
    """Gene modules of a bilinear model: the eigenvectors of its gene–gene interaction matrices.

    A model fitted with ``encoder="bilinear"`` maps each cell's (scaled)
    input ``u`` to ``f_d(u) = uᵀ Q_d u`` on each map axis ``d``. With the PCA
    loadings ``P`` folded in, ``Pᵀ Q_d P`` is a genes × genes interaction
    matrix; its eigenvectors are ``Pᵀ v_k`` for the eigenvectors ``v_k`` of
    the small ``Q_d`` (the loadings' rows are orthonormal), so no dense
    genes × genes matrix is formed. Each eigen-pair is a *module*: gene
    loadings ``Pᵀ v_k``, an eigenvalue ``λ_k`` and its sign. A cell's
    activity in the module is ``a_k = (Pᵀ v_k)·(x − b) / s`` (``s`` the
    cell's input-scaling divisor), and its term ``λ_k a_k²``: over all
    modules of an axis the terms sum exactly to the cell's coordinate.

    The ``"l2"`` view does not depend on how the map is rotated or mirrored:
    the eigen-pairs of ``Σ_d Q_d²``. Its per-cell scores are
    ``sqrt(λ_k) |a_k|``, whose squares sum over all modules to
    ``Σ_d |Q_d u|²`` (a quarter of the squared norm of the cell's Jacobian
    in the encoder's input space): how strongly the map reacts to the
    cell's input along each module.

    Modules are ranked per view by their mean absolute term over the cells
    (``λ_k · mean a_k²``; for ``"l2"``, ``λ_k · mean a_k²`` as well). An
    eigenvector's sign is arbitrary: only the relative signs of its genes'
    loadings mean something (same sign: the genes act together; opposite:
    against each other).

    Parameters
    ----------
    adata
        AnnData with a bilinear model under ``key`` (``encoder="bilinear"``).
    n_modules
        Modules kept per view, at most the number of encoder inputs.
    key
        The model key.
    key_added
        Result key (default ``"modules_<key>"``).
    batch_size
        Cells per batch when projecting the input.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes, for each view
    (``"axis_1"``, ``"axis_2"``, …, ``"l2"``), ``obsm[f"{key_added}_{view}"]``
    (cells × modules: the terms ``λ_k a_k²`` for an axis, the scores
    ``sqrt(λ_k)|a_k|`` for ``"l2"``), and ``uns[key_added]`` with ``params``,
    per view ``eigenvalues``, ``mean_term`` and ``loadings`` (a genes ×
    modules DataFrame), and ``reconstruction_gap``: per axis, the largest
    ``|Σ_k λ_k a_k² − f_d| / max|f|`` over cells with all modules (float
    rounding only).

    Examples
    --------
    >>> gbumap.tl.fit(adata, encoder="bilinear", key_added="bilinear")  # doctest: +SKIP
    >>> gbumap.tl.interaction_modules(adata, key="bilinear")  # doctest: +SKIP
    >>> adata.uns["modules_bilinear"]["l2"]["loadings"]["module_1"].abs().nlargest(10)  # doctest: +SKIP
    """
    view = model_view(adata, key)
    batch_size = check_batch_size(batch_size)
    forms = _quadratic_forms(view)
    n_inputs = forms.shape[1]
    n_modules = check_int(
        n_modules,
        "n_modules",
        maximum=n_inputs,
        words=f"an integer from 1 to {n_inputs} (the rank of the {n_inputs} × {n_inputs} interaction matrices)",
    )
    est = view.estimator
    labels = view.batch_labels(adata)
    inputs = np.empty((adata.n_obs, n_inputs))
    for start in range(0, adata.n_obs, batch_size):  # one batch of cells read at a time (Dask or backed input too)
        rows = np.arange(start, min(start + batch_size, adata.n_obs))
        inputs[rows] = est.encode(view.matrix(adata, rows=rows), batches=None if labels is None else labels[rows])

    loadings_of = (lambda v: v) if est.components_ is None else (lambda v: est.components_.astype(np.float64).T @ v)
    position = np.einsum("nk,dkl,nl->nd", inputs, forms, inputs)
    scale = float(np.abs(position).max()) or 1.0
    key_added = result_key(adata, "interaction_modules", key_added, key)
    obsm, result = {}, {"params": {"model_key": key, "n_modules": int(n_modules)}, "reconstruction_gap": {}}
    for name, (values, vectors) in module_views(forms).items():
        activity = inputs @ vectors  # (cells, all modules)
        terms = values * activity**2
        if name != "l2":
            axis = int(name.split("_")[1]) - 1
            result["reconstruction_gap"][name] = float(np.abs(terms.sum(axis=1) - position[:, axis]).max() / scale)
        mean_term = np.abs(terms).mean(axis=0)
        top = np.argsort(-mean_term, kind="stable")[:n_modules]
        columns = [f"module_{i + 1}" for i in range(len(top))]
        if name != "l2":
            cell_values = terms[:, top]
        else:
            cell_values = np.sqrt(np.clip(values[top], 0, None)) * np.abs(activity[:, top])
        obsm[f"{key_added}_{name}"] = cell_values.astype(np.float32)
        result[name] = {
            "eigenvalues": values[top],
            "mean_term": mean_term[top],
            "loadings": pd.DataFrame(
                loadings_of(vectors[:, top]),
                index=pd.Index(view.feature_names.astype(str), name="gene"),
                columns=columns,
            ),
        }
    return write_result(adata, key_added, Result("interaction_modules", result, obsm=obsm), copy=copy)
