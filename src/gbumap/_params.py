"""The one table of :class:`~gbumap.GlassBoxUMAP`'s constructor parameters.

Each row gives a parameter's kind, its bounds or choices, whether the model
registry stores it, and what a registry file written before it existed
means. Three things are driven by it:

* ``GlassBoxUMAP._check_params`` validates every parameter from its row (the
  rules that tie several parameters together stay written there);
* :mod:`gbumap._registry` encodes and decodes ``uns[key]["params"]`` from it;
* the registry's migrations fill, in older files, the parameters a format
  added (``added``) with what those models did (``older``).

The defaults live in the constructor's signature and the documentation in
its docstring, both written by hand (scikit-learn's convention); a test fails
when the table and the signature do not name the same parameters, in the same
order. A new parameter is written in the signature, the docstring and here.
Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._batch_correction import CORRECTION_METHODS
from ._validation import check_int, check_number

__all__ = ["PARAMS", "Param", "added_in", "registry_params"]


@dataclass(frozen=True)
class Param:
    """One constructor parameter of :class:`~gbumap.GlassBoxUMAP`.

    Parameters
    ----------
    name
        The keyword, as in the signature.
    kind
        ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"ints"`` (a sequence
        of integers), ``"path"`` (a file path or ``None``) or ``"encoder"``
        (``None``, ``"bilinear"`` or a ``torch.nn.Module``); for a stored
        parameter, how the registry writes and reads it.
    minimum
        Numbers: the smallest valid value (``None``: not checked).
    strict
        Floats: the value must exceed ``minimum`` (``> minimum``, not ``>=``).
    choices
        Strings: the valid values (``None``: not checked).
    optional
        ``None`` is valid; the registry stores the parameter only when it is set.
    stored
        The registry stores it in ``params`` (the others do not travel with
        the model: ``verbose``, ``checkpoint_path``, and ``encoder``, which the
        registry describes as ``encoder/kind``).
    required
        A registry file must hold it (after migration). ``False``: a file
        without it reads as the constructor's default.
    added
        The registry format that added it; files of older formats read as ``older``.
    older
        Its value for files of formats before ``added`` (what those models did).
    fitted
        What the registry stores instead of the constructor's value: the
        value the fit actually used, read from the fitted model.
    missing
        With ``required=False``: what a file without it means (``None``:
        the constructor's default).
    """

    name: str
    kind: str
    minimum: float | None = None
    strict: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False
    stored: bool = True
    required: bool = True
    added: int = 1
    older: Any = None
    fitted: Callable[[Any], Any] | None = None
    missing: Any = None

    def check(self, value: Any) -> None:
        """Raise a ``ValueError`` (or ``TypeError``) naming the parameter when ``value`` is not valid."""
        if value is None and self.optional:
            return
        if self.kind == "int" and self.minimum is not None:
            check_int(value, self.name, self.minimum, words=f"an integer >= {self.minimum:g}")
        elif self.kind == "float" and self.minimum is not None:
            check_number(value, self.name, self.minimum, strict=self.strict)
        elif self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be {_either(self.choices)}; got {value!r}.")
        elif self.kind == "path":
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(
                    f"{self.name} must be a file path (str or os.PathLike) or None; got {type(value).__name__}."
                )
        elif self.kind == "encoder":
            _check_encoder(self.name, value)


def _used(name: str) -> Callable[[Any], Any]:
    """The training setting a fit resolved (``schedule_``), or the parameter of a model read from a file."""

    def value(model: Any) -> Any:
        schedule = getattr(model, "schedule_", None)
        return getattr(model, name) if schedule is None else getattr(schedule, name)

    return value


def _either(choices: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _check_encoder(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if value != "bilinear":
            raise ValueError(f"{name} must be None, 'bilinear' or a torch.nn.Module; got {value!r}.")
        return
    from torch import nn  # a module was passed: torch is already loaded

    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be None, 'bilinear' or a torch.nn.Module; got {type(value).__name__}.")


#: Every parameter, in the order of the signature.
PARAMS: tuple[Param, ...] = (
    Param("n_neighbors", "int", minimum=2),
    Param("n_components", "int", minimum=1),
    Param("metric", "str"),
    Param("min_dist", "float", minimum=0.0),
    Param("spread", "float", minimum=0.0, strict=True),
    Param("negative_sample_rate", "int", minimum=0),
    Param("repulsion_strength", "float", minimum=0.0),
    Param("pca_components", "int", minimum=1, optional=True, required=False),
    Param("baseline", "str", choices=("mean", "zero")),
    # format-1 models fed the encoder its input unscaled
    Param("input_norm", "str", choices=("soft", "l2", "none"), added=2, older="none"),
    Param("input_norm_scale", "float", minimum=0.0, strict=True, added=2, older=0.5),
    Param("hidden_layers", "ints"),
    Param("activation", "str"),
    Param("encoder", "encoder", stored=False),
    Param("homogeneity_degree", "int", minimum=1, fitted=lambda model: model.homogeneity_degree_),
    # learning_rate, batch_size and full_batch: None picks by the graph's size (gbumap._schedule); the
    # registry stores the values the fit used, so a reloaded model's get_params() refits the same way
    Param("learning_rate", "float", minimum=0.0, strict=True, optional=True, fitted=_used("learning_rate")),
    # the steps actually run (the default depends on the number of cells)
    Param("n_steps", "int", minimum=1, optional=True, required=False,
          fitted=lambda model: model.training_info_["n_steps"]),
    Param("batch_size", "int", minimum=1, optional=True, fitted=_used("batch_size")),
    # added within format 3: files without it trained on edge batches
    Param("full_batch", "bool", optional=True, required=False, missing=False, fitted=_used("full_batch")),
    Param("early_stopping", "bool"),
    # a model fitted with random_state=None stores none and reads as the default seed, 0: the seed fit used
    Param("random_state", "int", optional=True, required=False),
    Param("accelerator", "str"),
    # added while format 1 was current: the earliest files lack it too; they trained in plain torch
    Param("engine", "str", choices=("auto", "torch", "lightning"), added=2, older="auto"),
    Param("dtype", "str", choices=("float32", "float64")),
    Param("training_precision", "str", choices=("auto", "full", "bf16-mixed"), added=2, older="full"),
    Param("verbose", "bool", stored=False),
    Param("checkpoint_path", "path", optional=True, stored=False),
    # added within format 2 (multi-process training): files without it trained in one process
    Param("devices", "int", minimum=1, required=False),
    Param("batch_correction", "str", choices=CORRECTION_METHODS, added=3, older="harmony"),
)


def registry_params() -> list[Param]:
    """The stored parameters in the order the registry writes and checks them.

    The parameters every file holds first, then those it may lack, then the
    sequences (the order of the format-3 writer, so that a damaged file
    reports the same first error).
    """
    return sorted((p for p in PARAMS if p.stored), key=lambda p: (p.kind == "ints", not p.required))


def added_in(version: int) -> dict[str, Any]:
    """The parameters registry format ``version`` added, each with its value for older files."""
    return {p.name: p.older for p in PARAMS if p.added == version}
