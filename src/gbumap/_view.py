"""The AnnData view of a stored model: where its input and Jacobians live, and its contributions.

``tl``, ``get`` and ``pl`` all read models through :func:`model_view`; the
model record itself (what ``uns[key]`` holds) belongs to
:mod:`gbumap._registry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._anndata_input import InputSpec, feature_matrix
from ._attribution import Reduction, contributions_from_jacobian, reconstruction_gap, reduce_contributions
from ._registry import ModelRecord, read_record
from ._validation import Matrix, check_batch_size

__all__ = ["GroupSums", "ModelView", "chunk_reconstruction_gaps", "model_view", "reconstruction_error_of"]


@dataclass
class GroupSums:
    """Sums over a set of cells.

    ``contributions`` ``(axes, features)``, ``jacobian`` (input space) and ``expression``.
    """

    n_cells: int
    contributions: np.ndarray
    jacobian: np.ndarray
    expression: np.ndarray

    def __sub__(self, other: GroupSums) -> GroupSums:
        return GroupSums(
            self.n_cells - other.n_cells,
            self.contributions - other.contributions,
            self.jacobian - other.jacobian,
            self.expression - other.expression,
        )

    def mean(self) -> GroupSums:
        n = self.n_cells
        return GroupSums(1, self.contributions / n, self.jacobian / n, self.expression / n)


@dataclass
class ModelView:
    """A model record together with the AnnData key it lives under."""

    key: str
    record: ModelRecord

    @property
    def estimator(self):
        return self.record.model

    @property
    def spec(self) -> InputSpec:
        return self.record.input

    @property
    def feature_names(self) -> np.ndarray:
        return self.record.feature_names

    @property
    def gene_level(self) -> bool:
        return self.record.gene_level

    @property
    def jacobian_key(self) -> str:
        return f"{self.key}_jacobian"

    @property
    def embedding_key(self) -> str:
        return f"X_{self.key}"

    def matrix(self, adata: AnnData, features: np.ndarray | None = None, rows=None, lazy: bool = False) -> Matrix:
        """The model's input for ``rows`` (all cells by default), its features in the model's order.

        Dask input (and a backed ``X``) is read into memory for those rows,
        unless ``lazy=True`` keeps it a Dask array.
        """
        wanted = self.feature_names if features is None else features
        mat, _ = feature_matrix(adata, self.spec, wanted, fill=self.record.fill, rows=rows, lazy=lazy)
        return mat

    def batch_labels(self, adata: AnnData) -> np.ndarray | None:
        """Every cell's batch label (``obs[batch_key]``) for a batch-corrected model, else ``None``."""
        if getattr(self.estimator, "correction_", None) is None:
            return None
        from ._anndata_input import obs_batches

        labels = obs_batches(adata, self.record.batch_key)
        self.estimator.correction_.codes(labels, where=f"obs[{self.record.batch_key!r}]")  # unknown batches raise
        return labels

    def feature_shift(self, block: Matrix, labels: np.ndarray | None) -> np.ndarray | None:
        """The rows' batch correction per feature, ``L δ`` ``(rows, features)`` float64, or ``None``.

        ``labels`` are the rows' batch labels; ``x − b − L δ`` is what the
        contributions multiply (the corrected expression's offset from the baseline).
        """
        if labels is None:
            return None
        return self.estimator.feature_shift(self.projection_and_shift(block, labels)[1])

    def projection_and_shift(self, block: Matrix, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows' projected offset ``z`` and their batch shift ``δ`` (float64; ``labels``: the rows' batches)."""
        est = self.estimator
        z = est._offset_projection(block, slice(None))
        return z, est.input_shift(z, est.correction_.codes(labels))

    def input_offsets(self, block: Matrix, labels: np.ndarray | None) -> np.ndarray:
        """The rows' encoder input before scaling, ``z − δ`` (float64): projected offset minus batch shift.

        ``labels`` are the rows' batch labels (``None`` for a model without correction).
        """
        if labels is None:
            return self.estimator._offset_projection(block, slice(None))
        z, shift = self.projection_and_shift(block, labels)
        return z - shift

    def feature_indices(self, genes: str | Sequence[str] | None) -> np.ndarray | None:
        """Positions of ``genes`` among the model's features (``None`` for all); unknown names raise."""
        if genes is None:
            return None
        wanted = np.asarray([genes] if isinstance(genes, str) else list(genes)).astype(str)
        idx = pd.Index(self.feature_names).get_indexer(wanted)
        if (idx < 0).any():
            missing = wanted[idx < 0]
            raise KeyError(
                f"Not among the model's {len(self.feature_names)} features: {', '.join(missing[:20])}"
                f"{' …' if len(missing) > 20 else ''}. Only genes the model was trained on have contributions."
            )
        return idx

    def iter_contributions(
        self,
        adata: AnnData,
        obs_idx: np.ndarray,
        feature_idx: np.ndarray | None = None,
        batch_size: int = 4096,
        jacobian: np.ndarray | None = None,
        part: str = "total",
        with_input: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, C)`` with exact ``(len(rows), n_components, n_features)`` contributions.

        Uses ``jacobian`` when given (all cells), else the Jacobians stored in
        ``obsm`` (lossless), else computes them from the model. The input is
        read one batch of rows at a time, so memory stays bounded by
        ``batch_size`` whatever the number of cells. ``part`` (batch-corrected
        models): ``"total"``, or its ``"expression"`` or ``"correction"`` part.
        ``with_input=True`` yields ``(rows, C, dense input block)`` (all the
        model's features, as read for ``C``), so that callers needing the
        expression too do not read the rows a second time.
        """
        batch_size = check_batch_size(batch_size)
        est = self.estimator
        comps = est.components_
        baseline = est.baseline_
        if feature_idx is not None:
            comps = None if comps is None else comps[:, feature_idx]
            baseline = baseline[feature_idx]
        for rows, block, jac, shift in self.jacobian_batches(adata, obs_idx, batch_size, jacobian):
            if feature_idx is not None:
                block = block[:, feature_idx]
                shift = None if shift is None else shift[:, feature_idx]
                if comps is None:  # no PCA: the Jacobian is per feature, so subset it too
                    jac = jac[:, :, feature_idx]
            dense = block.toarray() if hasattr(block, "toarray") else block  # float64 (jacobian_batches)
            offset = dense - baseline if part != "correction" else np.zeros(dense.shape)
            if shift is not None and part != "expression":
                offset -= shift
            contrib = contributions_from_jacobian(jac, offset.astype(jac.dtype), comps, est.homogeneity_degree_)
            yield (rows, contrib, dense) if with_input else (rows, contrib)

    def group_sums(
        self,
        adata: AnnData,
        obs_idx: np.ndarray,
        batch_size: int = 4096,
        jacobian: np.ndarray | None = None,
    ) -> GroupSums:
        """Sums over some cells of their contributions, Jacobians and input, in one pass (float64).

        With PCA the contributions are summed before the loadings are applied,
        ``Σ_i C[i, d, g] = Σ_k P[k, g] · Σ_i J[i, d, k] (x[i, g] − b[g]) / degree``:
        one product of the input with the batch's Jacobians per batch instead
        of every cell's ``(n_components, n_features)`` contributions; the same
        exact sum, several times faster. For a batch-corrected model the input
        is the corrected expression ``x − L δ`` (``expression`` sums it too).
        """
        est = self.estimator
        n_axes, n_features = est.n_components, len(self.feature_names)
        contributions = np.zeros((n_axes, n_features))
        jac_sum = np.zeros((n_axes, est.n_inputs_))
        expression = np.zeros(n_features)
        # without PCA: Σ_i J ⊙ (x − b) directly; with it, (features × axes·inputs): Σ_i (x[i] − b) ⊗ J[i]
        folded = None if est.components_ is None else np.zeros((n_features, n_axes * est.n_inputs_))
        for rows, block, jac, shift in self.jacobian_batches(adata, obs_idx, batch_size, jacobian):
            jac = jac.astype(np.float64)
            jac_sum += jac.sum(axis=0)
            expression += np.asarray(block.sum(axis=0)).ravel()
            if shift is not None:
                expression -= shift.sum(axis=0)
            if folded is None:
                dense = block.toarray() if sp.issparse(block) else block
                offset = dense - est.baseline_ if shift is None else dense - est.baseline_ - shift
                contributions += np.einsum("ndg,ng->dg", jac, offset)
            else:
                flat = jac.reshape(len(rows), -1)
                folded += np.asarray(block.T @ flat) - np.outer(est.baseline_, flat.sum(axis=0))
                if shift is not None:
                    folded -= shift.T @ flat
        if folded is not None:
            loadings = est.components_.astype(np.float64)  # (inputs, features)
            for d in range(n_axes):
                block = folded[:, d * est.n_inputs_ : (d + 1) * est.n_inputs_]
                contributions[d] = np.einsum("gk,kg->g", block, loadings)
        return GroupSums(len(obs_idx), contributions / est.homogeneity_degree_, jac_sum, expression)

    def feature_jacobian(self, jacobian: np.ndarray) -> np.ndarray:
        """An input-space Jacobian ``(n_components, n_inputs)`` mapped to the features (through the loadings)."""
        comps = self.estimator.components_
        return jacobian if comps is None else jacobian @ comps.astype(np.float64)

    def jacobian_batches(
        self, adata: AnnData, obs_idx: np.ndarray, batch_size: int, jacobian: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, Matrix, np.ndarray, np.ndarray | None]]:
        """Yield ``(rows, input block, Jacobians, feature shift)``: stored Jacobians when present, else computed.

        The feature shift is the rows' batch correction ``L δ`` (``None`` for a model without one).
        """
        batch_size = check_batch_size(batch_size)
        est = self.estimator
        stored = self.stored_jacobian(adata, jacobian)
        labels = self.batch_labels(adata)
        for start in range(0, len(obs_idx), batch_size):
            rows = obs_idx[start : start + batch_size]
            block = self.matrix(adata, rows=rows)
            row_labels = None if labels is None else labels[rows]
            if stored is not None:
                jac = np.asarray(stored[rows])
            else:
                jac = est.input_jacobian(block, batches=row_labels)
            shift = self.feature_shift(block, row_labels)
            if sp.issparse(block):
                block = block.astype(np.float64)
            else:
                block = np.asarray(block, dtype=np.float64)
            yield rows, block, jac, shift

    def stored_jacobian(self, adata: AnnData, jacobian: np.ndarray | None = None) -> np.ndarray | None:
        """The Jacobians to reuse (``jacobian``, else ``obsm``), checked against the model; ``None`` to compute."""
        est = self.estimator
        stored = jacobian
        expected = (adata.n_obs, est.n_components, est.n_inputs_)
        if stored is None and self.jacobian_key in adata.obsm:
            stored = adata.obsm[self.jacobian_key]
        if stored is not None and tuple(stored.shape) != expected:
            raise ValueError(
                f"obsm[{self.jacobian_key!r}] has shape {tuple(stored.shape)}, expected {expected}; "
                f"rerun gbumap.tl.contributions(adata, key={self.key!r})."
            )
        return stored

    def iter_reduced(
        self,
        adata: AnnData,
        obs_idx: np.ndarray,
        reduction: Reduction,
        feature_idx: np.ndarray | None = None,
        batch_size: int = 4096,
        jacobian: np.ndarray | None = None,
        part: str = "total",
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, values)``: contributions collapsed by ``reduction``, for the features wanted.

        ``"normed_l2"`` is always the share of the cell's total over *all* the
        model's features, also when only some features are wanted.
        """
        whole = reduction == "normed_l2" and feature_idx is not None
        source = None if whole else feature_idx
        for rows, contrib in self.iter_contributions(adata, obs_idx, source, batch_size, jacobian, part):
            values = reduce_contributions(contrib, reduction)
            yield rows, values[..., feature_idx] if whole else values


def model_view(adata: AnnData, key: str = "gbumap") -> ModelView:
    """The view of the model stored under ``key`` (validated; nothing is unpickled)."""
    return ModelView(key=key, record=read_record(adata, key))


def reconstruction_error_of(
    adata: AnnData, view: ModelView, *, jacobian: np.ndarray | None = None, batch_size: int = 4096
) -> dict[str, float]:
    """``max |Σ_g C − Z|`` over cells and axes, absolute and relative to ``max |Z|``, for ``obsm["X_<key>"]``."""
    if view.embedding_key not in adata.obsm:
        raise KeyError(
            f"obsm[{view.embedding_key!r}] not found; run gbumap.tl.fit(adata, key_added={view.key!r})."
        )
    emb = np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)
    worst = 0.0
    rows_all = np.arange(adata.n_obs)
    for rows, contrib in view.iter_contributions(adata, rows_all, batch_size=batch_size, jacobian=jacobian):
        worst = max(worst, reconstruction_gap(contrib, emb[rows]))
    scale = float(np.abs(emb).max()) or 1.0
    return {"max_abs": worst, "max_rel": worst / scale}


def chunk_reconstruction_gaps(X, jacobian, embedding: np.ndarray, view: ModelView, labels: np.ndarray | None = None):
    """Per row chunk, ``max |Σ_g C − Z|`` from the chunk's input, Jacobians and embedding (lazy).

    ``labels``: every cell's batch label, for a batch-corrected model.
    """
    import dask.array as da

    from ._dask import shared

    est = view.estimator
    emb = da.from_array(embedding, chunks=(X.chunks[0], embedding.shape[1]), name=False)
    codes = None if labels is None else est.correction_.codes(labels)
    arrays = [X, "ij", jacobian, "iab", emb, "ic"]
    if codes is not None:
        arrays += [da.from_array(codes[:, None], chunks=(X.chunks[0], 1), name=False), "ie"]
    return da.blockwise(
        _chunk_gap, "i", *arrays, shared(est._chunk_model()), None, adjust_chunks={"i": 1},
        concatenate=True, dtype=np.float64, meta=np.empty(0),
    )


def _chunk_gap(block, jac, emb_rows, *rest) -> np.ndarray:
    """``max |Σ_g C − Z|`` of one chunk (module-level: a distributed scheduler receives the model once).

    ``rest`` is ``(model,)`` or, for a batch-corrected model, ``(batch codes of the rows, model)``.
    """
    codes, est = (None, rest[0]) if len(rest) == 1 else (np.asarray(rest[0])[:, 0], rest[1])
    offset = est.feature_offsets(block, slice(None), codes)
    contrib = contributions_from_jacobian(jac, offset.astype(jac.dtype), est.components_, est.homogeneity_degree_)
    return np.array([reconstruction_gap(contrib, emb_rows)])
