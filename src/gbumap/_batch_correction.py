"""Batch correction as a per-cell shift of the encoder input, so that contributions stay exact.

A cell's encoder input is its offset from the baseline projected on the loadings,
``z = P (x − b)``. The correction subtracts a per-cell shift ``δ``:
``z̃ = z − δ``. For any loadings ``P`` of full row rank, ``z̃ = P (x̃ − b)`` with the
*corrected expression* ``x̃ = x − L δ``, ``L = Pᵀ (P Pᵀ)⁻¹`` (``L = I`` without a
PCA). The gene contributions ``J_x · (x̃ − b)`` therefore sum exactly to the
embedding ``f(z̃)``, and each gene's term splits exactly into an *expression part*
``J_x · (x − b)`` and a *correction part* ``−J_x · L δ``.

``δ`` is a function of the cell's own ``z`` and its batch, learned at fit time
and stored as plain arrays:

``δ(z, batch) = Σ_k R_k(z) · W[batch, k]``

where ``R(z)`` are soft memberships of ``z`` in ``K`` clusters (a softmax of the
cosine similarity to the cluster centroids, bandwidth ``sigma``) and
``W[batch, k]`` the batch's offset in cluster ``k``.

* ``method="harmony"``: Harmony (``harmonypy``, the implementation scanpy wraps)
  runs on the model's own PCA; its centroids define the clusters, and ``W`` is
  the least-squares fit, batch by batch, of Harmony's per-cell correction on
  those memberships (Harmony's correction has this very mixture form). The rule
  then applies unchanged to training cells and to new cells of a known batch.
* ``method="baseline"``: one cluster; ``W[batch]`` is the batch's mean input
  minus the mean of all cells, so every batch is centred on the common mean.

A batch the model never saw gets its offsets from its own cells, as Symphony
maps queries onto a Harmony reference: per cluster, the ridge-shrunk mean of
the query cells' distance to the reference's corrected cluster mean
(:meth:`BatchCorrection.with_new_batches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BatchCorrection", "CORRECTION_METHODS", "batch_labels", "fit_correction", "lift_matrix"]

CORRECTION_METHODS = ("harmony", "baseline")

# Harmony's defaults stop after two rounds on data whose batches dominate the PCs (its objective
# changes by less than epsilon_harmony=1e-2 per round while nothing is corrected yet); measured on the
# simulator (benchmarks/integration.py), more rounds are what make it correct.
HARMONY_DEFAULTS = {"max_iter_harmony": 20, "epsilon_harmony": 1e-4, "sigma": 0.1}
# Ridge penalty (in cells) of a new batch's offsets: clusters the query barely reaches are left alone.
_QUERY_RIDGE = 1.0


def batch_labels(values: Any, *, name: str = "batches", n_cells: int | None = None) -> np.ndarray:
    """Batch labels as a 1-D array of strings, refusing missing labels with an error naming ``name``."""
    series = pd.Series(np.asarray(values, dtype=object).ravel() if not isinstance(values, pd.Series) else values)
    if n_cells is not None and len(series) != n_cells:
        raise ValueError(f"{name} has {len(series)} labels for {n_cells} cells; give one batch label per cell.")
    if series.isna().any():
        n_missing = int(series.isna().sum())
        raise ValueError(
            f"{name} has {n_missing} missing label(s) (NaN/None). Every cell needs a batch: fill them "
            "(e.g. adata.obs[batch_key] = adata.obs[batch_key].cat.add_categories('unknown').fillna('unknown')) "
            "or remove those cells."
        )
    return series.astype(str).to_numpy()


def lift_matrix(components: np.ndarray | None, n_inputs: int) -> np.ndarray | None:
    """``(n_inputs, n_features)`` matrix ``M`` with ``P (δ M)ᵀ = δ``: an input-space shift in features.

    ``M = (P Pᵀ)⁻¹ P`` (the minimum-norm lift; ``P`` itself for orthonormal
    loadings), or ``None`` without a PCA (the shift is already per feature).
    """
    if components is None:
        return None
    P = np.asarray(components, dtype=np.float64)
    return np.linalg.solve(P @ P.T, P)


@dataclass(frozen=True)
class BatchCorrection:
    """A fitted per-cell input shift ``δ(z, batch) = Σ_k R_k(z) W[batch, k]`` (see the module docstring)."""

    method: str
    categories: np.ndarray  # (B,) str: the batches with offsets (reference batches first)
    centroids: np.ndarray  # (K, d) unit-norm rows (one zero row for "baseline")
    sigma: float
    offsets: np.ndarray  # (B, K, d) float64
    cluster_means: np.ndarray  # (K, d) the reference's corrected input, averaged per cluster (R-weighted)
    n_reference_batches: int

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def reference_batches(self) -> np.ndarray:
        return self.categories[: self.n_reference_batches]

    def memberships(self, z: np.ndarray) -> np.ndarray:
        """Soft cluster memberships ``(n, K)`` of inputs ``z`` (rows sum to 1)."""
        z = np.asarray(z, dtype=np.float64)
        if self.n_clusters == 1:
            return np.ones((z.shape[0], 1))
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        logits = -2.0 * (1.0 - (z / norms) @ self.centroids.T) / self.sigma
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def codes(self, labels: np.ndarray, *, where: str = "batches") -> np.ndarray:
        """Positions of ``labels`` among :attr:`categories`; unknown batches raise."""
        idx = pd.Index(self.categories).get_indexer(pd.Index(np.asarray(labels, dtype=str)))
        if (idx < 0).any():
            unknown = sorted(set(np.asarray(labels, dtype=str)[idx < 0].tolist()))
            raise ValueError(
                f"{where} holds batch(es) the model has no offsets for: {', '.join(map(repr, unknown[:10]))}"
                f"{' …' if len(unknown) > 10 else ''} (it knows {', '.join(repr(str(c)) for c in self.categories[:10])}). "
                "Map new batches with gbumap.tl.transform(query, reference), which estimates their offsets "
                "from their own cells, or model.with_new_batches(X, batches) on the estimator."
            )
        return idx

    def shifts(self, z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``δ`` ``(n, d)`` (float64) for inputs ``z`` of cells in batches ``codes``."""
        R = self.memberships(z)
        return np.einsum("nk,nkd->nd", R, self.offsets[np.asarray(codes)])

    def with_new_batches(self, z: np.ndarray, labels: np.ndarray) -> BatchCorrection:
        """This correction with offsets for the batches in ``labels`` that it lacks, from their cells ``z``.

        Per cluster ``k``, a new batch's offset is ``Σ_i R_ik (z_i − m_k) / (Σ_i R_ik + 1)``
        over its cells, with ``m_k`` the reference's corrected cluster mean: the
        query is moved onto the reference where it overlaps it, and left where
        it reaches no reference cluster. Known batches keep their offsets.
        """
        labels = np.asarray(labels, dtype=str)
        new = [b for b in pd.unique(labels) if b not in set(self.categories.tolist())]
        if not new:
            return self
        z = np.asarray(z, dtype=np.float64)
        R = self.memberships(z)
        added = np.empty((len(new), self.n_clusters, z.shape[1]))
        for j, batch in enumerate(new):
            cells = labels == batch
            Rb = R[cells]
            mass = Rb.sum(axis=0)  # (K,)
            added[j] = (Rb.T @ z[cells] - mass[:, None] * self.cluster_means) / (mass[:, None] + _QUERY_RIDGE)
        return replace(
            self,
            categories=np.concatenate([self.categories, np.asarray(new, dtype=str)]),
            offsets=np.concatenate([self.offsets, added]),
        )

    # ------------------------------------------------------------------ plain arrays (the registry)
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "categories": np.asarray(self.categories, dtype=str),
            "centroids": np.asarray(self.centroids, dtype=np.float64),
            "sigma": float(self.sigma),
            "offsets": np.asarray(self.offsets, dtype=np.float64),
            "cluster_means": np.asarray(self.cluster_means, dtype=np.float64),
            "n_reference_batches": int(self.n_reference_batches),
        }

    @classmethod
    def from_dict(cls, d: Mapping, n_inputs: int, *, check) -> BatchCorrection:
        """Rebuild from :meth:`to_dict`'s arrays; ``check`` is the registry's ``(name, value, kind, shape)`` validator."""
        method = check("method", d.get("method"), str, None)
        if method not in CORRECTION_METHODS:
            raise ValueError(f"unknown batch correction method {method!r}")
        categories = check("categories", d.get("categories"), "strings", None)
        centroids = check("centroids", d.get("centroids"), "array", None)
        if centroids.ndim != 2 or centroids.shape[1] != n_inputs or centroids.shape[0] < 1:
            raise ValueError(f"centroids must be (K, {n_inputs}); got {centroids.shape}")
        K, B = centroids.shape[0], len(categories)
        offsets = check("offsets", d.get("offsets"), "array", (B, K, n_inputs))
        cluster_means = check("cluster_means", d.get("cluster_means"), "array", (K, n_inputs))
        sigma = check("sigma", d.get("sigma"), float, None)
        n_ref = check("n_reference_batches", d.get("n_reference_batches"), int, None)
        if not sigma > 0 or not 1 <= n_ref <= B or len(set(categories.tolist())) != B:
            raise ValueError("sigma must be > 0, n_reference_batches within the batches, and batches unique")
        return cls(method, categories, centroids.astype(np.float64), sigma, offsets.astype(np.float64),
                   cluster_means.astype(np.float64), n_ref)


def fit_correction(
    z: np.ndarray,
    labels: np.ndarray,
    method: str = "harmony",
    *,
    random_state: int = 0,
    harmony_kwargs: Mapping[str, Any] | None = None,
) -> BatchCorrection:
    """Learn the correction from the reference cells' inputs ``z`` ``(n, d)`` and batch ``labels``.

    Raises a ``ValueError`` for a batch of a single cell (its shift cannot be
    estimated) and when fewer than two batches are given.
    """
    if method not in CORRECTION_METHODS:
        raise ValueError(f"batch_correction must be one of {CORRECTION_METHODS}; got {method!r}.")
    z = np.asarray(z, dtype=np.float64)
    categories, codes, counts = np.unique(np.asarray(labels, dtype=str), return_inverse=True, return_counts=True)
    if len(categories) < 2:
        raise ValueError(
            f"The batch labels name a single batch ({str(categories[0])!r}); a correction needs at least two. "
            "Drop batch_key to fit without correction."
        )
    if counts.min() < 2:
        small = categories[counts < 2]
        raise ValueError(
            f"Batch(es) {', '.join(repr(str(c)) for c in small[:10])} hold a single cell; a batch's shift cannot be "
            "estimated from one cell. Merge them into a larger batch or remove those cells."
        )
    d = z.shape[1]
    if method == "baseline":
        centroids = np.zeros((1, d))
        overall = z.mean(axis=0)
        offsets = np.stack([z[codes == b].mean(axis=0) - overall for b in range(len(categories))])[:, None, :]
        correction = BatchCorrection(method, categories, centroids, 1.0, offsets, overall[None], len(categories))
        return correction
    import harmonypy

    options = {**HARMONY_DEFAULTS, **dict(harmony_kwargs or {})}
    meta = pd.DataFrame({"batch": categories[codes]})
    result = harmonypy.run_harmony(z, meta, "batch", random_state=int(random_state), verbose=False, **options)
    corrected = np.asarray(result.Z_corr, dtype=np.float64)
    if corrected.shape != z.shape:  # harmonypy < 2 returns PCs × cells
        corrected = corrected.T
    target = z - corrected  # Harmony's per-cell shift
    Y = np.asarray(result.Y, dtype=np.float64).T  # (K, d): centroids, PCs × clusters in every harmonypy
    centroids = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    sigma = float(np.mean(np.atleast_1d(options["sigma"])))
    draft = BatchCorrection(method, categories, centroids, sigma, np.zeros((len(categories), len(Y), d)),
                            np.zeros((len(Y), d)), len(categories))
    R = draft.memberships(z)
    K = R.shape[1]
    offsets = np.empty((len(categories), K, d))
    for b in range(len(categories)):
        Rb = R[codes == b]
        gram = Rb.T @ Rb
        gram[np.diag_indices(K)] += 1e-6 * max(np.trace(gram) / K, 1e-12)  # clusters a batch never reaches: 0
        offsets[b] = np.linalg.solve(gram, Rb.T @ target[codes == b])
    shift = np.einsum("nk,nkd->nd", R, offsets[codes])
    mass = R.sum(axis=0)
    cluster_means = (R.T @ (z - shift)) / np.maximum(mass, 1e-12)[:, None]
    return replace(draft, offsets=offsets, cluster_means=cluster_means)
