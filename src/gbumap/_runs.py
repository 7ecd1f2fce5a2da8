"""Further runs of a reference model: same projection and parameters, another encoder.

``tl.stability`` trains them and stores their weights, ``get.stability_models``
rebuilds them from the file, and ``tl.stability`` and
``tl.randomization_check`` rank them; every one of them goes through
:func:`run_model`. Nothing here reads or writes an AnnData.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._registry import RegistryError, encode_weights

if TYPE_CHECKING:  # pragma: no cover - annotations only; the estimator imports torch
    from ._estimator import GlassBoxUMAP
    from ._view import ModelView

__all__ = ["load_run_weights", "run_model", "run_view"]


def run_model(reference: GlassBoxUMAP, encoder, seed: int | None, info: dict | None = None) -> GlassBoxUMAP:
    """The reference model with another encoder (same projection, same parameters but the seed).

    ``seed=None`` keeps the reference's ``random_state``; ``info`` (``loss``,
    ``seconds``) replaces its training history.
    """
    model = copy_module.copy(reference)
    model.encoder_ = encoder
    if seed is not None:
        model.random_state = int(seed)
    if info is not None:
        model.loss_history_ = np.asarray(info["loss"], dtype=np.float64)
        model.training_info_ = {**reference.training_info_, "seconds": float(info["seconds"])}
    for name in ("graph_", "embedding_", "timings_"):
        model.__dict__.pop(name, None)
    return model


def run_view(view: ModelView, model: GlassBoxUMAP, label: str) -> ModelView:
    """A view of ``model`` with ``view``'s record (input, genes, batches), under the name ``label``.

    ``label`` is no key of the AnnData, so no stored embedding or Jacobians
    are found under it: the run's contributions are computed from its own
    encoder. Nothing is encoded or written.
    """
    from ._view import ModelView

    return ModelView(key=label, record=view.record.replace(model=model))


def load_run_weights(module, weights: Mapping, where: str) -> None:
    """Load one run's stored weights into ``module`` after checking every name, shape and dtype.

    Raises :class:`~gbumap._registry.RegistryError` on any mismatch; nothing is unpickled.
    """
    import torch

    if not isinstance(weights, Mapping):
        raise RegistryError(f"{where} must be a mapping of arrays; got {type(weights).__name__}.")
    expected = encode_weights(module)
    missing = sorted(set(expected) - set(map(str, weights)))
    extra = sorted(set(map(str, weights)) - set(expected))
    if missing or extra:
        raise RegistryError(
            f"{where} does not match the reference encoder: missing {missing or 'none'}, unexpected {extra or 'none'}; "
            "the file is damaged or was edited. Rerun gbumap.tl.stability."
        )
    state = {}
    for name, ref in expected.items():
        arr = weights[name]
        if ref.shape == () and isinstance(arr, (float, np.floating)) and not isinstance(arr, bool):
            # a 0-d array comes back from .h5ad as a Python float: accept it when it is exactly a ref.dtype value
            cast = np.asarray(arr, dtype=ref.dtype)
            arr = cast if float(cast) == float(arr) else np.asarray(arr)
        if not isinstance(arr, np.ndarray) or arr.dtype != ref.dtype or arr.shape != ref.shape:
            got = (getattr(arr, "shape", None), str(getattr(arr, "dtype", type(arr).__name__)))
            raise RegistryError(
                f"{where}/{name} must be a {ref.dtype} array of shape {ref.shape} like the reference encoder's; "
                f"got shape {got[0]}, dtype {got[1]}. The file is damaged or was edited; rerun gbumap.tl.stability."
            )
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise RegistryError(f"{where}/{name} contains NaN or infinite values.")
        state[name.replace("__", ".")] = torch.from_numpy(np.array(arr))
    module.load_state_dict(state)
