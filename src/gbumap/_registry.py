"""The ``uns`` model registry: the one owner of what gbumap stores about a model.

A :class:`ModelRecord` is everything ``uns[key]`` holds: the fitted estimator,
where its input lives, its feature names, where its graph and projection came
from, timings, the reconstruction error, and what ``tl.contributions`` and
``tl.transform`` added. :func:`encode_record` and :func:`decode_record` are its
only writer and reader; ``tl``, ``get`` and ``pl`` go through them (adding a
field to the record means changing this file alone).

Everything is stored as NumPy numeric arrays, Python scalars and strings, so
``write_h5ad``/``read_h5ad`` round-trips it bit for bit and loading never
unpickles or executes anything from the file. Decoding validates every field
(type, dtype, shape) before building the model.

The estimator's parameters (``params``) are written, read and migrated from
the parameter table of :mod:`gbumap._params`: its kind says how each is
stored, and ``added``/``older`` what a file of an older format means.

Format versions (``uns[key]["format_version"]``):

* **3** (gbumap 0.3): adds the optional ``batch_correction`` mapping (the
  correction's ``method``, ``batch_key``, batch ``categories``, cluster
  ``centroids``, ``sigma``, per-batch per-cluster ``offsets``, per-batch
  ``global_offsets``, ``cluster_means``, ``cluster_mass``,
  ``n_reference_batches`` and ``n_iterations``, all plain arrays) and
  ``params/batch_correction``. gbumap 0.2 refuses it: it would ignore the
  correction and embed cells wrongly. Format-2 files read through
  :func:`_migrate_from_2` (no correction; ``batch_correction="harmony"``, the
  parameter's default, which such models never used).
  The optional ``modalities`` mapping (a model over several modalities:
  ``names``, per-feature ``feature_codes``, per-modality ``n_pcs``,
  ``scales`` and ``emphasis``, the ``weighting`` rule, the ``source`` and,
  for MuData, each modality's ``layers``) came later within format 3:
  earlier readers ignore it and still embed and explain cells exactly, since
  the weights are folded into the stored loadings; they only lose the
  per-modality views.

* **2** (gbumap 0.2): adds ``params/input_norm``, ``params/input_norm_scale``,
  ``params/training_precision``, ``projection/input_norm_offset`` (absent for
  ``"none"``), ``training/precision`` and ``training/engine``. gbumap 0.1
  refuses it: it would ignore the input scaling and embed cells wrongly.
  ``params/devices``, ``training/devices`` and ``training/strategy``
  (multi-process training) came later within format 2 and are optional:
  files without them read as ``devices=1`` and ``"single_device"``; earlier
  readers ignore them.
* **1** (gbumap 0.1): read through :func:`_migrate_from_1`, which fills the
  fields above with what those models did (``input_norm="none"``, full
  precision, the plain torch engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ._anndata_input import InputSpec
from ._modalities import Modalities
from ._params import added_in, registry_params

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import GlassBoxUMAP

__all__ = [
    "FORMAT_VERSION",
    "ModelRecord",
    "RegistryError",
    "decode_model",
    "decode_record",
    "encode_model",
    "encode_record",
    "encode_weights",
    "mark_mudata_source",
    "read_record",
    "registry_for",
]

FORMAT_VERSION = 3


def _with_added_params(reg: Mapping, version: int) -> dict:
    """``reg`` as format ``version``: the parameters that format added, where missing, set to what older models did.

    The values come from the parameter table (:func:`gbumap._params.added_in`).
    """
    out = dict(reg)
    if isinstance(reg.get("params"), Mapping):
        params = dict(reg["params"])
        for name, value in added_in(version).items():
            params.setdefault(name, value)
        out["params"] = params
    out["format_version"] = version
    return out


def _migrate_from_1(reg: Mapping) -> dict:
    """A format-1 registry as format 2: the fields format 2 added, set to what format-1 models did."""
    out = _with_added_params(reg, 2)
    if isinstance(reg.get("training"), Mapping):
        out["training"] = {"precision": "full", "engine": "torch", **dict(reg["training"])}
    return out


def _migrate_from_2(reg: Mapping) -> dict:
    """A format-2 registry as format 3: no batch correction (the parameter at its default)."""
    return _with_added_params(reg, 3)


_MIGRATIONS = {1: _migrate_from_1, 2: _migrate_from_2}


class RegistryError(ValueError):
    """A model registry that is missing, malformed or of an unknown version."""


def registry_for(adata, key: str) -> Mapping:
    """Return ``adata.uns[key]`` after checking it looks like a gbumap registry."""
    if key not in adata.uns:
        regs = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "format_version" in v and "encoder" in v]
        hint = f" gbumap models in this AnnData: {', '.join(map(repr, regs))}." if regs else " Run gbumap.tl.fit first."
        raise KeyError(f"No gbumap model under uns[{key!r}].{hint}")
    reg = adata.uns[key]
    _check_version(reg, key)
    return reg


def _check_version(reg: Any, where: str = "registry") -> None:
    if not isinstance(reg, Mapping):
        raise RegistryError(f"uns[{where!r}] is a {type(reg).__name__}, not a gbumap model registry.")
    if "format_version" not in reg:
        raise RegistryError(f"uns[{where!r}] has no 'format_version'; it is not a gbumap model registry.")
    version = _as_int(reg["format_version"], "format_version")
    if version != FORMAT_VERSION and version not in _MIGRATIONS:
        readable = ", ".join(str(v) for v in sorted({*_MIGRATIONS, FORMAT_VERSION}))
        raise RegistryError(
            f"uns[{where!r}] uses registry format {version}; this gbumap reads formats {readable}. "
            "Upgrade gbumap (pip install -U gbumap) or refit the model."
        )


def _current(reg: Mapping, where: str = "registry") -> Mapping:
    """``reg`` in the current format (migrated when it is older)."""
    _check_version(reg, where)
    version = _as_int(reg["format_version"], "format_version")
    while version != FORMAT_VERSION:
        reg = _MIGRATIONS[version](reg)
        version = _as_int(reg["format_version"], "format_version")
    return reg


def _numeric(value: Any, name: str, ndim: int | None = None, shape: tuple | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise RegistryError(f"Registry field {name!r} must be a numeric array; got dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise RegistryError(f"Registry field {name!r} must have {ndim} dimension(s); got shape {arr.shape}.")
    if shape is not None and arr.shape != shape:
        raise RegistryError(f"Registry field {name!r} must have shape {shape}; got {arr.shape}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise RegistryError(f"Registry field {name!r} contains NaN or infinite values.")
    return arr


def _as_int(value: Any, name: str) -> int:
    arr = np.asarray(value)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
        raise RegistryError(f"Registry field {name!r} must be an integer; got {value!r}.")
    return int(arr)


def _as_float(value: Any, name: str) -> float:
    arr = _numeric(value, name, ndim=0)
    return float(arr)


def _as_str(value: Any, name: str) -> str:
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise RegistryError(f"Registry field {name!r} must be a string; got {type(value).__name__}.")


def _strings(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    items = arr.tolist()
    if arr.ndim != 1 or not all(isinstance(v, (str, np.str_)) for v in items):
        raise RegistryError(f"Registry field {name!r} must be a 1-D array of strings.")
    # from the items, not astype: zarr reads strings as numpy's StringDType, which astype(str) refuses
    return np.array(items, dtype=str)


def _field(reg: Mapping, name: str, where: str = "") -> Any:
    if name not in reg:
        raise RegistryError(f"Registry is missing the field {where + name!r}; the file may be damaged.")
    return reg[name]


# How the registry writes and reads a parameter of each kind of the parameter table.
_ENCODE: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "ints": lambda value: np.asarray(list(value), dtype=np.int64),
}
_DECODE: dict[str, Callable[[Any, str], Any]] = {
    "int": _as_int,
    "float": _as_float,
    "str": _as_str,
    "bool": lambda value, name: bool(_numeric(value, name, ndim=0)),
    "ints": lambda value, name: tuple(int(h) for h in _numeric(value, name, ndim=1)),
}


def encode_weights(module) -> dict:
    """A module's ``state_dict`` as plain arrays, keyed without dots (``linears.0.weight`` → ``linears__0__weight``)."""
    return {k.replace(".", "__"): v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def encode_model(model) -> dict:
    """The registry dict of a fitted :class:`~gbumap.GlassBoxUMAP` (model part only)."""
    from . import __version__
    from ._encoder import BilinearEncoder, HomogeneousMLP

    params: dict[str, Any] = {}
    for param in registry_params():
        value = getattr(model, param.name) if param.fitted is None else param.fitted(model)
        if value is not None:
            params[param.name] = _ENCODE[param.kind](value)
    encoder = model.encoder_
    if isinstance(encoder, HomogeneousMLP):
        enc: dict[str, Any] = {
            "kind": "homogeneous_mlp",
            "activation": encoder.activation,
            "negative_slope": float(encoder.negative_slope),
            "hidden": np.asarray(encoder.hidden, dtype=np.int64),
        }
    elif isinstance(encoder, BilinearEncoder):
        enc = {"kind": "bilinear", "rank": int(encoder.rank)}
    else:
        enc = {"kind": "custom", "class_name": type(encoder).__name__}
    enc["n_inputs"] = int(model.n_inputs_)
    enc["n_outputs"] = int(model.n_components)
    enc["state"] = encode_weights(encoder)
    projection: dict[str, Any] = {"baseline": np.asarray(model.baseline_, dtype=np.float64)}
    if model.components_ is not None:
        projection["components"] = np.asarray(model.components_)
    if getattr(model, "explained_variance_", None) is not None:
        projection["explained_variance"] = np.asarray(model.explained_variance_)
    if model.input_norm_offset_ is not None:
        projection["input_norm_offset"] = float(model.input_norm_offset_)
    info = model.training_info_
    extra: dict[str, Any] = {}
    if getattr(model, "correction_", None) is not None:
        extra["batch_correction"] = model.correction_.to_dict()
    return {
        **extra,
        "format_version": FORMAT_VERSION,
        "gbumap_version": __version__,
        "params": params,
        "projection": projection,
        "encoder": enc,
        "umap_curve": {"a": float(model.a_), "b": float(model.b_)},
        "training": {
            "loss": np.asarray(model.loss_history_, dtype=np.float32),
            "n_steps": int(info["n_steps"]),
            "seconds": float(info["seconds"]),
            "device": str(info["device"]),
            "stopped_early": bool(info["stopped_early"]),
            "precision": str(info["precision"]),
            "engine": str(info["engine"]),
            "devices": int(info.get("devices", 1)),
            "strategy": str(info.get("strategy", "single_device")),
        },
        "n_features": int(model.n_features_in_),
    }


def _input_norm_offset(proj: Mapping, mode: str) -> float | None:
    """The stored ``c`` of the input scaling, checked against the mode that needs it."""
    if mode == "none":
        if "input_norm_offset" in proj:
            raise RegistryError("Registry stores an input_norm_offset but its input_norm is 'none'.")
        return None
    offset = _as_float(_field(proj, "input_norm_offset", "projection/"), "projection/input_norm_offset")
    if offset < 0 or (mode == "l2" and offset != 0):
        raise RegistryError(f"Registry input_norm_offset {offset} does not fit input_norm={mode!r}.")
    return offset


def decode_model(reg: Mapping, encoder=None):
    """Rebuild a fitted :class:`~gbumap.GlassBoxUMAP` from a registry.

    Every part is decoded and checked by its own reader (parameters,
    projection, encoder architecture and weights, training record, batch
    correction) before the model is built.

    Parameters
    ----------
    reg
        The registry mapping (``adata.uns[key]``).
    encoder
        For models trained with a custom encoder: a module of the same
        architecture, into which the stored weights are loaded.
    """
    from ._estimator import GlassBoxUMAP

    reg = _current(reg)
    params = _decode_params(reg)
    n_features = _as_int(_field(reg, "n_features"), "n_features")
    proj = _field(reg, "projection")
    if not isinstance(proj, Mapping):
        raise RegistryError("Registry field 'projection' must be a mapping.")
    baseline, components = _decode_loadings(proj, n_features)

    enc = _field(reg, "encoder")
    if not isinstance(enc, Mapping):
        raise RegistryError("Registry field 'encoder' must be a mapping.")
    kind = _as_str(_field(enc, "kind", "encoder/"), "encoder/kind")
    n_inputs = _as_int(_field(enc, "n_inputs", "encoder/"), "encoder/n_inputs")
    n_outputs = _as_int(_field(enc, "n_outputs", "encoder/"), "encoder/n_outputs")
    expected_inputs = n_features if components is None else components.shape[0]
    if n_inputs != expected_inputs or n_outputs != params["n_components"]:
        raise RegistryError(
            f"Registry encoder maps {n_inputs} → {n_outputs} but the projection gives {expected_inputs} inputs "
            f"and n_components is {params['n_components']}."
        )
    module, params["encoder"] = _encoder_module(enc, kind, n_inputs, n_outputs, params["homogeneity_degree"], encoder)
    tensors = _stored_tensors(enc, module)
    try:
        GlassBoxUMAP(**params)._check_params()
    except (TypeError, ValueError) as err:
        raise RegistryError(f"Registry parameters are invalid: {err}") from err
    module = _load_weights(module, tensors, params["dtype"])
    curve = _field(reg, "umap_curve")
    training = _field(reg, "training")
    correction = None
    if "batch_correction" in reg:
        correction = _decode_correction(_field(reg, "batch_correction"), n_inputs)
    return GlassBoxUMAP.from_state(
        params,
        encoder=module,
        n_features=n_features,
        baseline=baseline,
        components=components,
        explained_variance=(
            _numeric(proj["explained_variance"], "explained_variance", ndim=1) if "explained_variance" in proj else None
        ),
        input_norm_offset=_input_norm_offset(proj, params["input_norm"]),
        homogeneity_degree=params["homogeneity_degree"],
        a=_as_float(_field(curve, "a", "umap_curve/"), "a"),
        b=_as_float(_field(curve, "b", "umap_curve/"), "b"),
        loss_history=_numeric(_field(training, "loss", "training/"), "training/loss", ndim=1).astype(np.float64),
        training_info=_decode_training(training),
        correction=correction,
    )


def _decode_params(reg: Mapping) -> dict[str, Any]:
    """The constructor parameters stored in ``params``, each read by its kind in the parameter table."""
    raw_params = _field(reg, "params")
    if not isinstance(raw_params, Mapping):
        raise RegistryError("Registry field 'params' must be a mapping.")
    params: dict[str, Any] = {}
    for param in registry_params():  # a parameter the file lacks and need not hold reads as the default
        if param.required or param.name in raw_params:
            params[param.name] = _DECODE[param.kind](_field(raw_params, param.name, "params/"), param.name)
        elif param.missing is not None:
            params[param.name] = param.missing
    return params


def _decode_loadings(proj: Mapping, n_features: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The baseline ``(n_features,)`` float64 and the PCA loadings ``(n_pcs, n_features)`` (or ``None``)."""
    baseline = _numeric(_field(proj, "baseline", "projection/"), "baseline", shape=(n_features,)).astype(np.float64)
    components = None
    if "components" in proj:
        components = _numeric(proj["components"], "components", ndim=2)
        if components.shape[1] != n_features:
            raise RegistryError(
                f"Registry 'components' has {components.shape[1]} features but 'n_features' is {n_features}."
            )
    return baseline, components


def _encoder_module(enc: Mapping, kind: str, n_inputs: int, n_outputs: int, degree: int, encoder):
    """The untrained module the stored weights load into, and the estimator's ``encoder`` parameter.

    gbumap's own encoders are built from the stored architecture after one
    check that the file holds the weights it needs, *before* allocating, so
    that a crafted file cannot make us build a huge network (e.g.
    ``hidden=[10**9]``). A custom encoder is a copy of ``encoder``.
    """
    from ._encoder import BilinearEncoder, HomogeneousMLP

    if kind == "custom":
        if encoder is None:
            raise RegistryError(
                "This model was trained with a custom encoder "
                f"({enc.get('class_name', 'unknown')!s}); pass an untrained instance of it as encoder= "
                "to load the stored weights (code is never read from the file)."
            )
        import copy

        return copy.deepcopy(encoder), encoder
    if kind not in ("homogeneous_mlp", "bilinear"):
        raise RegistryError(f"Unknown encoder kind {kind!r} in registry.")
    if encoder is not None:
        own = "own" if kind == "homogeneous_mlp" else "bilinear"
        raise ValueError(f"This model uses gbumap's {own} encoder; do not pass encoder=.")
    if kind == "homogeneous_mlp":
        hidden = tuple(int(h) for h in _numeric(_field(enc, "hidden", "encoder/"), "encoder/hidden", ndim=1))
        activation = _as_str(_field(enc, "activation", "encoder/"), "encoder/activation")
        if activation not in ("prelu", "leaky_relu", "relu"):
            raise RegistryError(f"Unknown encoder activation {activation!r} in registry.")
        widths = (n_inputs, *hidden, n_outputs)
        n_needed, sizes_valid = sum(a * b for a, b in zip(widths[:-1], widths[1:])), min(widths) >= 1
        needs = f"encoder widths {list(widths)} need"
    else:
        rank = _as_int(_field(enc, "rank", "encoder/"), "encoder/rank")
        n_needed, sizes_valid = rank * (2 * n_inputs + n_outputs), rank >= 1
        needs = f"bilinear encoder of rank {rank} needs"
    raw_state = _field(enc, "state", "encoder/")
    if not isinstance(raw_state, Mapping):
        raise RegistryError("Registry field 'encoder/state' must be a mapping of arrays.")
    n_stored = sum(int(_numeric(v, f"encoder/state/{k}").size) for k, v in raw_state.items())
    if not sizes_valid or n_needed > n_stored:
        raise RegistryError(
            f"Registry {needs} {n_needed} weights but the file stores {n_stored}; the file is damaged or was edited."
        )
    if kind == "homogeneous_mlp":
        negative_slope = _as_float(_field(enc, "negative_slope", "encoder/"), "encoder/negative_slope")
        return HomogeneousMLP(n_inputs, n_outputs, hidden=hidden, activation=activation,
                              negative_slope=negative_slope), None
    if degree != 2:
        raise RegistryError(f"Registry bilinear encoder has degree {degree}; it must be 2.")
    return BilinearEncoder(n_inputs, n_outputs, rank=rank), "bilinear"


def _stored_tensors(enc: Mapping, module) -> dict:
    """The stored weights as tensors, one per entry of ``module``'s ``state_dict`` (names and shapes checked)."""
    import torch

    state = _field(enc, "state", "encoder/")
    if not isinstance(state, Mapping):
        raise RegistryError("Registry field 'encoder/state' must be a mapping of arrays.")
    expected = module.state_dict()
    tensors = {}
    for name, ref in expected.items():
        stored = name.replace(".", "__")
        if stored not in state:
            raise RegistryError(f"Registry encoder weights lack {name!r}; the file may be damaged.")
        arr = _numeric(state[stored], f"encoder/state/{stored}", shape=tuple(ref.shape))
        tensors[name] = torch.from_numpy(np.array(arr, dtype=np.float64)).to(ref.dtype)
    extra = set(state.keys()) - {n.replace(".", "__") for n in expected}
    if extra:
        raise RegistryError(f"Registry encoder has unexpected weights: {', '.join(sorted(map(str, extra)))}.")
    return tensors


def _load_weights(module, tensors: dict, dtype: str):
    """``module`` with ``tensors`` loaded, in ``dtype``, in eval mode; every weight checked to load exactly."""
    import torch

    module.load_state_dict(tensors)
    module = module.to(dtype=torch.float64 if dtype == "float64" else torch.float32).eval()
    for name, value in module.state_dict().items():
        if not torch.equal(value, tensors[name].to(value.dtype)):
            raise RegistryError(f"Weight {name!r} did not load exactly.")
    return module


def _decode_training(training: Mapping) -> dict[str, Any]:
    """The training record (``training_info_``), each field checked."""
    return {
        "n_steps": _as_int(_field(training, "n_steps", "training/"), "training/n_steps"),
        "seconds": _as_float(_field(training, "seconds", "training/"), "training/seconds"),
        "device": _as_str(_field(training, "device", "training/"), "training/device"),
        "stopped_early": bool(_numeric(_field(training, "stopped_early", "training/"), "stopped_early", ndim=0)),
        "precision": _as_str(_field(training, "precision", "training/"), "training/precision"),
        "engine": _as_str(_field(training, "engine", "training/"), "training/engine"),
        # absent from files written before multi-process training existed
        "devices": _as_int(training["devices"], "training/devices") if "devices" in training else 1,
        "strategy": (
            _as_str(training["strategy"], "training/strategy") if "strategy" in training else "single_device"
        ),
    }


def _decode_correction(raw: Any, n_inputs: int):
    """The stored batch correction, every array checked (kind, dtype, shape, finite) before use."""
    from ._batch_correction import BatchCorrection

    if not isinstance(raw, Mapping):
        raise RegistryError("Registry field 'batch_correction' must be a mapping.")

    def check(name: str, value: Any, kind: Any, shape: tuple | None):
        where = f"batch_correction/{name}"
        if value is None:
            raise RegistryError(f"Registry is missing the field {where!r}; the file may be damaged.")
        if kind is str:
            return _as_str(value, where)
        if kind is int:
            return _as_int(value, where)
        if kind is float:
            return _as_float(value, where)
        if kind == "strings":
            return _strings(value, where)
        return _numeric(value, where, shape=shape).astype(np.float64)

    try:
        return BatchCorrection.from_dict(raw, n_inputs, check=check)
    except ValueError as err:
        if isinstance(err, RegistryError):
            raise
        raise RegistryError(f"Registry 'batch_correction' is invalid: {err}") from err


# ---------------------------------------------------------------------- the record
@dataclass
class ModelRecord:
    """Everything ``uns[key]`` holds about one model, decoded and validated.

    Parameters
    ----------
    model
        The fitted :class:`~gbumap.GlassBoxUMAP`.
    feature_names
        The model's input features, in order (genes, or columns of an ``obsm``
        representation).
    input
        Where the input lives in the AnnData.
    attribution
        ``"genes"``, or ``"representation"`` when contributions are per column
        of an ``obsm`` representation that could not be traced to genes.
    projection_source
        ``"gbumap_pca"``, ``"scanpy:<obsm key>"`` or ``"none"``.
    neighbors
        Where the graph came from: ``{"source": "gbumap"}`` or
        ``{"source": "scanpy", "neighbors_key", "connectivities_key", "representation"}``.
    timings
        Seconds per stage of fitting (and ``"contributions"``).
    reconstruction_error
        ``{"max_abs", "max_rel"}`` of the summed contributions, once measured.
    contributions
        After ``tl.contributions``/``tl.transform``: ``{"jacobian_key", "dtype"}``
        and, with a layer, ``"layer"`` and ``"top_genes"``.
    query
        In a query after ``tl.transform``: ``{"n_missing_genes", "fill_missing"}``
        and, when genes were filled, ``"missing_genes"`` and ``"fill_values"``.
    gbumap_version
        The package version that wrote the record (when read back; encoding
        always records the running version).
    batch_key
        The ``obs`` column of the batch labels, for a batch-corrected model.
    modalities
        For a model over several modalities (genes and proteins): which
        feature belongs to which, each modality's projection and weight
        (:class:`gbumap._modalities.Modalities`).
    """

    model: GlassBoxUMAP
    feature_names: np.ndarray
    input: InputSpec = field(default_factory=InputSpec)
    attribution: str = "genes"
    projection_source: str = "none"
    neighbors: dict = field(default_factory=lambda: {"source": "gbumap"})
    timings: dict = field(default_factory=dict)
    reconstruction_error: dict | None = None
    contributions: dict | None = None
    query: dict | None = None
    gbumap_version: str | None = None
    batch_key: str | None = None
    modalities: Modalities | None = None

    @property
    def gene_level(self) -> bool:
        return self.attribution == "genes"

    @property
    def fill(self) -> dict[str, float] | None:
        """Constant values a query used for model genes it lacked (``tl.transform(fill_missing=...)``)."""
        if not self.query or "missing_genes" not in self.query:
            return None
        return dict(zip(self.query["missing_genes"].tolist(), self.query["fill_values"].tolist()))

    def replace(self, **changes: Any) -> ModelRecord:
        """A copy with some fields changed (the model itself is shared, not copied)."""
        return replace(self, **changes)


def encode_record(record: ModelRecord) -> dict:
    """``uns[key]`` for a record: the model part of :func:`encode_model` plus the AnnData part."""
    reg = encode_model(record.model)  # gbumap_version: this package, the writer
    reg["input"] = record.input.to_dict()
    reg["feature_names"] = np.asarray(record.feature_names, dtype=str)
    reg["attribution"] = str(record.attribution)
    reg["projection"]["source"] = str(record.projection_source)
    reg["neighbors"] = {k: str(v) for k, v in record.neighbors.items()}
    reg["timings"] = {k: float(v) for k, v in record.timings.items()}
    if record.reconstruction_error is not None:
        reg["reconstruction_error"] = {k: float(v) for k, v in record.reconstruction_error.items()}
    if record.contributions is not None:
        reg["contributions"] = dict(record.contributions)
    if record.query is not None:
        reg["query"] = dict(record.query)
    if "batch_correction" in reg:
        reg["batch_correction"]["batch_key"] = str(record.batch_key)
    if record.modalities is not None:
        reg["modalities"] = record.modalities.to_dict()
    return reg


def decode_record(reg: Mapping, *, encoder=None, where: str = "registry") -> ModelRecord:
    """Validate ``uns[key]`` and rebuild its :class:`ModelRecord` (the estimator included)."""
    reg = _current(reg, where)
    model = decode_model(reg, encoder=encoder)
    names = _strings(_field(reg, "feature_names"), "feature_names")
    if len(names) != model.n_features_in_:
        raise RegistryError(
            f"Registry 'feature_names' has {len(names)} names for a model of {model.n_features_in_} features."
        )
    spec = InputSpec.from_dict(reg["input"]) if isinstance(reg.get("input"), Mapping) else InputSpec()
    neighbors = reg.get("neighbors", {"source": "gbumap"})
    query = None
    if isinstance(reg.get("query"), Mapping):
        query = dict(reg["query"])
        if "missing_genes" in query:
            query["missing_genes"] = _strings(query["missing_genes"], "query/missing_genes")
            query["fill_values"] = _numeric(query["fill_values"], "query/fill_values",
                                            shape=query["missing_genes"].shape).astype(np.float64)
    errors = reg.get("reconstruction_error")
    modalities = None
    if "modalities" in reg:
        if not isinstance(reg["modalities"], Mapping):
            raise RegistryError("Registry 'modalities' must be a mapping.")
        try:
            modalities = Modalities.from_dict(reg["modalities"], model.n_features_in_, model.n_inputs_)
        except ValueError as err:
            raise RegistryError(f"Registry {err}") from None
    return ModelRecord(
        model=model,
        feature_names=names,
        input=spec,
        attribution=_as_str(reg.get("attribution", "genes"), "attribution"),
        projection_source=_as_str(_field(reg, "projection").get("source", "none"), "projection/source"),
        neighbors={str(k): str(v) for k, v in dict(neighbors).items()},
        timings={str(k): _as_float(v, f"timings/{k}") for k, v in dict(reg.get("timings", {})).items()},
        reconstruction_error=None if errors is None else {k: _as_float(v, k) for k, v in dict(errors).items()},
        contributions=dict(reg["contributions"]) if isinstance(reg.get("contributions"), Mapping) else None,
        query=query,
        gbumap_version=str(reg.get("gbumap_version", "unknown")),
        batch_key=(
            _as_str(_field(reg["batch_correction"], "batch_key", "batch_correction/"), "batch_correction/batch_key")
            if "batch_correction" in reg else None
        ),
        modalities=modalities,
    )


def mark_mudata_source(reg: dict, layers: list[str | None], prepared: Mapping | None = None) -> None:
    """Record in an encoded registry that its modalities came from a MuData, the layer read in each and,
    when :func:`gbumap.pp.normalize_modalities` made that layer (``prepared``, its ``uns`` record), how."""
    from ._modalities import preparation_of

    info = reg["modalities"]
    info["source"] = "mudata"
    info["layers"] = np.asarray(["" if layer is None else str(layer) for layer in layers], dtype=str)
    info["preparation"] = preparation_of(prepared, np.asarray(info["names"]).astype(str))


def read_record(adata, key: str = "gbumap", *, encoder=None) -> ModelRecord:
    """The :class:`ModelRecord` stored in ``adata.uns[key]``."""
    return decode_record(registry_for(adata, key), encoder=encoder, where=key)
