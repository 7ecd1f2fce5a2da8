"""Dask arrays as model input: checks, and the passes over their row chunks.

A cells × genes Dask array (dense or with SciPy sparse chunks, e.g. from
``anndata.experimental.read_elem_lazy`` over an ``.h5ad`` or zarr store) is
never loaded whole. Every pass over it is a Dask graph over its row chunks:
column statistics, the two products of the randomised PCA, the projection on
the loadings and the per-chunk model outputs (embedding, Jacobians,
contributions). Only results of size ``n_cells × (a few columns)`` and
``n_genes × (a few columns)`` are held in memory.

Dask is imported only when such an array is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "is_dask_array",
    "check_dask_matrix",
    "column_stats",
    "map_row_chunks",
    "store_rows",
    "gather_rows",
    "scheduler_kind",
    "shared",
    "row_chunk_products",
    "available_memory",
    "compute",
    "row_chunked",
    "threads_for_in_memory",
    "CHUNK_MEMORY_SHARE",
    "IN_MEMORY_CHUNK_ROWS",
]

# A chunk densified (the widest intermediate a chunk goes through) may use at most this share
# of the available memory per Dask worker thread: the chunk, its dense copy and the per-chunk
# outputs (up to n_components dense copies for gene-level contributions) fit several times over.
CHUNK_MEMORY_SHARE = 1 / 16


def is_dask_array(X: Any) -> bool:
    """Whether ``X`` is a Dask array (checked without importing Dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "chunks") and hasattr(X, "dask")


# Rows per chunk when an in-memory matrix goes through the same chunked passes as a Dask array.
IN_MEMORY_CHUNK_ROWS = 8192


def row_chunked(X: Any):
    """An in-memory matrix as a Dask array of row chunks (views of ``X``, nothing copied)."""
    import dask.array as da

    return da.from_array(X, chunks=(IN_MEMORY_CHUNK_ROWS, -1), asarray=False, name=False)  # no hashing of X


def threads_for_in_memory(X: Any):
    """A context running Dask on this process's threads when ``X`` is in memory (not a Dask array).

    Data already in memory are cut into views (:func:`row_chunked`): sending
    them to the workers of a distributed cluster would copy all of ``X``
    over the network for nothing, so their passes stay on threads.
    """
    import contextlib

    if is_dask_array(X):
        return contextlib.nullcontext()
    import dask

    return dask.config.set(scheduler="threads")


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _n_workers() -> int:
    import dask

    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def check_dask_matrix(X: Any, *, name: str = "X", dtype: type = np.float32):
    """``X`` checked and prepared for row-chunk passes: 2-D, numeric, known chunk sizes, bounded chunks.

    Columns are merged into one chunk (each pass needs whole rows) and the
    chunks cast to ``dtype`` lazily. Raises a ``ValueError`` saying what to do
    for unknown chunk sizes (e.g. after boolean indexing) and for row chunks
    whose dense size is too large for the available memory. NaN and infinite
    values are found by the passes themselves (:func:`column_stats`, and the
    per-chunk checks of the model's outputs).
    """
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells × features); got {X.ndim} dimension(s).")
    if any(np.isnan(c) for axis in X.chunks for c in axis) or any(np.isnan(s) for s in X.shape):
        raise ValueError(
            f"{name} is a Dask array with unknown chunk sizes (NaN in X.chunks), as after boolean indexing "
            "or reading from a format without row counts. gbumap needs them to place each chunk's rows; "
            f"call {name} = {name}.compute_chunk_sizes() first (or build it with explicit chunks=)."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}. Provide at least one cell and one feature.")
    kind = np.dtype(X.dtype)
    if not (np.issubdtype(kind, np.number) or kind == np.dtype(bool)):
        raise ValueError(f"{name} must be numeric; got dtype {kind}.")
    widest = max(X.chunks[0])
    dense_bytes = widest * X.shape[1] * np.dtype(dtype).itemsize
    limit = available_memory() * CHUNK_MEMORY_SHARE / _n_workers()
    if dense_bytes > limit:
        fit_rows = max(1, int(limit // (X.shape[1] * np.dtype(dtype).itemsize)))
        raise ValueError(
            f"{name} has row chunks of up to {widest:,} cells × {X.shape[1]:,} features, "
            f"{_gib(dense_bytes)} once densified, more than gbumap allows per chunk here "
            f"({_gib(limit)}: 1/{int(round(1 / CHUNK_MEMORY_SHARE))} of the {_gib(available_memory())} available, "
            f"per Dask worker thread, {_n_workers()} threads). Use smaller row chunks, e.g. "
            f"{name} = {name}.rechunk(({min(fit_rows, 10_000):,}, -1)), or fewer threads "
            "(dask.config.set(num_workers=...))."
        )
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    if kind != np.dtype(dtype):
        X = X.astype(dtype)
    return X


def compute(*collections, verbose: bool = False):
    """``dask.compute`` with a text progress bar when ``verbose``."""
    import dask

    if not verbose:
        return dask.compute(*collections)
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0):
        return dask.compute(*collections)


def _chunk_stats(block: Any) -> np.ndarray:
    """One chunk's column sums (row 0, accumulated in float64), and its NaN and infinity counts (row 1)."""
    values = block.data if sp.issparse(block) else np.asarray(block)
    out = np.zeros((1, 2, block.shape[1]))
    # (SciPy's sum(dtype=float64) of a float32 sparse matrix accumulates in float32)
    out[0, 0] = np.asarray(_as_dtype(block, np.float64).sum(axis=0)).ravel()
    if values.dtype.kind == "f":
        out[0, 1, 0] = np.isnan(values).sum()
        out[0, 1, 1] = np.isinf(values).sum()
    return out


# The passes of fit (column means, the PCA's products, the projection) run over blocks of this many
# rows at fixed positions (rows 0-1023, 1024-2047, ...), whatever the chunks of the input, and sums over
# cells add the blocks' results in a tree that depends only on their number. The baseline, the loadings
# and the projected input are then the same bit for bit for a matrix in memory and for any chunking of
# it on disk. (Per input chunk they differ in the last bits, since a BLAS product's rows depend on how
# many rows it multiplies at once; the randomised PCA amplifies that to float32 ulps of the loadings,
# and training to a different map.)
SUM_BLOCK_ROWS = 1024
# Above LARGE_ROWS rows (atlas scale), blocks of LARGE_SUM_BLOCK_ROWS: each block of the PCA's
# Xᵀ @ U pass returns genes × 60 float64 partial sums (0.9 MiB), which a distributed scheduler moves
# between worker processes, and each block is a task (about a millisecond of scheduling there).
# Measured at 300k cells × 2,000 genes from disk, 2 cores: one Xᵀ @ U pass 1.75 s on threads and
# 3.5-3.9 s on a 2-worker process LocalCluster with blocks of 1,024 rows; 1.3 s and 1.4-1.9 s with
# blocks of 8,192 (X @ V: 1.0 and 1.9-2.1 s against 0.6 and 0.8 s). The block size depends on the
# number of rows only, so any chunking still gives the same model; fits up to LARGE_ROWS rows are
# unchanged bit for bit.
LARGE_ROWS = 2**18
LARGE_SUM_BLOCK_ROWS = 8192


def sum_block_rows(n_rows: int) -> int:
    """Rows per fixed block for a matrix of ``n_rows`` rows (see :data:`SUM_BLOCK_ROWS` and :data:`LARGE_ROWS`)."""
    return SUM_BLOCK_ROWS if n_rows <= LARGE_ROWS else LARGE_SUM_BLOCK_ROWS


def fixed_row_blocks(X):
    """``X`` with row chunks of :func:`sum_block_rows` rows at fixed positions (views or merged chunks)."""
    size = sum_block_rows(X.shape[0])
    if all(c == size for c in X.chunks[0][:-1]) and X.chunks[0][-1] <= size:
        return X
    return X.rechunk({0: size})


def column_stats(X, *, name: str = "X", verbose: bool = False) -> np.ndarray:
    """Column means of ``X`` (float64) in one pass, raising for NaN or infinite values.

    Summed over fixed blocks of rows (:func:`sum_block_rows`), so the result
    does not depend on how ``X`` is chunked.
    """
    import dask.array as da

    X = fixed_row_blocks(X)

    per_chunk = da.map_blocks(
        _chunk_stats,
        X,
        chunks=((1,) * X.numblocks[0], (2,), (X.shape[1],)),
        new_axis=1,
        dtype=np.float64,
        meta=np.empty((0, 0, 0)),
    )
    (totals,) = compute(per_chunk.sum(axis=0), verbose=verbose)
    n_nan, n_inf = int(totals[1, 0]), int(totals[1, 1])
    if n_nan or n_inf:
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite value(s). Remove or impute them first "
            "(e.g. X.map_blocks(np.nan_to_num), or filter the affected cells/genes)."
        )
    return totals[0] / X.shape[0]


def shared(obj: Any):
    """``obj`` as one task of a Dask graph, for the per-chunk functions that all need it (a model, loadings).

    Under a distributed scheduler it is then sent once to each worker that
    needs it, instead of being pickled into every chunk's task.
    """
    import dask

    return dask.delayed(obj, pure=False, traverse=False)


def map_row_chunks(
    X, fn: Callable[..., np.ndarray], tail_shape: tuple[int, ...], dtype, *args: Any, rows_of: np.ndarray | None = None
) -> Any:
    """A lazy Dask array of ``fn(chunk, *args)`` for each row chunk of ``X``: ``(n_cells, *tail_shape)``.

    ``args`` (a model, loadings) go into the graph once (:func:`shared`), not
    into every chunk's task: ``fn`` should be a module-level function or a
    small closure. With ``rows_of`` (an in-memory array with one entry per
    cell, e.g. batch codes), ``fn`` also receives ``rows_of=`` the entries of
    the chunk's rows.
    """
    tail_chunks = tuple((int(s),) for s in tail_shape)
    extra = list(range(2, 1 + len(tail_shape)))
    options = dict(
        chunks=(X.chunks[0], *tail_chunks),
        new_axis=extra or None,
        dtype=dtype,
        meta=np.empty((0,) * (1 + len(tail_shape)), dtype=dtype),
    )
    if rows_of is None:
        return X.map_blocks(fn, *(shared(a) for a in args), **options)
    import dask.array as da

    aligned = da.from_array(np.asarray(rows_of)[:, None], chunks=(X.chunks[0], 1), name=False)
    return da.map_blocks(_with_rows, X, aligned, *(shared(a) for a in args), fn=fn, **options)


def _with_rows(chunk, values, *args, fn):
    return fn(chunk, *args, rows_of=np.asarray(values)[:, 0])


def scheduler_kind() -> str:
    """Which Dask scheduler a ``compute`` now would use, by where its tasks run.

    ``"shared"``: threads (the default for arrays) or the synchronous
    scheduler, in this process, so tasks may write into this process's
    arrays. ``"distributed"``: a ``distributed.Client`` (its workers, other
    processes or machines). ``"other"``: anything else (e.g. the
    ``"processes"`` scheduler), also running tasks in other processes.
    """
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    scheduler = get_scheduler()
    if scheduler is None or scheduler in (dask.threaded.get, dask.local.get_sync):
        return "shared"
    if type(getattr(scheduler, "__self__", None)).__name__ == "Client":
        return "distributed"
    return "other"


def _row_blocks(lazy) -> tuple[list, list[slice]]:
    """The row chunks of ``lazy`` as Delayed objects (its other axes merged into one chunk), and their rows."""
    if any(len(c) > 1 for c in lazy.chunks[1:]):
        lazy = lazy.rechunk({ax: -1 for ax in range(1, lazy.ndim)})
    blocks = list(lazy.to_delayed().reshape(lazy.numblocks[0]))
    bounds = np.cumsum((0, *lazy.chunks[0]))
    return blocks, [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def store_rows(
    sources,
    targets,
    *,
    also: tuple = (),
    lock: Any = False,
    on_workers: bool = False,
    verbose: bool = False,
    desc: str = "gbumap chunks",
) -> tuple:
    """Compute lazy row-chunked arrays into ``targets`` (row by row writable: NumPy, h5py, zarr), under any scheduler.

    ``sources`` and ``targets`` are one array each or lists of them (computed
    in one pass, sharing their reads); ``also`` are Dask collections computed
    in the same pass. Returns the computed ``also``.

    - threads (the default) or the synchronous scheduler: ``da.store``, each
      chunk written by the thread that computed it (``lock`` around writes),
      so no second full-size copy is made;
    - a distributed ``Client`` (a process ``LocalCluster``, a cluster of
      machines): each chunk's result comes back to this process as soon as
      it is computed and is written here, one chunk at a time, then released
      on the workers; the workers never write into this process's arrays
      (they would write into copies of them). With ``on_workers=True`` (a
      target the workers can open themselves, e.g. a zarr directory store
      with chunks aligned on the row chunks), the workers write it directly;
    - any other scheduler (e.g. ``"processes"``): the chunks are computed
      together, then written here.
    """
    import dask.array as da

    if not isinstance(sources, (list, tuple)):
        sources, targets = [sources], [targets]
    kind = scheduler_kind()
    if kind == "shared" or on_workers:
        stored = da.store(list(sources), list(targets), lock=lock if kind == "shared" else False, compute=False)
        return tuple(compute(stored, *also, verbose=verbose)[1:])
    places, blocks = [], []
    for t, source in enumerate(sources):
        delayed_blocks, rows = _row_blocks(source)
        blocks += delayed_blocks
        places += [(t, r) for r in rows]
    if kind == "distributed":
        return _gather_from_workers(blocks, places, targets, also, verbose, desc)
    values = compute(*blocks, *also, verbose=verbose)
    for (t, rows), value in zip(places, values):
        targets[t][rows] = value
    return tuple(values[len(blocks):])


def _gather_from_workers(blocks, places, targets, also, verbose: bool, desc: str) -> tuple:
    """Under a ``distributed.Client``: write each chunk's result here as it completes, releasing it there."""
    from dask.base import get_scheduler
    from distributed import as_completed

    from ._progress import progress_bar

    client = get_scheduler().__self__
    futures = client.compute([*blocks, *also])
    block_futures, also_futures = futures[: len(blocks)], futures[len(blocks):]
    where: dict = {}
    for future, place in zip(block_futures, places):
        where.setdefault(future.key, []).append(place)
    total = sum(rows.stop - rows.start for _, rows in places)
    try:
        with progress_bar(total, desc, verbose) as bar:
            for future, value in as_completed(block_futures, with_results=True):
                for t, rows in where.pop(future.key, ()):
                    targets[t][rows] = value
                    bar.update(rows.stop - rows.start)
                future.release()
        return tuple(client.gather(also_futures))
    except BaseException:
        client.cancel(futures)  # an error in one chunk: stop the others
        raise


def gather_rows(lazy, out: np.ndarray, *, verbose: bool = False) -> np.ndarray:
    """Compute a lazy row-chunked array into the preallocated ``out`` of this process, under any scheduler."""
    store_rows(lazy, out, verbose=verbose)
    return out


def _as_dtype(block: Any, dtype) -> Any:
    """``block`` with values of ``dtype`` (a sparse block keeps its index arrays, not copied)."""
    if sp.issparse(block):
        block = sp.csr_matrix(block)
        return sp.csr_matrix((block.data.astype(dtype, copy=False), block.indices, block.indptr), shape=block.shape)
    return np.asarray(block, dtype=dtype)


def _right(block: Any, V: np.ndarray) -> np.ndarray:
    # row-local sums: the same whatever the chunking, so the chunk's own dtype is enough
    return np.asarray(block @ V.astype(block.dtype, copy=False))


def _left(block: Any, U: np.ndarray) -> np.ndarray:
    # sums over the chunk's rows: in U's dtype, so that chunk boundaries change them only at its precision
    return np.asarray(_as_dtype(block, U.dtype).T @ U)[None]


def row_chunk_products(X, verbose: bool = False) -> tuple[Callable, Callable]:
    """``X @ V`` (into memory, ``n × q``) and ``Xᵀ @ U`` (``g × q``) as Dask passes over the row chunks.

    ``Xᵀ @ U`` casts each chunk to ``U``'s dtype first (one chunk at a time), so
    a float64 ``U`` gives float64 sums whatever ``X`` holds; ``X @ V`` sums
    within rows only and runs in ``X``'s dtype.
    """
    import dask.array as da

    blocks = fixed_row_blocks(X)  # the same blocks of rows whatever the input's chunks (see SUM_BLOCK_ROWS)

    def times(V: np.ndarray) -> np.ndarray:
        # row-local, yet a BLAS product's rows depend on how many rows it multiplies at once: fixed blocks too
        lazy = map_row_chunks(blocks, _right, (V.shape[1],), X.dtype, V)
        return gather_rows(lazy, np.empty((X.shape[0], V.shape[1]), dtype=V.dtype), verbose=verbose)

    def transpose_times(U: np.ndarray) -> np.ndarray:
        U_chunks = da.from_array(U, chunks=(blocks.chunks[0], U.shape[1]), name=False)
        parts = da.blockwise(
            _left, "ijk", blocks, "ij", U_chunks, "ik", adjust_chunks={"i": 1}, dtype=U.dtype,
            meta=np.empty((0, 0, 0), dtype=U.dtype),
        )
        (out,) = compute(parts.sum(axis=0), verbose=verbose)
        return out

    return times, transpose_times
