"""Reading a fitted model and its inputs back from an AnnData."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from .._anndata_input import InputSpec, feature_matrix
from .._attribution import contributions_from_jacobian
from .._registry import decode_model, registry_for
from .._validation import Matrix

__all__ = ["model", "ModelView", "model_view"]


def model(adata: AnnData, key: str = "gbumap", *, encoder=None):
    """Rebuild the fitted :class:`~gbumap.GlassBoxUMAP` stored in ``adata.uns[key]``.

    Nothing is unpickled: weights are read from plain numeric arrays and
    validated before use.

    Parameters
    ----------
    adata
        AnnData holding the model registry.
    key
        The model key used at fit time (``key_added``).
    encoder
        Only for models trained with a custom encoder: an instance of the
        same architecture to load the stored weights into.

    Returns
    -------
    A fitted :class:`~gbumap.GlassBoxUMAP` (on the CPU).

    Examples
    --------
    >>> import gbumap
    >>> est = gbumap.get.model(adata)  # doctest: +SKIP
    >>> est.transform(new_cells)  # doctest: +SKIP
    """
    return decode_model(registry_for(adata, key), encoder=encoder)


@dataclass
class ModelView:
    """A model together with where its input and stored Jacobians live in ``adata``."""

    key: str
    registry: Mapping
    estimator: object
    spec: InputSpec
    feature_names: np.ndarray
    gene_level: bool
    fill: dict[str, float] | None = None

    @property
    def jacobian_key(self) -> str:
        return f"{self.key}_jacobian"

    def matrix(self, adata: AnnData, features: np.ndarray | None = None, rows=None) -> Matrix:
        wanted = self.feature_names if features is None else features
        mat, _ = feature_matrix(adata, self.spec, wanted, fill=self.fill, rows=rows)
        return mat

    def iter_contributions(
        self,
        adata: AnnData,
        obs_idx: np.ndarray,
        feature_idx: np.ndarray | None = None,
        batch_size: int = 4096,
        jacobian: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, C)`` with exact ``(len(rows), n_components, n_features)`` contributions.

        Uses ``jacobian`` when given (all cells), else the Jacobians stored in
        ``obsm`` (lossless), else computes them from the model. The input is
        read one batch of rows at a time, so memory stays bounded by
        ``batch_size`` whatever the number of cells.
        """
        from .._validation import check_batch_size

        batch_size = check_batch_size(batch_size)
        est = self.estimator
        comps = est.components_
        baseline = est.baseline_
        if feature_idx is not None:
            comps = None if comps is None else comps[:, feature_idx]
            baseline = baseline[feature_idx]
        stored = jacobian
        expected = (adata.n_obs, est.n_components, est.n_inputs_)
        if stored is None and self.jacobian_key in adata.obsm:
            stored = adata.obsm[self.jacobian_key]
        if stored is not None and tuple(stored.shape) != expected:
            raise ValueError(
                f"obsm[{self.jacobian_key!r}] has shape {tuple(stored.shape)}, expected {expected}; "
                f"rerun gbumap.tl.contributions(adata, key={self.key!r})."
            )
        for start in range(0, len(obs_idx), batch_size):
            rows = obs_idx[start : start + batch_size]
            block = self.matrix(adata, rows=rows)
            if stored is not None:
                jac = np.asarray(stored[rows])
            else:
                jac = est.input_jacobian(block)
            if feature_idx is not None:
                block = block[:, feature_idx]
                if comps is None:  # no PCA: the Jacobian is per feature, so subset it too
                    jac = jac[:, :, feature_idx]
            dense = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
            offset = (dense.astype(np.float64) - baseline).astype(jac.dtype)
            yield rows, contributions_from_jacobian(jac, offset, comps, est.homogeneity_degree_)


def model_view(adata: AnnData, key: str = "gbumap") -> ModelView:
    reg = registry_for(adata, key)
    est = decode_model(reg)
    spec = InputSpec.from_dict(reg["input"]) if "input" in reg else InputSpec()
    names = np.asarray(reg["feature_names"]).astype(str) if "feature_names" in reg else None
    if names is None or len(names) != est.n_features_in_:
        raise ValueError(f"uns[{key!r}] lacks feature names matching the model; refit with gbumap.tl.fit.")
    gene_level = str(reg.get("attribution", "genes")) == "genes"
    return ModelView(
        key=key, registry=reg, estimator=est, spec=spec, feature_names=names, gene_level=gene_level, fill=fill_values(reg)
    )


def fill_values(reg: Mapping) -> dict[str, float] | None:
    """Constant values a query used for model genes it lacked (``tl.transform(fill_missing=...)``)."""
    query = reg.get("query")
    if not isinstance(query, Mapping) or "missing_genes" not in query:
        return None
    genes = np.asarray(query["missing_genes"]).astype(str)
    values = np.asarray(query["fill_values"], dtype=np.float64)
    if values.shape != genes.shape:
        raise ValueError("The registry's query fill values do not match its missing genes.")
    return dict(zip(genes.tolist(), values.tolist()))

