"""Reading the further runs of :func:`gbumap.tl.stability` back as models."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from anndata import AnnData

from .._registry import RegistryError, read_record
from .._results import find_result
from .._runs import load_run_weights, run_model

__all__ = ["stability_models"]


def stability_models(adata: AnnData, key: str = "stability_gbumap") -> list:
    """The further models of a :func:`gbumap.tl.stability` run, rebuilt from their stored weights.

    Each model is the reference model (``uns[<model key>]``, read and
    validated as by :func:`gbumap.get.model`) with the run's encoder weights:
    same parameters, baseline, loadings and input scaling, and the run's seed
    as ``random_state``. Every stored array is checked against the reference
    encoder (name, shape and dtype) before it is loaded; nothing is
    unpickled. The reference model itself is not in the list.

    Parameters
    ----------
    adata
        AnnData on which :func:`gbumap.tl.stability` ran.
    key
        The stability result's ``uns`` key.

    Returns
    -------
    list of :class:`~gbumap.GlassBoxUMAP`
        One fitted model per further run (``run_1``, ``run_2``, ...), on the CPU.
        ``model.transform(X)`` gives the run's (unaligned) embedding.

    Examples
    --------
    >>> models = gbumap.get.stability_models(adata)  # doctest: +SKIP
    >>> [m.random_state for m in models]  # doctest: +SKIP
    >>> runs = [m.transform(adata.X) for m in models]  # doctest: +SKIP
    """
    result = find_result(adata, key, "stability")
    model_key = str(result["params"]["model_key"])
    reference = read_record(adata, model_key).model
    stored = result["models"]
    if not isinstance(stored, Mapping):
        raise RegistryError(f"uns[{key!r}]['models'] must be a mapping of runs.")
    names = sorted(stored, key=lambda n: int(str(n).split("_")[-1]) if str(n).split("_")[-1].isdigit() else -1)
    seconds = np.asarray(result.get("timings", {}).get("training", []), dtype=np.float64).ravel()
    models = []
    for i, name in enumerate(names):
        run = stored[name]
        where = f"uns[{key!r}]['models'][{name!r}]"
        if not isinstance(run, Mapping) or "weights" not in run or "seed" not in run:
            raise RegistryError(f"{where} must hold 'seed' and 'weights'; the file is damaged or was edited.")
        seed = np.asarray(run["seed"])
        if seed.ndim != 0 or not np.issubdtype(seed.dtype, np.integer):
            raise RegistryError(f"{where}['seed'] must be an integer; got {run['seed']!r}.")
        encoder = copy.deepcopy(reference.encoder_)
        load_run_weights(encoder, run["weights"], f"{where}['weights']")
        info = None
        if "loss" in run:
            loss = np.asarray(run["loss"])
            if loss.ndim != 1 or not np.issubdtype(loss.dtype, np.floating):
                raise RegistryError(f"{where}['loss'] must be a 1-D float array.")
            info = {"loss": loss, "seconds": float(seconds[i]) if i < len(seconds) else float("nan")}
        models.append(run_model(reference, encoder.eval(), int(seed), info))
    return models
