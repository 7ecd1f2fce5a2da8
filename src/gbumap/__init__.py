"""gbumap: glass-box UMAP for scverse.

A parametric UMAP whose encoder is positively homogeneous, so every cell's
position is exactly the sum of per-gene contributions.

Submodules follow scanpy: :mod:`gbumap.tl` (tools that write to AnnData),
:mod:`gbumap.pl` (plots), :mod:`gbumap.get` (read results back), :mod:`gbumap.pp` (preparing the
modalities of multimodal counts) and :mod:`gbumap.datasets` (the simulator). They, and the
:class:`~gbumap.GlassBoxUMAP` estimator, are imported on first use so that
``import gbumap`` stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("gbumap")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "GlassBoxUMAP",
    "NotHomogeneousError",
    "RegistryError",
    "read_gmt",
    "tl",
    "pl",
    "get",
    "pp",
    "datasets",
    "__version__",
]

_SUBMODULES = {"tl", "pl", "get", "pp", "datasets"}

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, get, pl, pp, tl
    from ._encoder import NotHomogeneousError
    from ._estimator import GlassBoxUMAP
    from ._gmt import read_gmt
    from ._registry import RegistryError


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name == "GlassBoxUMAP":
        from ._estimator import GlassBoxUMAP

        globals()[name] = GlassBoxUMAP
        return GlassBoxUMAP
    if name == "NotHomogeneousError":
        from ._encoder import NotHomogeneousError

        globals()[name] = NotHomogeneousError
        return NotHomogeneousError
    if name == "RegistryError":
        from ._registry import RegistryError

        globals()[name] = RegistryError
        return RegistryError
    if name == "read_gmt":
        from ._gmt import read_gmt

        globals()[name] = read_gmt
        return read_gmt
    raise AttributeError(f"module 'gbumap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
