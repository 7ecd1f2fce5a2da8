"""Model registries from untrusted files: nothing is unpickled or executed, damage is refused clearly.

A ``.h5ad`` file can come from anywhere. Loading a gbumap model from it must
never unpickle or run code from the file, and any tampering — wrong shapes or
dtypes, strings or pickled bytes where weights belong, extra or missing fields,
NaN weights, an unknown format version, absurd sizes — must end in a
``RegistryError`` (a ``ValueError``) that names the field, before any large
allocation.
"""

from __future__ import annotations

import copy
import pickle
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

import gbumap
from gbumap._registry import RegistryError

W0 = "uns/gbumap/encoder/state/linears__0__weight"
N_CELLS, N_GENES = 100, 30


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.log1p(rng.poisson(1.5, (N_CELLS, N_GENES))).astype(np.float32))
    adata.obs_names = [f"c{i}" for i in range(N_CELLS)]
    adata.var_names = [f"g{j}" for j in range(N_GENES)]
    adata.obs["group"] = pd.Categorical(np.where(np.arange(N_CELLS) % 2, "x", "y"))
    gbumap.tl.glassbox_umap(adata, n_steps=10, batch_size=256, n_neighbors=10, verbose=False)
    path = tmp_path_factory.mktemp("ref") / "ref.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def query():
    rng = np.random.default_rng(1)
    q = ad.AnnData(np.log1p(rng.poisson(1.5, (20, N_GENES))).astype(np.float32))
    q.var_names = [f"g{j}" for j in range(N_GENES)]
    return q


class _Evil:
    """Unpickling this creates ``marker``: proof that a payload would have run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> bytes:
    return pickle.dumps(_Evil(marker))


def _replace(f: h5py.File, path: str, data, encoding: str, **kwargs) -> None:
    del f[path]
    ds = f.create_dataset(path, data=data, **kwargs)
    ds.attrs["encoding-type"] = encoding
    ds.attrs["encoding-version"] = "0.2.0"


def _crafted(reference: Path, tmp_path: Path, edit) -> Path:
    path = tmp_path / "crafted.h5ad"
    shutil.copy(reference, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


# ---------------------------------------------------------------- nothing is unpickled
@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickling entry point (pickle, torch.load, numpy's pickle path) fail loudly."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("gbumap tried to unpickle data")

    class Refuser(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refuser)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)


def test_loading_a_file_never_unpickles(reference, query, no_unpickling):
    back = ad.read_h5ad(reference)
    model = gbumap.get.model(back)
    np.testing.assert_allclose(model.transform(back.X), back.obsm["X_gbumap"], atol=1e-5)
    assert gbumap.get.reconstruction_error(back)["max_rel"] < 1e-4
    assert gbumap.get.contributions(back, genes=["g1", "g2"], reduction="l2").shape == (N_CELLS, 2)
    gbumap.tl.transform(query, back)
    gbumap.tl.transform(query, ad.read_h5ad(reference).uns["gbumap"], key_added="from_registry")
    np.testing.assert_array_equal(query.obsm["X_gbumap"], query.obsm["X_from_registry"])


def test_registry_holds_only_plain_values(reference):
    """Every leaf of the stored registry is a number, string, or numeric/string array."""

    def leaves(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{prefix}/{k}")
        else:
            yield prefix, node

    reg = ad.read_h5ad(reference).uns["gbumap"]
    for name, value in leaves(reg):
        arr = np.asarray(value)
        assert arr.dtype.kind in "biufU" or (arr.dtype == object and all(isinstance(v, str) for v in arr.ravel())), (
            name,
            arr.dtype,
        )


# ---------------------------------------------------------------- crafted files (edited with h5py)
CRAFTED = {
    "weights_as_strings": (
        lambda f, m: _replace(f, W0, np.array(["0.1"] * N_GENES, dtype=object), "string-array",
                              dtype=h5py.string_dtype()),
        r"'encoder/state/linears__0__weight' must be a numeric array; got dtype object",
    ),
    "weights_as_pickled_bytes": (
        lambda f, m: _replace(f, W0, np.array([_payload(m)]), "array"),
        r"'encoder/state/linears__0__weight' must be a numeric array; got dtype \|S",
    ),
    "weights_as_opaque_pickle": (
        lambda f, m: _replace(f, W0, np.void(_payload(m)), "array"),
        r"'encoder/state/linears__0__weight' must be a numeric array; got dtype \|V",
    ),
    "encoder_state_replaced_by_pickle": (
        lambda f, m: _replace(f, "uns/gbumap/encoder/state", np.void(_payload(m)), "array"),
        r"'encoder/state' must be a mapping of arrays",
    ),
    "weights_wrong_shape": (
        lambda f, m: _replace(f, W0, np.zeros((128, N_GENES + 1), np.float32), "array"),
        r"need .* weights but the file stores|must have shape \(128, 30\)",
    ),
    "weights_transposed": (
        lambda f, m: _replace(f, W0, np.zeros((N_GENES, 128), np.float32), "array"),
        r"'encoder/state/linears__0__weight' must have shape \(128, 30\); got \(30, 128\)",
    ),
    "nan_weight": (
        lambda f, m: f[W0].__setitem__((0, 0), np.nan),
        r"'encoder/state/linears__0__weight' contains NaN or infinite values",
    ),
    "inf_baseline": (
        lambda f, m: f["uns/gbumap/projection/baseline"].__setitem__(0, np.inf),
        r"'baseline' contains NaN or infinite values",
    ),
    "extra_encoder_weight": (
        lambda f, m: _replace_new(f, "uns/gbumap/encoder/state/backdoor__weight", np.zeros((2, 2), np.float32)),
        r"unexpected weights: backdoor__weight",
    ),
    "missing_weight": (
        lambda f, m: f.__delitem__("uns/gbumap/encoder/state/linears__3__weight"),
        r"need .* weights but the file stores|lack 'linears\.3\.weight'",
    ),
    "missing_baseline": (
        lambda f, m: f.__delitem__("uns/gbumap/projection/baseline"),
        r"missing the field 'projection/baseline'",
    ),
    "missing_params": (
        lambda f, m: f.__delitem__("uns/gbumap/params"),
        r"missing the field 'params'",
    ),
    "unknown_format_version": (
        lambda f, m: _replace(f, "uns/gbumap/format_version", np.int64(4), "numeric-scalar"),
        r"registry format 4; this gbumap reads formats 1, 2, 3",
    ),
    "format_version_as_string": (
        lambda f, m: _replace(f, "uns/gbumap/format_version", "1", "string", dtype=h5py.string_dtype()),
        r"'format_version' must be an integer",
    ),
    "huge_n_features": (
        lambda f, m: _replace(f, "uns/gbumap/n_features", np.int64(10**12), "numeric-scalar"),
        r"'baseline' must have shape \(1000000000000,\); got \(30,\)",
    ),
    "huge_hidden_layer": (
        lambda f, m: f["uns/gbumap/encoder/hidden"].__setitem__(0, 10**9),
        r"widths \[30, 1000000000, 128, 128, 128, 2\] need \d+ weights but the file stores \d+",
    ),
    "negative_hidden_layer": (
        lambda f, m: f["uns/gbumap/encoder/hidden"].__setitem__(0, -5),
        r"widths \[30, -5, 128, 128, 128, 2\]",
    ),
    "n_inputs_mismatch": (
        lambda f, m: _replace(f, "uns/gbumap/encoder/n_inputs", np.int64(31), "numeric-scalar"),
        r"encoder maps 31 → 2 but the projection gives 30 inputs",
    ),
    "activation_is_python_code": (
        lambda f, m: _replace(
            f, "uns/gbumap/encoder/activation", f"open({str(m)!r}, 'w')", "string", dtype=h5py.string_dtype()
        ),
        r"Unknown encoder activation \"open\(",
    ),
    "custom_encoder_class_name_is_code": (
        lambda f, m: (
            _replace(f, "uns/gbumap/encoder/kind", "custom", "string", dtype=h5py.string_dtype()),
            _replace_new(f, "uns/gbumap/encoder/class_name", f"__import__('os').system('touch {m}')",
                         dtype=h5py.string_dtype(), encoding="string"),
        ),
        r"custom encoder .*pass an untrained instance of it as encoder=.*code is never read from the file",
    ),
    "unknown_encoder_kind": (
        lambda f, m: _replace(f, "uns/gbumap/encoder/kind", "torchscript", "string", dtype=h5py.string_dtype()),
        r"Unknown encoder kind 'torchscript'",
    ),
    "invalid_dtype_param": (
        lambda f, m: _replace(f, "uns/gbumap/params/dtype", "float16", "string", dtype=h5py.string_dtype()),
        r"Registry parameters are invalid: dtype must be 'float32' or 'float64'",
    ),
    "n_components_as_float": (
        lambda f, m: _replace(f, "uns/gbumap/params/n_components", np.float64(2.5), "numeric-scalar"),
        r"'n_components' must be an integer; got 2\.5",
    ),
}


def _replace_new(f, path, data, encoding="array", **kwargs):
    ds = f.create_dataset(path, data=data, **kwargs)
    ds.attrs["encoding-type"] = encoding
    ds.attrs["encoding-version"] = "0.2.0"


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_file_is_refused(name, reference, query, tmp_path, no_unpickling):
    edit, match = CRAFTED[name]
    marker = tmp_path / "MARKER"
    path = _crafted(reference, tmp_path, lambda f: edit(f, marker))
    back = ad.read_h5ad(path)
    with pytest.raises(RegistryError, match=match):
        gbumap.get.model(back)
    with pytest.raises(RegistryError, match=match):
        gbumap.tl.transform(query, back)
    with pytest.raises(RegistryError, match=match):
        gbumap.get.contributions(back, genes="g0")
    assert "X_gbumap" not in query.obsm  # the failed transform wrote nothing
    assert not marker.exists()


def test_pickle_payload_is_live_but_never_run(reference, query, tmp_path):
    """The payload used above really would create the marker if anything unpickled it."""
    probe = tmp_path / "probe_marker"
    pickle.loads(_payload(probe)).close()
    assert probe.exists()  # so the payload is live

    marker = tmp_path / "MARKER"
    path = _crafted(reference, tmp_path, lambda f: _replace(f, W0, np.void(_payload(marker)), "array"))
    back = ad.read_h5ad(path)
    for call in (lambda: gbumap.get.model(back), lambda: gbumap.tl.transform(query, back)):
        with pytest.raises(RegistryError):
            call()
    assert not marker.exists()


def test_pickle_encoding_in_file_is_not_read(reference, tmp_path):
    """A group claiming anndata's (unsupported) 'pickle' encoding is refused by the reader itself."""
    marker = tmp_path / "MARKER"

    def edit(f):
        del f["uns/gbumap"]
        ds = f.create_dataset("uns/gbumap", data=np.void(_payload(marker)))
        ds.attrs["encoding-type"] = "pickle"
        ds.attrs["encoding-version"] = "0.1.0"

    path = _crafted(reference, tmp_path, edit)
    with pytest.raises(Exception):  # noqa: B017 (any refusal will do; what matters is that nothing ran)
        back = ad.read_h5ad(path)
        gbumap.get.model(back)
    assert not marker.exists()


# ---------------------------------------------------------------- registries edited in memory before writing
def _set(path: str, value):
    def edit(reg):
        node = reg
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[p]
        node[leaf] = value(node[leaf]) if callable(value) else value

    return edit


def _delete(path: str):
    def edit(reg):
        node = reg
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[p]
        del node[leaf]

    return edit


IN_MEMORY = {
    "object_array_weights": (
        _set("encoder/state/linears__0__weight", lambda w: w.astype(object)),
        r"must be a numeric array; got dtype object",
    ),
    "string_weights": (
        _set("encoder/state/linears__1__weight", lambda w: w.astype(str)),
        r"'encoder/state/linears__1__weight' must be a numeric array; got dtype <U",
    ),
    "list_of_mixed_objects": (
        _set("projection/baseline", lambda b: [1.0, "os.system('x')"] + [0.0] * (len(b) - 2)),
        r"'baseline' must be a numeric array",
    ),
    "extra_key_in_state": (
        _set("encoder/state/extra__bias", np.zeros(3, np.float32)),
        r"unexpected weights: extra__bias",
    ),
    "missing_training": (_delete("training"), r"missing the field 'training'"),
    "missing_umap_curve_b": (_delete("umap_curve/b"), r"missing the field 'umap_curve/b'"),
    "nan_weights": (
        _set("encoder/state/linears__2__weight", lambda w: np.full_like(w, np.nan)),
        r"'encoder/state/linears__2__weight' contains NaN",
    ),
    "params_not_a_mapping": (_set("params", "n_neighbors=15"), r"'params' must be a mapping"),
    "format_version_float": (_set("format_version", 1.0), r"'format_version' must be an integer"),
    "registry_without_format_version": (
        lambda reg: reg.clear() or reg.update(weights="nonsense"),
        r"has no 'format_version'; it is not a gbumap model registry",
    ),
}


@pytest.mark.parametrize("name", list(IN_MEMORY))
def test_edited_registry_is_refused(name, reference, no_unpickling):
    edit, match = IN_MEMORY[name]
    adata = ad.read_h5ad(reference)
    reg = copy.deepcopy(dict(adata.uns["gbumap"]))
    edit(reg)
    adata.uns["gbumap"] = reg
    with pytest.raises(RegistryError, match=match):
        gbumap.get.model(adata)


def test_non_mapping_registry(reference):
    adata = ad.read_h5ad(reference)
    adata.uns["gbumap"] = np.arange(3)
    with pytest.raises(RegistryError, match=r"uns\['gbumap'\] is a ndarray, not a gbumap model registry"):
        gbumap.get.model(adata)


def test_huge_hidden_layer_fails_before_allocating(reference):
    """A crafted width of 10**12 would need terabytes; the check fires on the stored sizes first."""
    import tracemalloc

    adata = ad.read_h5ad(reference)
    reg = copy.deepcopy(dict(adata.uns["gbumap"]))
    reg["encoder"]["hidden"] = np.array([10**12, 128, 128])
    adata.uns["gbumap"] = reg
    tracemalloc.start()
    try:
        with pytest.raises(RegistryError, match=r"need \d+ weights"):
            gbumap.get.model(adata)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
