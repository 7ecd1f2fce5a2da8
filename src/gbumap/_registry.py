"""The ``uns`` model registry: a fitted model as plain numbers and strings.

Everything is stored as NumPy numeric arrays, Python scalars and strings, so
``write_h5ad``/``read_h5ad`` round-trips it bit for bit and loading never
unpickles or executes anything from the file. Decoding validates every field
(type, dtype, shape) before building the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "RegistryError", "encode_model", "encode_weights", "decode_model", "registry_for"]

FORMAT_VERSION = 1

_SCALAR_PARAMS = {
    "n_neighbors": int,
    "n_components": int,
    "metric": str,
    "min_dist": float,
    "spread": float,
    "negative_sample_rate": int,
    "repulsion_strength": float,
    "baseline": str,
    "input_norm": str,
    "input_norm_scale": float,
    "activation": str,
    "homogeneity_degree": int,
    "learning_rate": float,
    "batch_size": int,
    "early_stopping": bool,
    "accelerator": str,
    "engine": str,
    "dtype": str,
    "training_precision": str,
}
_OPTIONAL_INT_PARAMS = ("pca_components", "n_steps", "random_state")
# Parameters added after format 1 was first written: older registries lack them. Models
# written before input scaling existed were trained on unscaled input ("none").
_DEFAULTED_PARAMS = {"engine": "auto", "input_norm": "none", "input_norm_scale": 0.5, "training_precision": "full"}


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
    if version != FORMAT_VERSION:
        raise RegistryError(
            f"uns[{where!r}] uses registry format {version}; this gbumap reads format {FORMAT_VERSION}. "
            "Upgrade gbumap (pip install -U gbumap) or refit the model."
        )


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
    if arr.ndim != 1 or not all(isinstance(v, (str, np.str_)) for v in arr.tolist()):
        raise RegistryError(f"Registry field {name!r} must be a 1-D array of strings.")
    return arr.astype(str)


def _field(reg: Mapping, name: str, where: str = "") -> Any:
    if name not in reg:
        raise RegistryError(f"Registry is missing the field {where + name!r}; the file may be damaged.")
    return reg[name]


def encode_weights(module) -> dict:
    """A module's ``state_dict`` as plain arrays, keyed without dots (``linears.0.weight`` → ``linears__0__weight``)."""
    return {k.replace(".", "__"): v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def encode_model(model) -> dict:
    """The registry dict of a fitted :class:`~gbumap.GlassBoxUMAP` (model part only)."""
    from . import __version__
    from ._encoder import HomogeneousMLP

    params: dict[str, Any] = {}
    for name, kind in _SCALAR_PARAMS.items():
        params[name] = kind(getattr(model, name)) if name != "homogeneity_degree" else int(model.homogeneity_degree_)
    for name in _OPTIONAL_INT_PARAMS:
        value = getattr(model, name)
        if name == "n_steps":
            value = model.training_info_["n_steps"]
        if value is not None:
            params[name] = int(value)
    params["hidden_layers"] = np.asarray(list(model.hidden_layers), dtype=np.int64)
    encoder = model.encoder_
    if isinstance(encoder, HomogeneousMLP):
        enc: dict[str, Any] = {
            "kind": "homogeneous_mlp",
            "activation": encoder.activation,
            "negative_slope": float(encoder.negative_slope),
            "hidden": np.asarray(encoder.hidden, dtype=np.int64),
        }
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
    return {
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
            "precision": str(info.get("precision", "full")),
            "engine": str(info.get("engine", "torch")),
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

    Parameters
    ----------
    reg
        The registry mapping (``adata.uns[key]``).
    encoder
        For models trained with a custom encoder: a module of the same
        architecture, into which the stored weights are loaded.
    """
    import torch

    from ._encoder import HomogeneousMLP
    from ._estimator import GlassBoxUMAP

    _check_version(reg)
    raw_params = _field(reg, "params")
    if not isinstance(raw_params, Mapping):
        raise RegistryError("Registry field 'params' must be a mapping.")
    params: dict[str, Any] = {}
    for name, kind in _SCALAR_PARAMS.items():
        if name in _DEFAULTED_PARAMS and name not in raw_params:
            params[name] = _DEFAULTED_PARAMS[name]
            continue
        value = _field(raw_params, name, "params/")
        if kind is str:
            params[name] = _as_str(value, name)
        elif kind is int:
            params[name] = _as_int(value, name)
        elif kind is bool:
            params[name] = bool(_numeric(value, name, ndim=0))
        else:
            params[name] = _as_float(value, name)
    for name in _OPTIONAL_INT_PARAMS:
        if name in raw_params:
            params[name] = _as_int(raw_params[name], name)
    params["hidden_layers"] = tuple(int(h) for h in _numeric(_field(raw_params, "hidden_layers", "params/"), "hidden_layers", ndim=1))

    n_features = _as_int(_field(reg, "n_features"), "n_features")
    proj = _field(reg, "projection")
    if not isinstance(proj, Mapping):
        raise RegistryError("Registry field 'projection' must be a mapping.")
    baseline = _numeric(_field(proj, "baseline", "projection/"), "baseline", shape=(n_features,)).astype(np.float64)
    components = None
    if "components" in proj:
        components = _numeric(proj["components"], "components", ndim=2)
        if components.shape[1] != n_features:
            raise RegistryError(
                f"Registry 'components' has {components.shape[1]} features but 'n_features' is {n_features}."
            )

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
    if kind == "homogeneous_mlp":
        if encoder is not None:
            raise ValueError("This model uses gbumap's own encoder; do not pass encoder=.")
        hidden = tuple(int(h) for h in _numeric(_field(enc, "hidden", "encoder/"), "encoder/hidden", ndim=1))
        activation = _as_str(_field(enc, "activation", "encoder/"), "encoder/activation")
        if activation not in ("prelu", "leaky_relu", "relu"):
            raise RegistryError(f"Unknown encoder activation {activation!r} in registry.")
        # Check the architecture against the stored weights *before* allocating it, so that a
        # crafted file cannot make us build a huge network (e.g. hidden=[10**9]).
        widths = (n_inputs, *hidden, n_outputs)
        raw_state = _field(enc, "state", "encoder/")
        if not isinstance(raw_state, Mapping):
            raise RegistryError("Registry field 'encoder/state' must be a mapping of arrays.")
        n_stored = sum(int(_numeric(v, f"encoder/state/{k}").size) for k, v in raw_state.items())
        n_needed = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        if min(widths) < 1 or n_needed > n_stored:
            raise RegistryError(
                f"Registry encoder widths {list(widths)} need {n_needed} weights but the file stores {n_stored}; "
                "the file is damaged or was edited."
            )
        module = HomogeneousMLP(
            n_inputs,
            n_outputs,
            hidden=hidden,
            activation=activation,
            negative_slope=_as_float(_field(enc, "negative_slope", "encoder/"), "encoder/negative_slope"),
        )
    elif kind == "custom":
        if encoder is None:
            raise RegistryError(
                "This model was trained with a custom encoder "
                f"({enc.get('class_name', 'unknown')!s}); pass an untrained instance of it as encoder= "
                "to load the stored weights (code is never read from the file)."
            )
        import copy

        module = copy.deepcopy(encoder)
    else:
        raise RegistryError(f"Unknown encoder kind {kind!r} in registry.")
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

    params["encoder"] = encoder
    try:
        GlassBoxUMAP(**params)._check_params()
    except (TypeError, ValueError) as err:
        raise RegistryError(f"Registry parameters are invalid: {err}") from err
    dtype = torch.float64 if params["dtype"] == "float64" else torch.float32
    module.load_state_dict(tensors)
    module = module.to(dtype=dtype).eval()
    for name, value in module.state_dict().items():
        if not torch.equal(value, tensors[name].to(value.dtype)):
            raise RegistryError(f"Weight {name!r} did not load exactly.")
    curve = _field(reg, "umap_curve")
    training = _field(reg, "training")
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
        training_info={
            "n_steps": _as_int(_field(training, "n_steps", "training/"), "training/n_steps"),
            "seconds": _as_float(_field(training, "seconds", "training/"), "training/seconds"),
            "device": _as_str(_field(training, "device", "training/"), "training/device"),
            "stopped_early": bool(_numeric(_field(training, "stopped_early", "training/"), "stopped_early", ndim=0)),
            "precision": _as_str(training["precision"], "training/precision") if "precision" in training else "full",
            "engine": _as_str(training["engine"], "training/engine") if "engine" in training else "torch",
        },
    )
