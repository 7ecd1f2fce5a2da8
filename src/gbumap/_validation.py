"""Input checks shared by the estimator and the AnnData layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = [
    "GroupLabels",
    "Matrix",
    "as_matrix",
    "check_batch_size",
    "check_finite",
    "check_int",
    "check_number",
    "looks_like_counts",
    "missing_key_error",
    "obs_column",
    "obs_groups",
]

Matrix = np.ndarray | sp.csr_matrix  # or, where documented, a Dask array of either (gbumap._dask)


def as_matrix(X: Any, *, name: str = "X", dtype: type = np.float32) -> Matrix:
    """Convert ``X`` to a float dense array or CSR matrix, without copying when possible.

    Accepts NumPy arrays, SciPy sparse matrices/arrays, torch tensors and
    pandas DataFrames. Raises a ``ValueError`` naming the problem for empty,
    non-2-D, non-numeric or non-finite input. A Dask array stays lazy: it is
    checked by :func:`gbumap._dask.check_dask_matrix`, and its values by the
    passes that read it.
    """
    from ._dask import check_dask_matrix, is_dask_array

    if is_dask_array(X):
        return check_dask_matrix(X, name=name, dtype=dtype)
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor
        X = X.detach().cpu()
        X = X.to_dense().numpy() if X.layout != _torch_strided() else X.numpy()
    elif hasattr(X, "to_numpy") and not sp.issparse(X):  # pandas
        X = X.to_numpy()
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.dtype != dtype:
            X = X.astype(dtype)
    else:
        X = np.asarray(X)
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"{name} must be numeric; got dtype {X.dtype}.")
        if X.dtype != dtype:
            X = X.astype(dtype)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells × features); got {X.ndim} dimension(s).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}. Provide at least one cell and one feature.")
    check_finite(X, name=name)
    return X


def _torch_strided():
    import torch

    return torch.strided


def check_finite(X: Matrix, *, name: str = "X") -> None:
    """Raise a ``ValueError`` that counts the NaN and infinite values in ``X``.

    The check runs over blocks of about 4M values, so its temporary memory
    does not grow with the size of ``X``.
    """
    values = X.data if sp.issparse(X) else X
    if _all_finite(values):
        return
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite value(s). Remove or impute them first "
        "(e.g. np.nan_to_num, or filter the affected cells/genes)."
    )


def check_int(
    value: Any,
    name: str,
    minimum: int | None = 1,
    *,
    maximum: int | None = None,
    optional: bool = False,
    words: str | None = None,
) -> int | None:
    """Return ``value`` as an ``int`` after checking it is an integer in ``[minimum, maximum]``.

    A ``minimum`` of ``None`` sets no lower bound. Booleans are refused, and
    so are floats (even integral ones). ``None``
    passes, and comes back, when ``optional``. The ``ValueError`` names the
    argument, the bound and the value: "n_top must be a positive integer; got
    0." ``words`` replaces how the message states what is wanted (default: "a
    positive integer" for a minimum of 1, "a non-negative integer" for 0, "an
    integer >= N" or "an integer from N to M" otherwise).
    """
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if words is None:
            if minimum is None:
                words = "an integer"
            elif maximum is not None:
                words = f"an integer from {minimum} to {maximum}"
            else:
                words = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {words}{' or None' if optional else ''}; got {value!r}.")
    return int(value)


def check_number(
    value: Any,
    name: str,
    minimum: float,
    *,
    strict: bool = False,
    maximum: float | None = None,
    words: str | None = None,
) -> float:
    """Return ``value`` as a ``float`` after checking it is a finite number above ``minimum``.

    ``strict`` refuses ``minimum`` itself; ``maximum`` (included) bounds it
    above. Booleans and non-numbers are refused. The ``ValueError`` names the
    argument, the bound and the value ("scale must be a finite number > 0;
    got 0."); ``words`` replaces how the message states what is wanted.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not np.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
        or (maximum is not None and value > maximum)
    ):
        if words is None:
            words = f"a finite number {'>' if strict else '>='} {minimum:g}"
            if maximum is not None:
                words += f" and <= {maximum:g}"
        raise ValueError(f"{name} must be {words}; got {value!r}.")
    return float(value)


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """Return ``batch_size`` as an ``int`` after checking it is a positive integer."""
    return check_int(batch_size, name)


def looks_like_counts(X: Matrix, *, n_rows: int = 1000, threshold: float = 50.0) -> float | None:
    """Whether ``X`` looks like raw counts: integer-valued with a maximum above ``threshold``.

    Only a sample of evenly spaced rows (at most ``n_rows``) is read, so the
    check costs next to nothing on large data. Returns the largest sampled
    value when the sample looks like counts, else ``None``. Negative values are
    not a sign of counts (scaled data are negative by design) and are ignored.
    """
    from ._dask import is_dask_array

    n = X.shape[0]
    if is_dask_array(X):  # evenly spaced rows would read every chunk: take the leading rows
        block = X[: min(n, n_rows)].compute()
    else:
        block = X[np.unique(np.linspace(0, n - 1, num=min(n, n_rows)).astype(np.int64))]
    values = block.data if sp.issparse(block) else np.asarray(block).ravel()
    if values.size == 0:
        return None
    top = float(values.max())
    if top <= threshold or not np.array_equal(values, np.round(values)):
        return None
    return top


_FINITE_BLOCK = 1 << 22


def _all_finite(values: np.ndarray) -> bool:
    if values.dtype.kind in "biu":
        return True
    if values.size <= _FINITE_BLOCK:
        return bool(np.isfinite(values).all())
    if values.ndim == 1:
        step = _FINITE_BLOCK
    else:
        step = max(1, _FINITE_BLOCK // max(int(np.prod(values.shape[1:])), 1))
    return all(np.isfinite(values[i : i + step]).all() for i in range(0, values.shape[0], step))


def missing_key_error(kind: str, key: str, existing) -> KeyError:
    """A ``KeyError`` naming ``key`` and listing the keys that exist (the first 30)."""
    names = sorted(map(str, existing))
    shown = ", ".join(repr(n) for n in names[:30]) or "none"
    more = f" (and {len(names) - 30} more)" if len(names) > 30 else ""
    return KeyError(f"{kind} {key!r} not found. Available {kind} keys: {shown}{more}.")


def obs_column(adata: AnnData, key: str, *, what: str = "obs column") -> pd.Series:
    """``adata.obs[key]``; a ``KeyError`` listing the columns that exist when it is missing."""
    if key not in adata.obs.columns:
        raise missing_key_error(what, key, adata.obs.columns)
    return adata.obs[key]


@dataclass(frozen=True)
class GroupLabels:
    """The groups of cells an ``obs`` column defines, and the ones a tool works on.

    ``categories`` are all the column's groups that have cells, as strings, in
    the column's category order (sorted values for a column that is not
    categorical); ``names`` the groups chosen, in the order asked.
    """

    groupby: str
    categories: list[str]
    codes: np.ndarray  # per cell, the position of its group in ``categories`` (-1: no label)
    names: list[str]
    sizes: np.ndarray  # cells in each group of ``names``

    @property
    def name_codes(self) -> np.ndarray:
        """The position of each chosen group in ``categories``."""
        return np.array([self.categories.index(g) for g in self.names], dtype=np.int64)

    @property
    def group_of(self) -> np.ndarray:
        """Per cell, the position of its group in ``names`` (-1: no label, or a group not chosen)."""
        lookup = np.full(len(self.categories) + 1, -1)
        lookup[self.name_codes] = np.arange(len(self.names))
        return lookup[self.codes]  # code -1 reads the last entry, -1

    @property
    def labelled(self) -> np.ndarray:
        """Rows of the cells with a label."""
        return np.flatnonzero(self.codes >= 0)

    @property
    def labels(self) -> np.ndarray:
        """Every cell's group name (``None`` without a label), an object array."""
        out = np.full(len(self.codes), None, dtype=object)
        out[self.codes >= 0] = np.asarray(self.categories, dtype=object)[self.codes[self.codes >= 0]]
        return out

    def rows(self, name: str) -> np.ndarray:
        """Rows of the cells in group ``name``."""
        return np.flatnonzero(self.codes == self.categories.index(name))


def obs_groups(
    adata: AnnData,
    groupby: str,
    groups: str | Sequence[str] | None = None,
    *,
    min_groups: int = 1,
    min_cells: int = 1,
    purpose: str = "",
    what: str = "groups",
) -> GroupLabels:
    """Check ``obs[groupby]`` as cell groups and the ``groups`` asked of it; one helper for every tool.

    Raises, naming the problem and the fix, before anything is computed:
    ``KeyError`` when the column is missing (listing the columns) or a group
    asked is not among its groups (listing them); ``ValueError`` when the
    column has fewer than ``min_groups`` groups with cells, when ``groups``
    is empty or names a group twice, or when a chosen group has fewer than
    ``min_cells`` cells. ``purpose`` completes the last message (why the
    tool needs that many cells). Group names are compared as strings, as
    results store them.

    Parameters
    ----------
    adata
        The AnnData.
    groupby
        The ``obs`` column; categorical, or any column that converts to one
        (strings, integers, booleans). Cells without a label (NaN) are in no group.
    groups
        A group, several, or ``None`` for every group with cells.
    min_groups
        Fewest groups with cells the column must have.
    min_cells
        Fewest cells each chosen group must have.
    purpose
        Appended to the error on too small groups.
    what
        The argument's name in messages (``"groups"``, ``"group"``).

    Returns
    -------
    GroupLabels
    """
    labels = obs_column(adata, groupby)
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype("category")
    all_categories = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy()
    counts = np.bincount(codes[codes >= 0], minlength=len(all_categories))
    present = np.flatnonzero(counts)
    remap = np.full(len(all_categories) + 1, -1)
    remap[present] = np.arange(len(present))
    categories = [all_categories[c] for c in present]
    codes = remap[codes]  # code -1 (no label) reads the last entry, -1
    if len(categories) < min_groups:
        only = f"({categories[0]!r})" if categories else "(no labelled cells)"
        if min_groups == 2 and categories:
            raise ValueError(
                f"obs[{groupby!r}] has a single group among its cells {only}; groups are explained against "
                "each other, so it needs at least two groups."
            )
        raise ValueError(f"obs[{groupby!r}] has {len(categories)} group(s) among its cells {only}; at least "
                         f"{min_groups} needed. Choose a column that labels the cells.")
    if groups is None:
        names = list(categories)
    else:
        names = [groups] if isinstance(groups, str) else [str(g) for g in groups]
        if not names:
            raise ValueError(f"{what} is empty; name at least one group of obs[{groupby!r}].")
        if len(set(names)) != len(names):
            twice = sorted({g for g in names if names.count(g) > 1})
            raise ValueError(f"{what} names {twice} more than once; name each group once.")
        unknown = [g for g in names if g not in categories]
        if unknown:
            raise KeyError(f"Groups {unknown} are not among the groups of obs[{groupby!r}]: {categories}.")
    sizes = np.bincount(codes[codes >= 0], minlength=len(categories))[[categories.index(g) for g in names]]
    small = [g for g, n in zip(names, sizes) if n < min_cells]
    if small:
        counted = ", ".join(f"{g!r}: {int(n)}" for g, n in zip(names, sizes) if n < min_cells)
        raise ValueError(f"Groups {small} have fewer than {min_cells} cells ({counted}){purpose}.")
    return GroupLabels(groupby, categories, codes, names, sizes)
