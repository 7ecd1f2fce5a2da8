"""Several modalities in one exact map: per-modality projections, balanced weights, per-modality sums.

A multimodal model reads every feature of every modality (genes and
proteins, say) side by side. Its loadings are block diagonal: each modality
gets its own projection (a PCA, or its features as they are) scaled by one
weight per modality,

    z = [w_1 · P_1 (x_1 − b_1), …, w_M · P_M (x_M − b_M)],

so the encoder input is still a fixed linear map of the cell's offset from
the baseline and every feature's contribution stays exact
(``J·P[:, g]·(x_g − b_g)/s``), and so is each modality's part of a cell's
position, the sum of its features' contributions: the parts of all
modalities add up to the embedding.

The weights put the modalities on one scale (so 2,000 genes do not drown
40 proteins). ``"variance"``, the default, divides each block by its root
mean squared norm, measured on a sample of cells: each modality brings the
same total variance. ``"neighbors"`` divides by the median distance of a
cell to its ``n_neighbors``-th nearest neighbour in that block alone (the
local scale). ``benchmarks/multimodal.py`` compares the two: ``"neighbors"``
gave the proteins most of the map and lost RNA-only types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "WEIGHTINGS", "Modalities", "fit_imputation", "fit_modalities", "imputed_model", "modality_codes",
    "preparation_of", "sample_rows",
]

#: The rules that balance the modalities' blocks.
WEIGHTINGS: tuple[str, ...] = ("variance", "neighbors")

#: Cells sampled to measure each block's scale.
_SAMPLE_CELLS = 5_000


@dataclass
class Modalities:
    """How a multimodal model reads its features.

    Parameters
    ----------
    names
        The modalities, in the order of their blocks (``str`` array).
    feature_codes
        ``(n_features,)`` int: the modality of each of the model's features
        (an index into ``names``).
    n_pcs
        ``(n_modalities,)`` int: components of each modality's PCA (0: its
        features enter as they are).
    scales
        ``(n_modalities,)`` float64: the balancing factor of each block,
        measured by ``weighting``.
    emphasis
        ``(n_modalities,)`` float64: the user's relative weights (1: none),
        multiplied into the scales.
    weighting
        The balancing rule, one of :data:`WEIGHTINGS`.
    source
        Where the modalities were read: ``"var:<column>"`` for an AnnData
        whose ``var`` column names each feature's modality, ``"mudata"``.
    layers
        With ``source="mudata"``: the layer read in each modality (``""``: ``X``).
    widths
        ``(n_modalities,)`` int: each modality's block of encoder inputs
        (``n_pcs``, or its number of features).
    imputation
        Per modality, the ridge map ``B_m`` ``(width_m, n_inputs − width_m)``
        from the other blocks' inputs to its block, fitted on the reference
        (:func:`fit_imputation`): a query without modality ``m`` reads
        ``z_m = B_m z_{−m}`` (``tl.transform(fill_missing="impute")``).
    imputed
        In a query's record: the modalities it lacked and read through
        ``imputation`` (their features are not among the model's).
    preparation
        How each modality's input was prepared, when :func:`gbumap.pp.normalize_modalities`
        made it (``"log1p"``, ``"clr"``); ``"as given"`` otherwise.
    """

    names: np.ndarray
    feature_codes: np.ndarray
    n_pcs: np.ndarray
    scales: np.ndarray
    emphasis: np.ndarray
    weighting: str
    source: str
    layers: np.ndarray | None = None
    widths: np.ndarray | None = None
    imputation: list[np.ndarray] | None = None
    imputed: np.ndarray | None = None
    preparation: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.widths is None:
            self.widths = np.array(
                [int(k) or int((self.feature_codes == m).sum()) for m, k in enumerate(self.n_pcs)], dtype=np.int64
            )

    @property
    def weights(self) -> np.ndarray:
        """The factor each block is multiplied by (``scales · emphasis``)."""
        return self.scales * self.emphasis

    def columns(self, m: int) -> np.ndarray:
        """Positions among the model's features of modality ``m``'s features."""
        return np.flatnonzero(self.feature_codes == m)

    def blocks(self) -> list[slice]:
        """Each modality's block of encoder inputs (rows of the loadings)."""
        out, start = [], 0
        for width in self.widths:
            out.append(slice(start, start + int(width)))
            start += int(width)
        return out

    def others(self, m: int) -> np.ndarray:
        """The encoder inputs of every block but modality ``m``'s."""
        blocks = self.blocks()
        return np.concatenate([np.arange(b.start, b.stop) for i, b in enumerate(blocks) if i != m])

    def of_features(self) -> np.ndarray:
        """The modality name of each of the model's features."""
        return self.names[self.feature_codes]

    def describe(self) -> pd.DataFrame:
        """One row per modality: features, projection, scale, emphasis and weight."""
        return pd.DataFrame(
            {
                "n_features": np.bincount(self.feature_codes, minlength=len(self.names)),
                "n_pcs": self.n_pcs,
                "scale": self.scales,
                "emphasis": self.emphasis,
                "weight": self.weights,
            },
            index=pd.Index(self.names, name="modality"),
        )

    # ------------------------------------------------------------------ registry
    def to_dict(self) -> dict[str, Any]:
        out = {
            "names": self.names.astype(str),
            "feature_codes": self.feature_codes.astype(np.int32),
            "n_pcs": self.n_pcs.astype(np.int64),
            "scales": self.scales.astype(np.float64),
            "emphasis": self.emphasis.astype(np.float64),
            "weighting": str(self.weighting),
            "source": str(self.source),
        }
        out["widths"] = self.widths.astype(np.int64)
        if self.layers is not None:
            out["layers"] = self.layers.astype(str)
        if self.imputation is not None:
            out["imputation"] = {str(m): np.asarray(b, dtype=np.float64) for m, b in enumerate(self.imputation)}
        if self.imputed is not None:
            out["imputed"] = self.imputed.astype(str)
        if self.preparation is not None:
            out["preparation"] = self.preparation.astype(str)
        return out

    @classmethod
    def from_dict(cls, d: Mapping, n_features: int, n_inputs: int) -> Modalities:
        """Decode and validate ``uns[key]["modalities"]`` (``ValueError`` naming the field)."""
        def arr(name: str, kind: str) -> np.ndarray:
            if name not in d:
                raise ValueError(f"modalities/{name} is missing.")
            value = np.asarray(d[name])
            if value.ndim != 1 or value.dtype.kind not in kind:
                raise ValueError(f"modalities/{name} must be a 1-D array of kind {kind!r}; got {value.dtype}.")
            return value

        names = arr("names", "UOS").astype(str)
        m = len(names)
        codes = arr("feature_codes", "iu").astype(np.int64)
        if len(codes) != n_features or (len(codes) and (codes.min() < 0 or codes.max() >= m)):
            raise ValueError(f"modalities/feature_codes must hold {n_features} codes in [0, {m}).")
        out = cls(
            names=names,
            feature_codes=codes,
            n_pcs=arr("n_pcs", "iu").astype(np.int64),
            scales=arr("scales", "f").astype(np.float64),
            emphasis=arr("emphasis", "f").astype(np.float64),
            weighting=str(d.get("weighting", "")),
            source=str(d.get("source", "")),
            layers=None if "layers" not in d else arr("layers", "UOS").astype(str),
            widths=None if "widths" not in d else arr("widths", "iu").astype(np.int64),
            imputed=None if "imputed" not in d else arr("imputed", "UOS").astype(str),
            preparation=None if "preparation" not in d else arr("preparation", "UOS").astype(str),
        )
        for name in ("n_pcs", "scales", "emphasis", "widths") + (("preparation",) if "preparation" in d else ()):
            if len(getattr(out, name)) != m:
                raise ValueError(f"modalities/{name} must have one value per modality ({m}).")
        imputed = set() if out.imputed is None else set(out.imputed)
        for i, (k, width) in enumerate(zip(out.n_pcs, out.widths)):
            n_features_m = int((codes == i).sum())
            if (k and width != k) or (not k and names[i] not in imputed and width != n_features_m):
                raise ValueError(
                    f"modalities/widths/{i} is {width}, but modality {names[i]!r} has n_pcs {k} and "
                    f"{n_features_m} features; the file is damaged."
                )
        if out.weighting not in WEIGHTINGS:
            raise ValueError(f"modalities/weighting must be one of {WEIGHTINGS}; got {out.weighting!r}.")
        if sum(b.stop - b.start for b in out.blocks()) != n_inputs:
            raise ValueError("modalities/n_pcs do not add up to the model's encoder inputs.")
        if "imputation" in d:
            maps = d["imputation"]
            if not isinstance(maps, Mapping) or sorted(maps) != sorted(str(i) for i in range(m)):
                raise ValueError(f"modalities/imputation must hold one map per modality (keys 0 to {m - 1}).")
            out.imputation = []
            for i in range(m):
                b = np.asarray(maps[str(i)])
                width = int(out.widths[i])
                if b.dtype.kind != "f" or b.shape != (width, n_inputs - width) or not np.isfinite(b).all():
                    raise ValueError(
                        f"modalities/imputation/{i} must be finite floats of shape ({width}, {n_inputs - width})."
                    )
                out.imputation.append(b.astype(np.float64))
        return out


# ---------------------------------------------------------------------- choosing the modalities
def modality_codes(labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Modality names (in order of first appearance) and each feature's code, from one label per feature."""
    labels = pd.Series(np.asarray(labels, dtype=object))
    if labels.isna().any():
        raise ValueError(f"{what} has {int(labels.isna().sum())} missing value(s); every feature needs a modality.")
    labels = labels.astype(str)
    codes, names = pd.factorize(labels, sort=False)
    if len(names) < 2:
        raise ValueError(
            f"{what} names a single modality ({', '.join(names) or 'none'}); a multimodal model needs at least "
            "two (e.g. 'GEX' and 'ADT'). Drop modality_key= to fit one modality."
        )
    return np.asarray(names, dtype=str), codes.astype(np.int64)


def _resolve_per_modality(value: Any, names: np.ndarray, what: str, default: Any) -> list[Any]:
    """``value`` for each modality: one value for all, or a mapping by name (missing names get ``default``)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(names))
        if unknown:
            raise ValueError(f"{what} names unknown modalities {unknown}; the modalities are {list(names)}.")
        return [value.get(n, default) for n in names]
    return [value if value is not None else default for _ in names]


def fit_modalities(
    X,
    mean: np.ndarray,
    names: np.ndarray,
    codes: np.ndarray,
    *,
    n_pcs: Any,
    weighting: str,
    emphasis: Any,
    n_neighbors: int,
    source: str,
    dtype: type,
    random_state: int = 0,
    layers: np.ndarray | None = None,
    verbose: bool = False,
) -> tuple[np.ndarray, Modalities]:
    """The block-diagonal loadings ``(n_inputs, n_features)`` of a multimodal model, and its description.

    ``X`` is the joint input (cells × features, any matrix gbumap reads),
    ``mean`` its column means (the PCA centre and the ``"mean"`` baseline).
    ``n_pcs`` is one value for every modality or a mapping by name (``None``:
    50 for a modality of more than 50 features, else its features as they
    are; ``0``: as they are). ``emphasis`` is ``None`` or a mapping of
    relative weights by name.
    """
    from ._knn import nearest_neighbors
    from ._pca import randomized_pca
    from ._validation import check_int, check_number

    if weighting not in WEIGHTINGS:
        raise ValueError(f"modality_weighting must be one of {WEIGHTINGS}; got {weighting!r}.")
    n_cells, n_features = X.shape
    pcs, factors = [], []
    for m, (name, want) in enumerate(zip(names, _resolve_per_modality(n_pcs, names, "n_pcs", None))):
        n_m = int((codes == m).sum())
        if want is None:
            k = 50 if n_m > 50 and n_cells > 50 else 0
        else:
            k = check_int(want, f"n_pcs[{name!r}]", 0)
            if k >= min(n_m, n_cells):
                raise ValueError(
                    f"n_pcs[{name!r}]={k} must be below the modality's {n_m} features and {n_cells} cells; "
                    "pass 0 to use its features as they are."
                )
        pcs.append(k)
    for name, e in zip(names, _resolve_per_modality(emphasis, names, "modality_weights", 1.0)):
        factors.append(check_number(e, f"modality_weights[{name!r}]", 0.0, strict=True))

    loadings = []
    for m, k in enumerate(pcs):
        cols = np.flatnonzero(codes == m)
        if k:
            comps, _ = randomized_pca(
                X[:, cols], k, center=mean[cols].astype(dtype), random_state=random_state, verbose=verbose
            )
            loadings.append(np.asarray(comps, dtype=np.float64))
        else:
            loadings.append(np.eye(len(cols)))
    sample = sample_rows(X, random_state)
    scales = []
    for m, P in enumerate(loadings):
        cols = np.flatnonzero(codes == m)
        block = sample[:, cols]
        z = (np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64) - mean[cols]) @ P.T
        scales.append(_block_scale(z, weighting, n_neighbors, random_state, names[m], nearest_neighbors))
    info = Modalities(
        names=np.asarray(names, dtype=str),
        feature_codes=np.asarray(codes, dtype=np.int64),
        n_pcs=np.asarray(pcs, dtype=np.int64),
        scales=np.asarray(scales, dtype=np.float64),
        emphasis=np.asarray(factors, dtype=np.float64),
        weighting=weighting,
        source=source,
        layers=layers,
    )
    n_inputs = sum(P.shape[0] for P in loadings)
    components = np.zeros((n_inputs, n_features), dtype=np.float64)
    for m, (block, P) in enumerate(zip(info.blocks(), loadings)):
        components[block.start : block.stop, info.columns(m)] = P * info.weights[m]
    return components.astype(dtype), info


def sample_rows(X, seed: int) -> np.ndarray | sp.csr_matrix:
    """Up to :data:`_SAMPLE_CELLS` rows of ``X`` (seeded, in order), in memory."""
    from ._dask import is_dask_array

    n = X.shape[0]
    rows = np.arange(n) if n <= _SAMPLE_CELLS else np.sort(
        np.random.default_rng(seed).choice(n, _SAMPLE_CELLS, replace=False)
    )
    block = X[rows]
    if is_dask_array(block):
        block = block.compute()
    return sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)


def _block_scale(z: np.ndarray, weighting: str, n_neighbors: int, seed: int, name: str, search) -> float:
    """1 / the block's typical scale: the median distance to the k-th neighbour, or the RMS norm."""
    if weighting == "variance":
        typical = float(np.sqrt(np.mean(np.einsum("ij,ij->i", z, z))))
    else:
        k = min(int(n_neighbors), len(z))
        _, dist = search(np.ascontiguousarray(z, dtype=np.float32), k, random_state=seed)
        typical = float(np.median(dist[:, -1]))
    if not np.isfinite(typical) or typical <= 0:
        raise ValueError(
            f"Modality {name!r} has no spread in the sampled cells (its {weighting} scale is {typical:g}); "
            "check that its values are not constant, or drop it."
        )
    return 1.0 / typical


# ---------------------------------------------------------------------- queries without a modality
#: Ridge penalty of the imputation maps, relative to the mean variance of the inputs they read.
IMPUTATION_RIDGE = 1e-3


def fit_imputation(z: np.ndarray, info: Modalities) -> list[np.ndarray]:
    """Per modality, the ridge map from the other blocks' encoder inputs to its block.

    ``z`` are reference cells' unscaled encoder inputs (each cell's projected,
    weighted offset from the baseline). The maps are linear, so a query that
    reads a missing block through them is still a linear map of its present
    features, and its contributions stay exact per feature.
    """
    z = np.asarray(z, dtype=np.float64)
    maps = []
    for m, block in enumerate(info.blocks()):
        A, Y = z[:, info.others(m)], z[:, block]
        gram = A.T @ A
        ridge = IMPUTATION_RIDGE * np.trace(gram) / max(gram.shape[0], 1)
        maps.append(np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), A.T @ Y).T)
    return maps


def imputed_model(model, feature_names: np.ndarray, info: Modalities, missing: np.ndarray):
    """The model a query without one modality uses: its block read from the others (``B_m z_{−m}``).

    Returns the estimator (a copy; the reference is untouched), its feature
    names (the present modalities') and the query's :class:`Modalities`.
    Raises a ``ValueError`` naming the fix when ``missing`` is not exactly the
    features of one modality, or when the model cannot impute.
    """
    import copy

    if info.imputation is None:
        raise ValueError(
            "This model stores no imputation maps (it was fitted by an earlier gbumap); refit it, or pass "
            "fill_missing='baseline'."
        )
    if getattr(model, "correction_", None) is not None:
        raise ValueError(
            "fill_missing='impute' is not available for a batch-corrected model; pass fill_missing='baseline'."
        )
    missing_set = set(map(str, missing))
    of_feature = info.of_features()
    lacking = [str(n) for n in info.names if missing_set >= set(feature_names[of_feature == n].astype(str))]
    whole = set(feature_names[np.isin(of_feature, lacking)].astype(str))
    if len(lacking) != 1 or whole != missing_set:
        raise ValueError(
            f"fill_missing='impute' reads one whole missing modality from the others; the query lacks "
            f"{len(missing_set)} feature(s) that are {'not ' if not lacking else ''}one whole modality"
            f"{'' if len(lacking) <= 1 else ' but several'} ({', '.join(lacking) or 'none complete'}). Pass "
            "fill_missing='baseline' for scattered genes."
        )
    m = int(np.flatnonzero(info.names == lacking[0])[0])
    present = np.flatnonzero(of_feature != lacking[0])
    C = np.asarray(model.components_, dtype=np.float64)
    others = info.others(m)
    comps = C[:, present].copy()
    comps[info.blocks()[m]] = info.imputation[m] @ C[others][:, present]
    query = copy.deepcopy(model)
    query._set_projection(
        len(present), model.baseline_[present], comps, None, input_norm_offset=model.input_norm_offset_
    )
    query_info = Modalities(
        names=info.names, feature_codes=info.feature_codes[present], n_pcs=info.n_pcs, scales=info.scales,
        emphasis=info.emphasis, weighting=info.weighting, source=info.source, layers=info.layers,
        widths=info.widths, imputation=info.imputation, imputed=np.asarray(lacking, dtype=str),
    )
    return query, feature_names[present], query_info


def preparation_of(record, names: np.ndarray) -> np.ndarray:
    """Each modality's preparation, from the ``uns`` record :func:`gbumap.pp.normalize_modalities` wrote.

    ``record`` is ``uns[layer]`` of the layer a model reads (or ``None``);
    modalities it does not name, and input it did not make, are ``"as given"``.
    """
    out = np.full(len(names), "as given", dtype=object)
    if isinstance(record, Mapping) and "modalities" in record and "methods" in record:
        made = dict(zip(np.asarray(record["modalities"]).astype(str), np.asarray(record["methods"]).astype(str)))
        out = np.array([made.get(str(n), "as given") for n in names], dtype=object)
    return out.astype(str)
