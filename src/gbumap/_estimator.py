"""``GlassBoxUMAP``: a scikit-learn style parametric UMAP with exact contributions."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._attribution import Reduction, contributions_from_jacobian, reconstruction_gap, reduce_contributions
from ._batch_correction import BatchCorrection, batch_labels, fit_correction, lift_matrix
from ._dask import (
    column_stats,
    compute,
    fixed_row_blocks,
    gather_rows,
    is_dask_array,
    map_row_chunks,
    row_chunked,
    threads_for_in_memory,
)
from ._encoder import BilinearEncoder, HomogeneousMLP, check_homogeneous, encoder_jacobian
from ._params import PARAMS
from ._progress import progress_bar
from ._schedule import training_schedule
from ._validation import Matrix, as_matrix

__all__ = ["GlassBoxUMAP"]

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _row_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _dense_rows(X: Matrix, rows: slice, dtype) -> np.ndarray:
    block = X[rows]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(dtype, copy=False)




class GlassBoxUMAP(TransformerMixin, BaseEstimator):
    """Parametric UMAP whose embedding is exactly the sum of per-feature contributions.

    The encoder is a bias-free network with piecewise-linear activations, so
    it is positively homogeneous of degree 1: ``f(x) = J(x)·x``. Every cell's
    coordinates therefore split exactly into one contribution per feature,
    ``J[axis, feature]·(x[feature] - baseline[feature])``.

    Parameters
    ----------
    n_neighbors
        Size of the local neighbourhood used to build the kNN graph.
    n_components
        Dimension of the embedding.
    metric
        Distance for the kNN search (any pynndescent / SciPy metric name).
    min_dist
        Minimum spacing of points in the embedding, as in UMAP.
    spread
        Scale of the embedded points, as in UMAP.
    negative_sample_rate
        Negative samples per positive edge.
    repulsion_strength
        Weight of the repulsive term of the loss.
    pca_components
        Fold a PCA of this many components into the model (``None``: the
        encoder sees the features directly). Contributions are still per
        feature: the Jacobian is projected back through the loadings.
    baseline
        ``"mean"`` centres the input on the average cell, so contributions
        explain a cell's offset from it; ``"zero"`` leaves the input
        uncentred, so a feature with value 0 contributes exactly 0 and the
        contributions equal integrated gradients / DeepLIFT from the all-zero
        input.
    input_norm
        How each cell's encoder input ``z`` (its offset from the baseline,
        projected on the PCs) is scaled before the encoder. A homogeneous
        encoder maps ``a·z`` to ``a·f(z)``, so without scaling, cells that
        differ only in their distance from the baseline are drawn as streaks
        through the map's centre. ``"soft"``: ``z / sqrt(|z|² + c²)``, with
        ``c = input_norm_scale ×`` the median ``|z|`` of the training cells;
        cells far from the baseline are brought to a common radius, cells near
        it keep their small offset. ``"l2"``: ``z / |z|`` (every cell on the
        unit sphere). ``"none"``: ``z`` as it is. The divisor ``s`` is a
        per-cell constant, so the contributions ``J(z/s)·Pᵀ(x - b) / s`` still
        sum exactly to the embedding ``f(z/s)``.
    input_norm_scale
        ``c`` of ``input_norm="soft"``, as a multiple of the median input norm.
    hidden_layers
        Widths of the encoder's hidden layers (with ``encoder="bilinear"``,
        the first entry is the number of bilinear units).
    activation
        ``"leaky_relu"`` (slope 0.1), ``"prelu"`` (learned slopes) or ``"relu"``.
    encoder
        ``None`` (the default piecewise-linear network), ``"bilinear"``
        (gbumap's bilinear encoder: each output is a quadratic form
        ``zᵀ Q_d z`` of the input, homogeneous of degree 2, stored in the
        registry like the default; its gene–gene interaction matrices are read
        by :func:`gbumap.tl.interaction_modules`) or a custom
        ``torch.nn.Module``, which must be positively homogeneous of degree
        ``homogeneity_degree``; this is verified on the data before training.
    homogeneity_degree
        Degree ``k`` of a custom encoder (contributions are ``J·x / k``); the
        bilinear encoder has degree 2 whatever this says.
    learning_rate
        Peak learning rate of the one-cycle Adam schedule; ``None``: 0.02
        full batch, 0.01 on edge batches.
    n_steps
        Optimisation steps; ``None`` picks a size-dependent default (400 full
        batch; 2,000 to 3,000 edge-batch steps, growing with the cells).
    batch_size
        Graph edges per step; ``None``: 8,192 full batch, 1,024 on edge batches.
    full_batch
        Embed every cell at each step and draw the step's edges and negatives
        over the whole layout (one network pass serves many edges), instead
        of embedding only the cells of the step's edges. ``None``: full batch
        when the graph has at most 7,000 cells and ``devices == 1``. The fitted
        model records the values used (``get_params()`` after loading). See
        :mod:`gbumap._schedule` and the everyday-path table on the
        performance page.
    early_stopping
        Stop when the loss has not improved for a while.
    random_state
        Seed for PCA, the kNN search, initialisation and edge sampling
        (``None`` uses seed 0, so every fit is seeded). On the CPU the same
        seed, input, parameters and library versions give a bitwise-identical
        model, embedding and contributions, in the same process and in a fresh
        one. On a GPU, results agree only to about ``1e-6`` and are not
        bitwise reproducible: the backward pass of gathers and scatters
        (``index_add``/``scatter_add``) uses CUDA atomics, whose summation order
        varies between runs, and cuBLAS may pick different reduction orders.
        Call ``torch.use_deterministic_algorithms(True)`` (and set
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8``) before fitting for bitwise GPU
        reproducibility, at some cost in speed. Different seeds give different
        embeddings.
    accelerator
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    engine
        The training loop's driver. ``"lightning"`` runs it under Lightning
        Fabric (device placement, precision, backward); ``"torch"`` runs the
        same loop in plain PyTorch; ``"auto"`` uses Lightning on GPUs and plain
        PyTorch on the CPU, where Fabric adds a few seconds of import time and
        nothing else a single-device loop needs. Both give the same result.
    devices
        Number of training processes. ``1`` (the default) trains in this
        process. ``devices > 1`` trains under Lightning Fabric's DDP strategy
        (gloo on the CPU, NCCL on CUDA with one GPU per process; not on MPS):
        each process samples its own ``batch_size`` edges per step (seed
        ``random_state + rank``), the gradients are averaged over the processes
        and all of them run the same ``n_steps``, so a step sees ``devices ×
        batch_size`` edges; the result therefore differs from a one-process
        fit. When the process was started by a launcher (``WORLD_SIZE`` set,
        e.g. ``torchrun --nproc_per_node=N``; it must equal ``devices``), every
        launched process calls ``fit`` itself and trains its rank in place,
        ending with the same weights. Otherwise ``fit`` spawns ``devices``
        worker processes (``strategy="ddp_spawn"``) and loads rank 0's trained
        weights into ``encoder_``; a script must then guard its entry point
        with ``if __name__ == "__main__":``, and a custom ``encoder`` must be
        picklable. The PCA and the graph are computed before training, in
        each launched process or once in the spawning one. ``checkpoint_path``
        is not supported with ``devices > 1``. ``training_info_`` records
        ``devices`` and the ``strategy`` (``"single_device"``, ``"ddp"`` or
        ``"ddp_spawn"``).
    dtype
        ``"float32"`` or ``"float64"`` for the encoder and its Jacobians.
    training_precision
        Arithmetic of the training steps. ``"bf16-mixed"``: matrix products
        in bfloat16 (weights, loss and optimizer in float32), about 1.2-2×
        faster per step on hardware with bf16 units; ``"full"``: the model's
        ``dtype`` throughout; ``"auto"``: ``"bf16-mixed"`` on CUDA GPUs with
        bf16 support and on CPUs with AVX512-BF16 or AMX, else ``"full"``.
        Float64 models always train in full precision. It does not affect
        exactness: the Jacobians and contributions of the trained model are
        computed in ``dtype``.
    batch_correction
        How ``fit(X, batches=...)`` integrates batches (ignored without
        ``batches``): ``"harmony"`` runs Harmony (``harmonypy``) on the model's
        own PCA and learns its correction as a per-cell shift of the encoder
        input, a soft mixture of per-cluster, per-batch offsets;
        ``"baseline"`` centres each batch on the common mean. Either way the
        shift ``δ`` is subtracted from the cell's input, ``z̃ = z − δ``, so the
        contributions still sum exactly to the embedding, and each feature's
        contribution splits exactly into an expression part and a correction
        part (``compute_contributions(part=...)``). See :doc:`/integration`.
    verbose
        Show progress bars and timings.
    checkpoint_path
        Opt-in checkpoint file. When set, the encoder's ``state_dict`` is saved
        there with ``torch.save`` at the end of training, and also when
        training is interrupted (``KeyboardInterrupt``), before the interrupt
        is re-raised. The file holds ``{"format": "gbumap-checkpoint",
        "state_dict", "step", "n_steps", "interrupted", "n_inputs",
        "n_components"}`` (tensors and plain Python values only), so it loads
        with ``torch.load(path, weights_only=True)``. ``None`` (the default)
        writes nothing. It is not stored in the AnnData model registry. Not
        supported with ``devices > 1`` (``fit`` raises a ``ValueError``).

    Attributes
    ----------
    embedding_
        ``(n_cells, n_components)`` embedding of the training data.
    encoder_
        The trained ``torch.nn.Module``.
    components_
        ``(pca_components, n_features)`` PCA loadings, or ``None``.
    baseline_
        ``(n_features,)`` reference cell the contributions are measured from.
    graph_
        The symmetric fuzzy neighbour graph (CSR).
    loss_history_
        Loss at every step.
    a_, b_
        Parameters of the low-dimensional similarity curve.
    correction_
        The fitted :class:`~gbumap._batch_correction.BatchCorrection` when
        ``fit`` was given ``batches`` (else ``None``); ``batch_categories_``
        lists its batches.
    timings_
        Seconds spent in each stage of ``fit``: ``pca`` (with its passes
        ``pca_means``, ``pca_svd``, ``pca_projection``), ``graph`` (with the
        neighbour search ``graph_knn``), ``training`` and ``embed``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from gbumap import GlassBoxUMAP
    >>> X = load_digits().data
    >>> model = GlassBoxUMAP(n_steps=200, random_state=0)
    >>> emb = model.fit_transform(X)
    >>> contrib = model.compute_contributions(X)
    >>> bool(abs(contrib.sum(-1) - emb).max() < 1e-3 * abs(emb).max())
    True
    """

    def __init__(  # noqa: PLR0913 (a scikit-learn estimator: every option is a constructor parameter)
        self,
        n_neighbors: int = 15,
        n_components: int = 2,
        metric: str = "euclidean",
        min_dist: float = 0.1,
        spread: float = 1.0,
        negative_sample_rate: int = 5,
        repulsion_strength: float = 1.0,
        pca_components: int | None = None,
        baseline: Literal["mean", "zero"] = "mean",
        input_norm: Literal["soft", "l2", "none"] = "soft",
        input_norm_scale: float = 0.5,
        hidden_layers: Sequence[int] = (128, 128, 128, 128),
        activation: Literal["leaky_relu", "prelu", "relu"] = "leaky_relu",
        encoder: nn.Module | None = None,
        homogeneity_degree: int = 1,
        learning_rate: float | None = None,
        n_steps: int | None = None,
        batch_size: int | None = None,
        full_batch: bool | None = None,
        early_stopping: bool = False,
        random_state: int | None = 0,
        accelerator: str = "auto",
        engine: Literal["auto", "torch", "lightning"] = "auto",
        dtype: Literal["float32", "float64"] = "float32",
        training_precision: Literal["auto", "full", "bf16-mixed"] = "auto",
        verbose: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        devices: int = 1,
        batch_correction: Literal["harmony", "baseline"] = "harmony",
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.metric = metric
        self.min_dist = min_dist
        self.spread = spread
        self.negative_sample_rate = negative_sample_rate
        self.repulsion_strength = repulsion_strength
        self.pca_components = pca_components
        self.baseline = baseline
        self.input_norm = input_norm
        self.input_norm_scale = input_norm_scale
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.encoder = encoder
        self.homogeneity_degree = homogeneity_degree
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.full_batch = full_batch
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.accelerator = accelerator
        self.engine = engine
        self.dtype = dtype
        self.training_precision = training_precision
        self.verbose = verbose
        self.checkpoint_path = checkpoint_path
        self.devices = devices
        self.batch_correction = batch_correction

    # ------------------------------------------------------------------ checks
    def _check_params(self, n_cells: int | None = None) -> None:
        """Raise a clear error for an invalid parameter (or too few cells for ``n_neighbors``).

        Each parameter is checked against its row of :data:`gbumap._params.PARAMS`;
        the rules that tie several parameters together follow.
        """
        for param in PARAMS:
            param.check(getattr(self, param.name))
        if self.devices > 1 and str(self.accelerator).lower() == "mps":
            raise ValueError(
                f"devices={self.devices} is not supported with accelerator='mps' (no multi-process backend); "
                "use devices=1, or accelerator='cpu' to train in several CPU processes."
            )
        if self.devices > 1 and self.full_batch:
            raise ValueError(
                f"full_batch=True is not supported with devices={self.devices} (each process samples its own "
                "edge batches); use full_batch=None or False, or devices=1."
            )
        if self.devices > 1 and self.checkpoint_path is not None:
            raise ValueError(
                f"checkpoint_path is not supported with devices={self.devices}; "
                "use devices=1 to write a checkpoint, or checkpoint_path=None."
            )
        if n_cells is not None and n_cells < self.n_neighbors + 1:
            raise ValueError(
                f"Too few cells: {n_cells} cells for n_neighbors={self.n_neighbors}. "
                f"Need at least n_neighbors + 1 = {self.n_neighbors + 1}; lower n_neighbors or add cells."
            )

    def _resolve_engine(self, device: torch.device) -> str:
        if self.engine == "auto":
            return "lightning" if device.type in ("cuda", "mps") else "torch"
        return self.engine

    def _check_fitted(self) -> None:
        check_is_fitted(self, "encoder_", msg="This GlassBoxUMAP is not fitted yet; call fit(X) first.")

    def _checked_input(self, X: Any) -> Matrix:
        """``X`` as the model's matrix type, after checking the model is fitted and the features match.

        The one input check of ``transform``, ``input_jacobian``,
        ``compute_contributions`` and ``reconstruction_error``.
        """
        self._check_fitted()
        X = as_matrix(X, name="X", dtype=self.numpy_dtype)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}. "
                "Pass the same features in the same order."
            )
        return X

    def _batch_codes(self, batches: Any, n_cells: int) -> np.ndarray | None:
        """Integer batch codes for ``batches`` (``None`` for a model without correction); checked."""
        correction = getattr(self, "correction_", None)
        if correction is None:
            if batches is not None:
                raise ValueError(
                    "batches were given but this model was fitted without batch correction; "
                    "drop batches=, or refit with fit(X, batches=...)."
                )
            return None
        if batches is None:
            raise ValueError(
                f"This model corrects batches ({', '.join(repr(str(c)) for c in correction.categories[:5])}"
                f"{' …' if len(correction.categories) > 5 else ''}): pass batches= with one label per cell."
            )
        return correction.codes(batch_labels(batches, n_cells=n_cells))

    def input_shift(self, z: np.ndarray, codes: np.ndarray | None) -> np.ndarray | None:
        """The batch correction's per-cell input shift ``δ`` (float64) for unscaled inputs ``z``, or ``None``."""
        correction = getattr(self, "correction_", None)
        if correction is None:
            return None
        return correction.shifts(z, codes)

    def feature_shift(self, shift: np.ndarray) -> np.ndarray:
        """An input-space shift ``δ`` ``(n, n_inputs)`` as per-feature values ``(n, n_features)``.

        ``L δ`` with the lift of :func:`~gbumap._batch_correction.lift_matrix`:
        projecting it on the loadings gives back ``δ``, so the corrected
        expression ``x − L δ`` has exactly the encoder input ``z − δ``.
        """
        lift = getattr(self, "_lift", None)
        if lift is None and self.components_ is not None:
            lift = self._lift = lift_matrix(self.components_, self.n_inputs_)
        return shift if lift is None else shift @ lift

    def with_new_batches(self, X: Any, batches: Any) -> GlassBoxUMAP:
        """A copy of this model that also knows the batches of ``batches`` it lacks (estimated from ``X``).

        New batches get their offsets from their own cells (see
        :meth:`~gbumap._batch_correction.BatchCorrection.with_new_batches`);
        the encoder is shared, not copied. Returns ``self`` when every batch is known.
        """
        import copy

        X = self._checked_input(X)
        if getattr(self, "correction_", None) is None:
            raise ValueError("This model was fitted without batch correction; it has no batches to extend.")
        labels = batch_labels(batches, n_cells=X.shape[0])
        if set(labels.tolist()) <= set(self.correction_.categories.tolist()):
            return self
        Z = self._projected_rows(X).astype(np.float64)
        model = copy.copy(self)
        model.correction_ = self.correction_.with_new_batches(Z, labels)
        model.batch_categories_ = model.correction_.categories
        return model

    # ------------------------------------------------------------------ helpers
    @property
    def numpy_dtype(self) -> type:
        """The NumPy dtype of the model's outputs (``np.float32`` or ``np.float64``, from ``dtype``)."""
        return np.float64 if self.dtype == "float64" else np.float32

    @property
    def _torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.dtype]

    @property
    def device_(self) -> torch.device:
        self._check_fitted()
        return next(iter(self.encoder_.parameters()), torch.empty(0)).device

    def _inference_batch_size(self) -> int:
        width = max([*self._hidden_widths(), self.n_features_in_, 1])
        return int(max(256, min(65536, 2**24 // width)))

    def _hidden_widths(self) -> list[int]:
        return [int(h) for h in self.hidden_layers] if self.encoder is None else []

    def _offset_projection(self, X: Matrix, rows: slice) -> np.ndarray:
        """``z``: the rows' offset from the baseline, projected on the loadings (float64, unscaled)."""
        block = X[rows]
        if self.components_ is None:
            dense = block.toarray() if sp.issparse(block) else np.asarray(block)
            return dense.astype(np.float64) - self.baseline_
        proj = np.asarray(block @ self.components_.T, dtype=np.float64)
        return proj - self._baseline_projection

    def offset_projection(self, X: Any) -> np.ndarray:
        """``z``: each row's offset from the baseline, projected on the loadings (before any batch shift).

        The first step of :meth:`transform` (then ``z − δ``, :meth:`scaled_input`
        and :meth:`apply_encoder`).

        Parameters
        ----------
        X
            ``(n_cells, n_features)`` dense or sparse, the model's features.

        Returns
        -------
        ``(n_cells, n_inputs)`` float64, unscaled.
        """
        self._check_fitted()
        X = as_matrix(X, name="X", dtype=self.numpy_dtype)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}.")
        return self._offset_projection(X, slice(0, X.shape[0]))

    def input_divisor(self, z: np.ndarray) -> np.ndarray:
        """The per-cell divisor ``s`` of ``input_norm`` for unscaled encoder inputs ``z``.

        Parameters
        ----------
        z
            ``(n_cells, n_inputs)`` float64: each cell's offset from the
            baseline projected on the loadings, minus its batch shift (see
            :meth:`scaled_input`).

        Returns
        -------
        ``(n_cells, 1)`` float64: ``sqrt(|z|² + c²)`` (``c = 0`` for ``"l2"``),
        or 1 for ``input_norm="none"``.
        """
        return self.input_divisor_from_norm2(np.einsum("ij,ij->i", z, z)[:, None])

    def input_divisor_from_norm2(self, norm2: np.ndarray) -> np.ndarray:
        """The divisor ``s`` of :meth:`input_divisor` from squared input norms ``|z|²``.

        Parameters
        ----------
        norm2
            Squared norms ``|z|²`` of unscaled encoder inputs, any shape (e.g.
            one per cell and edited gene, to price many edits at once).

        Returns
        -------
        ``sqrt(|z|² + c²)`` of the same shape (1 for ``input_norm="none"``; 1
        where the result would be 0, i.e. the baseline cell itself under ``"l2"``).
        """
        if self.input_norm_offset_ is None:
            return np.ones_like(norm2)
        divisor = np.sqrt(np.maximum(norm2, 0.0) + self.input_norm_offset_**2)
        divisor[divisor == 0] = 1.0  # only the baseline cell itself under "l2": z = 0 either way
        return divisor

    def scaled_input(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The encoder input ``u = z / s`` of unscaled inputs ``z``, and the divisor ``s``.

        The steps of :meth:`transform` are ``z − δ`` (the cell's projected
        offset from the baseline minus its batch shift, float64), then this
        scaling, then :meth:`apply_encoder`; :meth:`encode` gives ``u`` from
        ``X`` directly. Edit ``z`` in between to move cells through the model
        (as :func:`gbumap.tl.perturb` does).

        Parameters
        ----------
        z
            ``(n_cells, n_inputs)`` float64 unscaled encoder inputs.

        Returns
        -------
        u
            ``(n_cells, n_inputs)`` in the model's dtype.
        s
            ``(n_cells, 1)`` float64, from :meth:`input_divisor`.
        """
        divisor = self.input_divisor(z)
        return (z / divisor).astype(self.numpy_dtype), divisor

    def _corrected_projection(self, X: Matrix, rows: slice, codes: np.ndarray | None) -> np.ndarray:
        """``z − δ``: the rows' projected offset minus their batch shift (``z`` without correction)."""
        z = self._offset_projection(X, rows)
        shift = self.input_shift(z, None if codes is None else codes[rows])
        return z if shift is None else z - shift

    def _encoder_input(
        self, X: Matrix, rows: slice | None = None, codes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's input ``z̃ / s`` for some rows, and the per-cell divisor ``s``.

        ``codes`` are the batch codes of all rows of ``X`` (models with a batch correction).
        """
        rows = rows if rows is not None else slice(0, X.shape[0])
        z = self._corrected_projection(X, rows, codes)
        self._check_projected(z, "X", "the projection on the model's loadings (transform, Jacobians, contributions)")
        return self.scaled_input(z)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        graph: sp.spmatrix | None = None,
        knn: tuple[np.ndarray, np.ndarray] | None = None,
        components: np.ndarray | None = None,
        batches: Any = None,
        projection: GlassBoxUMAP | None = None,
    ) -> GlassBoxUMAP:
        """Fit the encoder to ``X``.

        Parameters
        ----------
        X
            ``(n_cells, n_features)`` dense array, SciPy sparse matrix, torch
            tensor or Dask array (read chunk by chunk: means, PCA and
            projection are passes over its row chunks; see :doc:`/scale`).
            Any numeric dtype is accepted and converted to ``dtype`` without
            modifying ``X``; NaN or infinite values raise a ``ValueError``.
            Unlike :func:`gbumap.tl.fit`, the estimator does not warn about
            integer-valued input that looks like raw counts: it takes any kind
            of data (e.g. images with integer pixel values).
        y
            Ignored; present for scikit-learn compatibility.
        graph
            A precomputed symmetric connectivity matrix (e.g. scanpy's
            ``obsp["connectivities"]``), used instead of building the graph.
        knn
            A precomputed ``(indices, distances)`` kNN result (self first),
            turned into the fuzzy graph instead of searching again.
        components
            Precomputed PCA loadings ``(n_pcs, n_features)`` (e.g. scanpy's
            ``varm["PCs"].T``) used instead of fitting a PCA; the data are
            centred on their mean before projecting, as scanpy does.
        batches
            One batch label per cell (e.g. sample or donor): the batches are
            integrated by ``batch_correction``, and every later call
            (``transform``, ``input_jacobian``, ``compute_contributions``,
            ``reconstruction_error``) takes the cells' labels too. Missing
            labels, a single batch and a batch of one cell raise a ``ValueError``.
            With ``projection``, the labels of the cells, which must be
            batches that model knows.
        projection
            A fitted :class:`GlassBoxUMAP` whose input side this fit shares
            instead of fitting its own: its baseline, PCA loadings, input scale
            ``c`` and batch correction (applied, not refitted; pass
            ``batches``). Only the encoder is trained, on ``X``, which has that
            model's features; e.g. other seeds or a subset of the cells that
            must see exactly the reference's inputs (:func:`gbumap.tl.stability`).
            Not together with ``components``.

        Returns
        -------
        self
        """
        from ._graph import find_ab_params
        from ._training import resolve_device

        timings: dict[str, float] = {}
        X = as_matrix(X, name="X", dtype=self.numpy_dtype)
        self._check_params(X.shape[0])
        labels = None if batches is None else batch_labels(batches, n_cells=X.shape[0])
        device = resolve_device(self.accelerator)
        if self.devices > 1:
            from ._distributed import check_devices

            device = check_devices(int(self.devices), device)  # before any work; per-rank GPU when launched
        seed = 0 if self.random_state is None else int(self.random_state)

        Z_raw = self._fit_inputs(X, components, projection, labels, seed, timings)

        t0 = time.perf_counter()
        self.graph_ = self._fit_graph(Z_raw, graph, knn, seed, timings)
        self.a_, self.b_ = find_ab_params(self.spread, self.min_dist)
        Z_np = self._scale_rows(Z_raw)
        del Z_raw
        timings["graph"] = time.perf_counter() - t0

        torch.manual_seed(seed)
        Z = torch.from_numpy(Z_np).to(device)
        scale = float(np.sqrt(np.mean(Z_np.astype(np.float64) ** 2) * self.n_inputs_)) or 1.0
        encoder, degree = self._build_encoder(Z, device, input_scale=1.0 / scale)

        t0 = time.perf_counter()
        result = self._train(encoder, Z, self.graph_, device, seed)
        timings["training"] = time.perf_counter() - t0
        if degree != 1 or self.encoder is not None:
            check_homogeneous(encoder, Z[: min(len(Z), 512)], degree=degree)

        self.encoder_ = encoder
        self.homogeneity_degree_ = degree
        self.loss_history_ = result.loss
        self.training_info_ = {
            "n_steps": result.n_steps_run,
            "stopped_early": result.stopped_early,
            "seconds": result.seconds,
            "device": result.device,
            "learning_rate": result.learning_rate,
            "precision": result.extra["precision"],
            "engine": result.extra["engine"],
            "devices": result.extra["devices"],
            "strategy": result.extra["strategy"],
        }
        t0 = time.perf_counter()
        self.embedding_ = self.apply_encoder(Z_np)
        timings["embed"] = time.perf_counter() - t0
        self.timings_ = timings
        return self

    def neighbor_graph(
        self,
        X: Any,
        *,
        components: np.ndarray | None = None,
        projection: GlassBoxUMAP | None = None,
        batches: Any = None,
    ) -> sp.csr_matrix:
        """The fuzzy neighbour graph that :meth:`fit` would train on, without training.

        ``X`` is projected as ``fit`` projects it (``components``,
        ``projection`` and ``batches`` as there) and its neighbours are
        searched with this estimator's ``n_neighbors``, ``metric`` and
        ``random_state``. The estimator itself is left unchanged, fitted or
        not. Pass the result as ``fit(X, graph=...)`` to train several models
        on one graph.

        Returns
        -------
        ``(n_cells, n_cells)`` symmetric CSR matrix.
        """
        X = as_matrix(X, name="X", dtype=self.numpy_dtype)
        builder = type(self)(**self.get_params(deep=False))
        builder._check_params(X.shape[0])
        labels = None if batches is None else batch_labels(batches, n_cells=X.shape[0])
        seed = 0 if self.random_state is None else int(self.random_state)
        Z_raw = builder._fit_inputs(X, components, projection, labels, seed, {})
        return builder._fit_graph(Z_raw, None, None, seed)

    # ------------------------------------------------------------------ the steps of fit
    def _fit_inputs(
        self,
        X: Matrix,
        components: np.ndarray | None,
        projection: GlassBoxUMAP | None,
        labels: np.ndarray | None,
        seed: int,
        timings: dict[str, float],
    ) -> np.ndarray:
        """The input side of the model (fitted, or shared with ``projection``); returns ``z − δ`` of every cell.

        ``timings`` receives ``pca`` (with its passes) and ``batch_correction``.
        """
        t0 = time.perf_counter()
        if projection is not None:
            Z_raw = self._shared_projection(X, components, projection, labels)
            timings["pca"] = time.perf_counter() - t0
            return Z_raw
        Z_raw = self._fit_projection(X, components, seed, timings)
        timings["pca"] = time.perf_counter() - t0
        self.correction_, self.batch_categories_ = None, None
        if labels is not None:
            t0 = time.perf_counter()
            Z_raw = self._fit_correction(Z_raw, labels, seed)
            timings["batch_correction"] = time.perf_counter() - t0
        return Z_raw

    def _shared_projection(
        self, X: Matrix, components: np.ndarray | None, model: GlassBoxUMAP, labels: np.ndarray | None
    ) -> np.ndarray:
        """Take ``model``'s baseline, loadings, input scale and batch correction; return ``z − δ`` of ``X``.

        For a subset of cells, a projection fitted on them would have its own
        mean and median norm: sharing ``model``'s keeps every run's inputs
        exactly the reference's.
        """
        if components is not None:
            raise ValueError("Pass components= or projection=, not both: projection= brings its own loadings.")
        if not isinstance(model, GlassBoxUMAP):
            raise TypeError(f"projection must be a fitted GlassBoxUMAP; got {type(model).__name__}.")
        model._check_fitted()
        if X.shape[1] != model.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but the model passed as projection= was fitted on "
                f"{model.n_features_in_}. Pass the same features in the same order."
            )
        codes = model._batch_codes(labels, X.shape[0])
        self._set_projection(
            X.shape[1], model.baseline_, model.components_, getattr(model, "explained_variance_", None),
            input_norm_offset=model.input_norm_offset_,
        )
        self.correction_ = getattr(model, "correction_", None)
        self.batch_categories_ = None if self.correction_ is None else self.correction_.categories
        Z_raw = self._projected_rows(X)
        if codes is None:
            return Z_raw
        Z64 = Z_raw.astype(np.float64)
        return (Z64 - self.correction_.shifts(Z64, codes)).astype(Z_raw.dtype)

    def _fit_projection(
        self, X: Matrix, components: np.ndarray | None, seed: int, timings: dict[str, float] | None = None
    ) -> np.ndarray:
        """Baseline, PCA loadings and input scale from ``X``; returns the unscaled encoder input ``z``.

        ``timings`` receives the seconds of its three passes: ``pca_means``, ``pca_svd`` and ``pca_projection``.
        """
        with threads_for_in_memory(X):  # in-memory data: chunked on this process's threads, even under a cluster
            return self._fit_projection_passes(X, components, seed, {} if timings is None else timings)

    def _fit_projection_passes(
        self, X: Matrix, components: np.ndarray | None, seed: int, timings: dict[str, float]
    ) -> np.ndarray:
        from ._pca import randomized_pca

        t0 = time.perf_counter()
        n_cells, n_features = X.shape
        # Accumulate in float64, so a constant feature gets exactly its value as baseline
        # (offset 0, contribution exactly 0; a float32 running sum does not guarantee it),
        # then round to the model's dtype, so that input filled with the baseline (e.g.
        # tl.transform(fill_missing="baseline")) also gives an offset of exactly 0.
        # The same chunked float64 sums for data in memory or on disk (SciPy's sparse mean in float64
        # accumulates in float32), so both give the same baseline; for Dask input this pass also
        # checks every value for NaN/inf.
        mean = column_stats(X if is_dask_array(X) else row_chunked(X), verbose=self.verbose)
        if self.baseline == "mean":
            baseline = mean.astype(self.numpy_dtype).astype(np.float64)
        else:
            baseline = np.zeros(n_features)
        timings["pca_means"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        explained = None
        if components is not None:
            components = np.asarray(components, dtype=self.numpy_dtype)
            if components.ndim != 2 or components.shape[1] != n_features:
                raise ValueError(f"components must have shape (n_pcs, {n_features}); got {components.shape}.")
        elif self.pca_components is not None:
            components, explained = randomized_pca(
                X, self.pca_components, center=mean.astype(self.numpy_dtype), random_state=seed, verbose=self.verbose
            )
        self._set_projection(n_features, baseline, components, explained, input_norm_offset=None)
        timings["pca_svd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        Z_raw = self._projected_rows(X)
        self.input_norm_offset_ = self._fit_input_norm(Z_raw)
        timings["pca_projection"] = time.perf_counter() - t0
        return Z_raw

    def _fit_correction(self, Z_raw: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
        """Learn the batch correction from the unscaled inputs; return them corrected (``z − δ``).

        The input scale ``c`` of ``input_norm`` is measured again on the corrected inputs.
        """
        Z64 = Z_raw.astype(np.float64)
        self.correction_ = fit_correction(Z64, labels, self.batch_correction, random_state=seed)
        self.batch_categories_ = self.correction_.categories
        Z64 -= self.correction_.shifts(Z64, self.correction_.codes(labels))
        if not np.isfinite(Z64).all():
            raise ValueError("The batch correction produced non-finite inputs; check X for extreme values.")
        Z_raw = Z64.astype(self.numpy_dtype)
        self.input_norm_offset_ = self._fit_input_norm(Z_raw)
        return Z_raw

    def _projected_rows(self, X) -> np.ndarray:
        """``z`` of every cell (unscaled, in the model's dtype): one pass over the row chunks of ``X``.

        The chunks' results are gathered into this process (under any Dask
        scheduler), then checked: a row that is not finite (an input that
        overflows the model's dtype once projected, NaN loadings, or a row the
        pass did not fill) raises here, naming the pass, not later as a
        training or homogeneity failure.
        """
        Z_raw = np.full((X.shape[0], self.n_inputs_), np.nan, dtype=self.numpy_dtype)  # unfilled rows stay NaN
        chunks = fixed_row_blocks(X if is_dask_array(X) else row_chunked(X))  # the same rows per product, any chunks
        lazy = map_row_chunks(chunks, _chunk_projection, (self.n_inputs_,), self.numpy_dtype, self._chunk_model())
        with threads_for_in_memory(X):
            gather_rows(lazy, Z_raw, verbose=self.verbose)
        self._check_projected(Z_raw, "X", "the projection pass of fit (each cell's offset from the baseline, "
                              "projected on the PCA loadings)")
        return Z_raw

    def _chunk_model(self) -> GlassBoxUMAP:
        """A shallow copy holding what the per-chunk passes need: the projection and the encoder.

        Not the training graph and embedding (cells × cells and cells × 2):
        under a distributed scheduler this copy is what is sent to the workers.
        """
        model = copy.copy(self)
        for name in ("graph_", "embedding_", "loss_history_", "timings_"):
            model.__dict__.pop(name, None)
        return model

    def _check_projected(self, z: np.ndarray, name: str, where: str) -> None:
        """Raise a ``ValueError`` naming the input and the pass when projected rows are not finite."""
        finite = np.isfinite(z).all(axis=1)
        if finite.all():
            return
        bad = np.flatnonzero(~finite)
        dtype = np.dtype(self.numpy_dtype).name
        raise ValueError(
            f"{name}: {len(bad)} of {len(z)} cell(s) (first: row {bad[0]}) have non-finite values after {where}. "
            f"The input itself is finite, so its values (or the loadings) are too large for {dtype} once "
            f"projected, or the pass returned rows it did not compute. Rescale the input (e.g. log-normalise: "
            f"sc.pp.normalize_total, sc.pp.log1p), check the loadings passed as components=, or fit with "
            f"dtype='float64'; under a Dask cluster, check that every worker runs the same gbumap version."
        )

    def _fit_input_norm(self, Z_raw: np.ndarray) -> float | None:
        """The offset ``c`` of ``input_norm`` (0 for ``"l2"``, ``None`` for ``"none"``)."""
        if self.input_norm == "none":
            return None
        if self.input_norm == "l2":
            return 0.0
        norms = np.sqrt(np.einsum("ij,ij->i", Z_raw, Z_raw, dtype=np.float64))
        median = float(np.median(norms))
        return float(self.input_norm_scale) * (median if median > 0 else 1.0)

    def _scale_rows(self, Z_raw: np.ndarray) -> np.ndarray:
        """``Z_raw / s`` row by row, in the model's dtype (in place when it already has it)."""
        out = Z_raw if Z_raw.dtype == self.numpy_dtype else np.empty(Z_raw.shape, dtype=self.numpy_dtype)
        for rows in _row_batches(Z_raw.shape[0], 65536):
            z = Z_raw[rows].astype(np.float64)
            out[rows] = z / self.input_divisor(z)
        return out

    def _fit_graph(
        self, Z_raw: np.ndarray, graph, knn, seed: int, timings: dict[str, float] | None = None
    ) -> sp.csr_matrix:
        """The fuzzy neighbour graph: given, built from a given kNN, or searched on the unscaled input.

        ``timings["graph_knn"]`` receives the seconds of the neighbour search.
        """
        from ._graph import graph_from_knn, nearest_neighbors

        n_cells = Z_raw.shape[0]
        if graph is not None:
            graph = sp.csr_matrix(graph, dtype=np.float32)
            if graph.shape != (n_cells, n_cells):
                raise ValueError(f"graph must be ({n_cells}, {n_cells}); got {graph.shape}.")
            return graph
        if knn is not None:
            indices, dists = (np.asarray(a) for a in knn)
            if indices.shape[0] != n_cells or indices.shape != dists.shape:
                raise ValueError(
                    f"knn must be two (n_cells, k) arrays with n_cells={n_cells}; "
                    f"got {indices.shape} and {dists.shape}."
                )
            return graph_from_knn(indices, dists)
        # neighbours of the unscaled input: the scaling only serves the encoder
        t0 = time.perf_counter()
        indices, dists = nearest_neighbors(
            Z_raw, self.n_neighbors, metric=self.metric, random_state=seed, verbose=self.verbose
        )
        if timings is not None:
            timings["graph_knn"] = time.perf_counter() - t0
        return graph_from_knn(indices, dists)

    def _build_encoder(self, Z: torch.Tensor, device: torch.device, input_scale: float) -> tuple[nn.Module, int]:
        """The untrained encoder on ``device``, checked for homogeneity on real rows; and its degree.

        ``input_scale`` is the default encoder's fixed first scaling (1 / RMS norm of the inputs).
        """
        if self.encoder is None:
            encoder = HomogeneousMLP(
                self.n_inputs_,
                self.n_components,
                hidden=self.hidden_layers,
                activation=self.activation,
                input_scale=input_scale,
            )
            degree = 1
        elif isinstance(self.encoder, str):  # "bilinear"
            encoder = BilinearEncoder(
                self.n_inputs_, self.n_components, rank=int(self.hidden_layers[0]), input_scale=input_scale
            )
            degree = 2
        else:
            import copy

            encoder = copy.deepcopy(self.encoder)
            degree = int(self.homogeneity_degree)
        encoder = encoder.to(device=device, dtype=self._torch_dtype)
        check_homogeneous(encoder, Z[: min(len(Z), 512)], degree=degree)
        return encoder, degree

    def _train(self, encoder: nn.Module, Z: torch.Tensor, graph, device: torch.device, seed: int):
        """Run the training loop (with the checkpoint callback when ``checkpoint_path`` is set; in
        ``devices`` DDP processes when ``devices > 1``, see :mod:`gbumap._distributed`)."""
        from ._checkpoint import CheckpointCallback
        from ._training import TrainingConfig, resolve_precision, train_encoder

        schedule = training_schedule(
            Z.shape[0], n_steps=self.n_steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
            full_batch=self.full_batch, devices=int(self.devices),
        )
        self.schedule_ = schedule
        config = TrainingConfig(
            n_steps=schedule.n_steps,
            batch_size=schedule.batch_size,
            full_batch=schedule.full_batch,
            negative_sample_rate=self.negative_sample_rate,
            repulsion_strength=self.repulsion_strength,
            learning_rate=schedule.learning_rate,
            a=self.a_,
            b=self.b_,
            random_state=seed,
            early_stopping=self.early_stopping,
            verbose=self.verbose,
            engine=self._resolve_engine(device),
            precision=resolve_precision(self.training_precision, device, self._torch_dtype),
        )
        callbacks = []
        if self.checkpoint_path is not None:
            callbacks.append(CheckpointCallback(self.checkpoint_path, self.n_inputs_, self.n_components))
        devices = int(self.devices)
        if devices > 1:  # always under Lightning Fabric (DDP); checkpoints were refused by _check_params
            from ._distributed import train_distributed

            config.engine = "lightning"
            result = train_distributed(encoder, Z, graph, config, devices)
        else:
            result = train_encoder(encoder, Z, graph, config, callbacks=callbacks)
            result.extra["strategy"] = "single_device"
        result.extra.update({"precision": config.precision, "engine": config.engine, "devices": devices})
        return result

    # ------------------------------------------------------------------ state
    def _set_projection(
        self,
        n_features: int,
        baseline: np.ndarray,
        components: np.ndarray | None,
        explained_variance: np.ndarray | None,
        input_norm_offset: float | None,
    ) -> None:
        """The input side of the model: baseline, loadings, and the baseline's projection (computed here only)."""
        self.n_features_in_ = int(n_features)
        self.baseline_ = np.asarray(baseline, dtype=np.float64)
        self.components_ = None if components is None else np.asarray(components, dtype=self.numpy_dtype)
        self.explained_variance_ = explained_variance
        self.n_inputs_ = self.n_features_in_ if self.components_ is None else self.components_.shape[0]
        self._baseline_projection = (
            None if self.components_ is None else self.baseline_ @ self.components_.T.astype(np.float64)
        )
        self.input_norm_offset_ = input_norm_offset
        self._lift = None

    @classmethod
    def from_state(
        cls,
        params: dict[str, Any],
        *,
        encoder: nn.Module,
        n_features: int,
        baseline: np.ndarray,
        components: np.ndarray | None,
        explained_variance: np.ndarray | None,
        input_norm_offset: float | None,
        homogeneity_degree: int,
        a: float,
        b: float,
        loss_history: np.ndarray,
        training_info: dict[str, Any],
        correction: BatchCorrection | None = None,
    ) -> GlassBoxUMAP:
        """A fitted estimator from stored state (used when a model is read back from an AnnData).

        ``params`` are constructor parameters and are checked as in ``fit``;
        ``encoder`` is the trained module with its weights loaded. The graph
        and the training embedding are not part of the state.
        """
        model = cls(**params)
        model._check_params()
        model._set_projection(n_features, baseline, components, explained_variance, input_norm_offset)
        model.encoder_ = encoder
        model.homogeneity_degree_ = int(homogeneity_degree)
        model.a_, model.b_ = float(a), float(b)
        model.loss_history_ = np.asarray(loss_history, dtype=np.float64)
        model.training_info_ = dict(training_info)
        model.correction_ = correction
        model.batch_categories_ = None if correction is None else correction.categories
        return model

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit and return the embedding of ``X`` (the encoder's output)."""
        return self.fit(X, y, **fit_params).embedding_

    # ------------------------------------------------------------------ inference
    def apply_encoder(self, u: np.ndarray) -> np.ndarray:
        """The trained encoder's output ``f(u)``: the positions of encoder inputs ``u``.

        Parameters
        ----------
        u
            ``(n_cells, n_inputs)`` encoder inputs in the model's dtype, as
            returned by :meth:`encode` or :meth:`scaled_input`; run in batches
            of rows.

        Returns
        -------
        ``(n_cells, n_components)`` in the model's dtype; ``transform(X)`` is
        ``apply_encoder(encode(X))``.
        """
        out = np.empty((u.shape[0], self.n_components), dtype=self.numpy_dtype)
        device = self.device_
        with torch.no_grad():
            for rows in _row_batches(u.shape[0], self._inference_batch_size()):
                out[rows] = self.encoder_(torch.from_numpy(u[rows]).to(device)).cpu().numpy()
        return out

    def jacobian_at(self, u: np.ndarray) -> np.ndarray:
        """The encoder's Jacobian ``J(u)`` at encoder inputs ``u`` (one forward pass, no autograd loop).

        Unlike :meth:`input_jacobian`, which maps a cell's *unscaled* input to
        its position (``J(u) / s``), this is the Jacobian of the encoder
        itself, so ``J(u)·u = k·f(u)`` (Euler's identity, ``k`` the
        homogeneity degree) and ``J(u)·(u' − u)`` is the first-order move of
        an edited input ``u'``.

        Parameters
        ----------
        u
            ``(n_cells, n_inputs)`` encoder inputs in the model's dtype (one
            batch of rows: the whole batch goes through the encoder at once).

        Returns
        -------
        ``(n_cells, n_components, n_inputs)`` in the model's dtype.
        """
        jac = encoder_jacobian(self.encoder_, torch.from_numpy(np.ascontiguousarray(u)).to(self.device_))
        return jac.cpu().numpy()

    def encode(self, X: Any, batches: Any = None) -> np.ndarray:
        """The encoder's input for each cell: ``u = z̃ / s``, in the model's dtype.

        ``z̃`` is the cell's offset from the baseline projected on the loadings,
        minus its batch shift; ``s`` the per-cell divisor of ``input_norm``
        (:meth:`scaled_input`). :meth:`apply_encoder` maps ``u`` to the
        cell's position and :meth:`jacobian_at` gives the encoder's Jacobian there.

        Parameters
        ----------
        X
            ``(n_cells, n_features)`` in memory, with the features used in ``fit``.
        batches
            The cells' batch labels, for a model fitted with ``batches``.

        Returns
        -------
        ``(n_cells, n_inputs)`` array.
        """
        X = self._checked_input(X)
        codes = self._batch_codes(batches, X.shape[0])
        out = np.empty((X.shape[0], self.n_inputs_), dtype=self.numpy_dtype)
        for rows in _row_batches(X.shape[0], 65536):
            out[rows] = self._encoder_input(X, rows, codes)[0]
        return out

    def transform(self, X: Any, batches: Any = None) -> np.ndarray:
        """Embed new cells with the trained encoder.

        Parameters
        ----------
        X
            ``(n_cells, n_features)`` with the features used in ``fit``.
        batches
            The cells' batch labels, for a model fitted with ``batches`` (new
            batches: see :meth:`with_new_batches`).

        Returns
        -------
        ``(n_cells, n_components)`` array; a lazy Dask array of row chunks when ``X`` is a Dask array.
        """
        X = self._checked_input(X)
        codes = self._batch_codes(batches, X.shape[0])
        if is_dask_array(X):
            return map_row_chunks(
                X, _chunk_transform, (self.n_components,), self.numpy_dtype, self._chunk_model(), rows_of=codes
            )
        return self._transform_rows(X, codes)

    def _transform_rows(self, X: Matrix, codes: np.ndarray | None) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_components), dtype=self.numpy_dtype)
        for rows in _row_batches(X.shape[0], self._inference_batch_size()):
            out[rows] = self.apply_encoder(self._encoder_input(X, rows, codes)[0])
        return out

    def input_jacobian(self, X: Any, batch_size: int | None = None, batches: Any = None) -> np.ndarray:
        """Jacobian of the encoder in its input space, per cell.

        This is the compressed, lossless form of the contributions: with PCA
        it is ``(n_cells, n_components, pca_components)``, and gene-level
        contributions follow from it, the loadings and the expression. With
        ``input_norm``, it is the encoder's Jacobian at ``z / s`` divided by
        the cell's divisor ``s`` (held constant), so that it maps the cell's
        unscaled (batch-corrected) input exactly to its position. A Dask array
        ``X`` gives a lazy Dask array, computed chunk by chunk.
        """
        X = self._checked_input(X)
        codes = self._batch_codes(batches, X.shape[0])
        if is_dask_array(X):
            return map_row_chunks(
                X, _chunk_jacobian, (self.n_components, self.n_inputs_), self.numpy_dtype, self._chunk_model(),
                batch_size, rows_of=codes,
            )
        return self._jacobian_rows(X, codes, batch_size)

    def _jacobian_rows(self, X: Matrix, codes: np.ndarray | None, batch_size: int | None) -> np.ndarray:
        batch_size = batch_size or self._inference_batch_size()
        out = np.empty((X.shape[0], self.n_components, self.n_inputs_), dtype=self.numpy_dtype)
        with progress_bar(X.shape[0], "gbumap jacobians", self.verbose) as bar:
            for rows in _row_batches(X.shape[0], batch_size):
                out[rows] = self._scaled_jacobian(*self._encoder_input(X, rows, codes))
                bar.update(rows.stop - rows.start)
        return out

    def _scaled_jacobian(self, z: np.ndarray, divisor: np.ndarray) -> np.ndarray:
        """``J(z / s) / s``: the per-cell linear map from the unscaled input to the position."""
        jac = self.jacobian_at(z)
        if self.input_norm_offset_ is not None:
            jac /= divisor[:, :, None].astype(jac.dtype)
        return jac

    def compute_contributions(
        self,
        X: Any,
        batch_size: int | None = None,
        reduction: Reduction = None,
        batches: Any = None,
        part: Literal["total", "expression", "correction"] = "total",
    ) -> np.ndarray:
        """Exact per-feature contributions to each cell's coordinates.

        Parameters
        ----------
        X
            ``(n_cells, n_features)`` with the features used in ``fit``.
        batch_size
            Cells per batch (bounds memory).
        reduction
            ``None``: ``(n_cells, n_components, n_features)``; ``"l2"``: the
            magnitude over axes, ``(n_cells, n_features)``; ``"normed_l2"``:
            that magnitude divided by its per-cell sum; an integer: that
            signed axis.
        batches
            The cells' batch labels, for a model fitted with ``batches``.
        part
            For a batch-corrected model, each contribution is exactly the sum
            of an ``"expression"`` part, ``J_x · (x − b)`` (the measured
            expression's offset from the baseline), and a ``"correction"``
            part, ``−J_x · L δ`` (what the batch correction moved);
            ``"total"`` (the default) is their sum. Without a correction the
            correction part is 0.

        Returns
        -------
        Contributions whose sum over features equals ``transform(X)`` (for
        ``part="total"``; a lazy Dask array of row chunks when ``X`` is a Dask array).
        """
        if part not in ("total", "expression", "correction"):
            raise ValueError(f"part must be 'total', 'expression' or 'correction'; got {part!r}.")
        X = self._checked_input(X)
        n, g = X.shape
        codes = self._batch_codes(batches, n)
        if is_dask_array(X):
            tail = (self.n_components, g) if reduction is None else (g,)
            return map_row_chunks(
                X, _chunk_contributions, tail, self.numpy_dtype, self._chunk_model(), batch_size, reduction, part,
                rows_of=codes,
            )
        return self._contribution_rows(X, codes, batch_size, reduction, part)

    def feature_offsets(
        self, X: Matrix, rows: slice, codes: np.ndarray | None, part: str = "total"
    ) -> np.ndarray:
        """What the contributions multiply, per feature (float64): ``x − b − L δ`` for the rows.

        ``part="expression"`` gives ``x − b``, ``"correction"`` gives ``−L δ``.
        """
        dense = _dense_rows(X, rows, np.float64)
        if part == "expression" or getattr(self, "correction_", None) is None:
            return dense - self.baseline_ if part != "correction" else np.zeros_like(dense)
        shift = self.feature_shift(self.input_shift(self._offset_projection(X, rows), codes[rows]))
        return -shift if part == "correction" else dense - self.baseline_ - shift

    def _contribution_rows(
        self, X: Matrix, codes: np.ndarray | None, batch_size: int | None, reduction: Reduction, part: str
    ) -> np.ndarray:
        n, g = X.shape
        if batch_size is None:
            batch_size = max(1, min(self._inference_batch_size(), 2**25 // max(g * self.n_components, 1)))
        shape = (n, self.n_components, g) if reduction is None else (n, g)
        out = np.empty(shape, dtype=self.numpy_dtype)
        comps = None if self.components_ is None else self.components_.astype(self.numpy_dtype)
        with progress_bar(n, "gbumap contributions", self.verbose) as bar:
            for rows in _row_batches(n, batch_size):
                jac = self._scaled_jacobian(*self._encoder_input(X, rows, codes))
                offset = self.feature_offsets(X, rows, codes, part).astype(self.numpy_dtype)
                contrib = contributions_from_jacobian(jac, offset, comps, self.homogeneity_degree_)
                out[rows] = reduce_contributions(contrib, reduction)
                bar.update(rows.stop - rows.start)
        return out

    def reconstruction_error(self, X: Any, batch_size: int | None = None, batches: Any = None) -> dict[str, float]:
        """How well the summed contributions rebuild the embedding.

        Returns
        -------
        dict
            ``max_abs``: the largest ``|Σ_g C - Z|`` over cells and axes;
            ``max_rel``: that divided by ``max |Z|``.
        """
        X = self._checked_input(X)
        codes = self._batch_codes(batches, X.shape[0])
        if is_dask_array(X):
            per_chunk = map_row_chunks(
                X, _chunk_gap_and_scale, (2,), np.float64, self._chunk_model(), batch_size, rows_of=codes
            )
            (worst,) = compute(per_chunk.max(axis=0), verbose=self.verbose)
            max_abs, scale = (float(v) for v in worst)
        else:
            max_abs, scale = self._gap_and_scale(X, batch_size, codes)
        return {"max_abs": max_abs, "max_rel": max_abs / (scale or 1.0)}

    def _gap_and_scale(self, X: Matrix, batch_size: int | None, codes: np.ndarray | None = None) -> np.ndarray:
        """``max |Σ_g C − Z|`` and ``max |Z|`` over the rows of an in-memory ``X``."""
        emb = self._transform_rows(X, codes).astype(np.float64)
        max_abs = 0.0
        for rows in _row_batches(X.shape[0], 8192):
            sub = None if codes is None else codes[rows]
            contrib = self._contribution_rows(X[rows], sub, batch_size, None, "total")
            max_abs = max(max_abs, reconstruction_gap(contrib, emb[rows]))
        return np.array([max_abs, float(np.abs(emb).max())])


# The per-chunk functions of the Dask passes: module-level, so that a distributed scheduler pickles
# only them and receives the model once (gbumap._dask.map_row_chunks). ``rows_of`` holds the chunk's
# batch codes for a batch-corrected model. Each chunk is checked as an in-memory input is (dtype, NaN/inf).
def _chunk_projection(chunk: Matrix, model: GlassBoxUMAP) -> np.ndarray:
    return model._offset_projection(chunk, slice(0, chunk.shape[0])).astype(model.numpy_dtype)


def _chunk_transform(chunk: Matrix, model: GlassBoxUMAP, rows_of: np.ndarray | None = None) -> np.ndarray:
    return model._transform_rows(model._checked_input(chunk), rows_of)


def _chunk_jacobian(
    chunk: Matrix, model: GlassBoxUMAP, batch_size: int | None, rows_of: np.ndarray | None = None
) -> np.ndarray:
    return model._jacobian_rows(model._checked_input(chunk), rows_of, batch_size)


def _chunk_contributions(
    chunk: Matrix, model: GlassBoxUMAP, batch_size: int | None, reduction, part: str = "total",
    rows_of: np.ndarray | None = None,
) -> np.ndarray:
    return model._contribution_rows(model._checked_input(chunk), rows_of, batch_size, reduction, part)


def _chunk_gap_and_scale(
    chunk: Matrix, model: GlassBoxUMAP, batch_size: int | None, rows_of: np.ndarray | None = None
) -> np.ndarray:
    return model._gap_and_scale(model._checked_input(chunk), batch_size, rows_of)[None]
