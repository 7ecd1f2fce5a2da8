"""Writing a lazy, row-chunked result into a zarr store or an ``.h5ad`` file: whole, or not at all.

The result is computed chunk by chunk straight into an array of the store
(never whole in memory; under a distributed scheduler, zarr chunks are written
by the workers and HDF5 chunks by this process as they arrive), under a temporary name that replaces the final one
only once every chunk is written, so an error or an interrupt leaves the
store as it was. The array gets anndata's ``array`` encoding under
``obsm/<name>``, so ``anndata.read_zarr``/``read_h5ad`` of a full AnnData
store picks it up, and it is read back lazily with
``anndata.experimental.read_elem_lazy``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anndata import AnnData

from ._dask import store_rows

__all__ = ["write_obsm_rows"]

_H5_SUFFIXES = (".h5ad", ".h5", ".hdf5")
_ARRAY_ENCODING = {"encoding-type": "array", "encoding-version": "0.2.0"}
_DICT_ENCODING = {"encoding-type": "dict", "encoding-version": "0.1.0"}


def _open(store: str | os.PathLike, adata: AnnData):
    """``(kind, root group)`` of ``store``; reuses the backed file of ``adata`` when it is the same file."""
    path = Path(store)
    if path.suffix in _H5_SUFFIXES:
        import h5py

        if adata.isbacked and Path(adata.filename).resolve() == path.resolve():
            handle = adata.file._file
            if handle.mode == "r":
                raise ValueError(
                    f"store={str(store)!r} is the file adata is backed by, opened read-only (backed='r'); "
                    "results cannot be written into it. Open it with anndata.read_h5ad(path, backed='r+'), "
                    "or pass another store (e.g. a new .zarr directory)."
                )
            return "h5", handle
        return "h5", h5py.File(path, "a")
    if path.suffix == ".zarr" or path.is_dir():
        import anndata as ad
        import zarr

        if path.exists():
            return "zarr", zarr.open_group(str(path), mode="a")
        return "zarr", zarr.open_group(str(path), mode="w", zarr_format=ad.settings.zarr_write_format)
    raise ValueError(
        f"store must be a zarr directory (ending in .zarr) or an HDF5 file (.h5ad, .h5); got {str(store)!r}."
    )


def _delete(group, name: str) -> None:
    if name in group:
        del group[name]


def write_obsm_rows(
    lazy, store: str | os.PathLike, name: str, adata: AnnData, *, also: tuple = (), verbose: bool = False
) -> tuple[Any, tuple]:
    """Compute ``lazy`` (a Dask array, rows = cells) into ``obsm/<name>`` of ``store``.

    ``also`` are Dask collections computed in the same pass (sharing the reads
    of the input). Returns a lazy reader of the written array and the computed
    ``also`` values.
    """
    from anndata.experimental import read_elem_lazy

    kind, root = _open(store, adata)
    obsm = root.require_group("obsm")
    if not obsm.attrs.get("encoding-type"):
        obsm.attrs.update(_DICT_ENCODING)
    rows = int(max(lazy.chunks[0]))
    lazy = lazy.rechunk((rows, *lazy.shape[1:]))
    partial = f".{name}.partial"
    _delete(obsm, partial)
    chunks = (rows, *lazy.shape[1:])
    if kind == "h5":
        target = obsm.create_dataset(partial, shape=lazy.shape, dtype=lazy.dtype, chunks=chunks)
    else:
        target = obsm.create_array(partial, shape=lazy.shape, dtype=lazy.dtype, chunks=chunks)
    try:
        # zarr: every chunk of the result is one chunk of the array, so the workers of any scheduler may write
        # their own chunks without a lock (a cluster of machines needs the store on a shared file system).
        # HDF5: one writer; threads take a lock, other schedulers send their chunks back here, written in turn.
        results = store_rows(lazy, target, also=also, lock=kind == "h5", on_workers=kind == "zarr",
                             verbose=verbose, desc=f"gbumap {name}")
    except BaseException:
        _delete(obsm, partial)
        raise
    _delete(obsm, name)
    if kind == "h5":
        obsm.move(partial, name)
    else:  # zarr has no move yet: rename the array's directory (local stores)
        os.replace(Path(store) / "obsm" / partial, Path(store) / "obsm" / name)
    array = obsm[name]
    array.attrs.update(_ARRAY_ENCODING)
    if kind == "zarr" and _has_consolidated_metadata(Path(store)):
        import zarr

        zarr.consolidate_metadata(str(store))  # readers that trust it would not see the new array
    return read_elem_lazy(array, chunks=chunks), tuple(results)


def _has_consolidated_metadata(path: Path) -> bool:
    import zarr

    if (path / ".zmetadata").exists():  # zarr format 2
        return True
    return getattr(zarr.open_group(str(path), mode="r").metadata, "consolidated_metadata", None) is not None

