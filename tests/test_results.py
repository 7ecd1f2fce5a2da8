"""Result blocks in ``uns``: one writer, one finder, a kind and a version on each, and no overwritten model.

``tests/data/result_blocks_v0.h5ad`` holds one block of every kind, written
by gbumap before blocks carried a tag (``tests/data/make_result_blocks.py``,
the code at e99dd7b). Today's readers must read every one of them, and
today's writers, run again on the same data and models, must give the same
answers.
"""

from __future__ import annotations

import ast
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from _adata_snapshot import assert_unchanged, snapshot

import gbumap
from gbumap._results import KINDS, TAG, Result, block_kind, block_version, find_result, write_result
from gbumap._validation import obs_groups

matplotlib.use("Agg")

DATA = Path(__file__).parent / "data"
SRC = Path(gbumap.__file__).parent
sys.path.insert(0, str(DATA))
import make_result_blocks as stored_blocks  # noqa: E402 - the script that wrote the stored file

#: The kind of every block in the stored file.
STORED = {
    "rank_features_gbumap": "rank_features",
    "contrast_gbumap": "contrast",
    "perturb_gbumap": "perturb",
    "rank_knockouts_gbumap": "rank_knockouts",
    "gene_sets_gbumap": "gene_sets",
    "gene_sets_nogroups": "gene_sets",
    "modules_bilinear": "interaction_modules",
    "gbumap_quality": "quality",
    "randomization_gbumap": "randomization",
    "stability_gbumap": "stability",
    "stability_nogroups": "stability",
}


@pytest.fixture(scope="module")
def stored():
    return ad.read_h5ad(stored_blocks.OUT)


@pytest.fixture(scope="module")
def rewritten(stored):
    """The stored AnnData with every block written again by today's code, under ``"new_" + key``."""
    adata = stored.copy()
    sets = gbumap.read_gmt(DATA / "small.gmt")
    calls = {
        "rank_features_gbumap": lambda k: gbumap.tl.rank_features(adata, "bulk_labels", key_added=k),
        "contrast_gbumap": lambda k: gbumap.tl.contrast(
            adata, "bulk_labels", "CD14+ Monocyte", reference="CD19+ B", key_added=k
        ),
        "perturb_gbumap": lambda k: gbumap.tl.perturb(
            adata, ["LYZ", "CST3"], value=0, groupby="bulk_labels", key_added=k
        ),
        "rank_knockouts_gbumap": lambda k: gbumap.tl.rank_knockouts(adata, "bulk_labels", n_exact=3, key_added=k),
        "gene_sets_gbumap": lambda k: gbumap.tl.gene_set_contributions(
            adata, sets, groupby="bulk_labels", n_top=20, key_added=k
        ),
        "gene_sets_nogroups": lambda k: gbumap.tl.gene_set_contributions(adata, sets, key_added=k),
        "modules_bilinear": lambda k: gbumap.tl.interaction_modules(adata, 3, key="bilinear", key_added=k),
        "gbumap_quality": lambda k: gbumap.tl.quality(
            adata, ["gbumap", "umap"], groupby="bulk_labels", continuous="n_counts", key_added=k
        ),
        "randomization_gbumap": lambda k: gbumap.tl.randomization_check(
            adata, "bulk_labels", n_randomizations=2, key_added=k
        ),
        "stability_gbumap": lambda k: gbumap.tl.stability(
            adata, 2, groupby="bulk_labels", n_top=10, verbose=False, key_added=k
        ),
        "stability_nogroups": lambda k: gbumap.tl.stability(adata, 2, verbose=False, key_added=k),
    }
    assert set(calls) == set(STORED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small groups of the slice
        for key, call in calls.items():
            call(f"new_{key}")
    return adata


#: Fields that measure float rounding (a reconstruction gap): equal in order of magnitude, not in value.
ROUNDING_FIELDS = ("reconstruction_gap",)
#: Kinds whose writer trains new models: their numbers repeat only where training rounds as it did when the
#: stored file was written (the same BLAS kernels, and bf16 products where the writer's CPU had them).
TRAINED_KINDS = ("stability",)


def _assert_same(old, new, path: str) -> None:
    """Equal blocks: the same fields, names and strings equal, numbers equal to float rounding."""
    if isinstance(old, Mapping):
        assert set(old) == set(new) - {TAG}, (path, set(old) ^ (set(new) - {TAG}))
        for field in old:
            if field in ROUNDING_FIELDS:
                _assert_rounding(old[field], new[field], f"{path}/{field}")
            elif field != "timings":  # seconds differ from run to run
                _assert_same(old[field], new[field], f"{path}/{field}")
        return
    if isinstance(old, pd.DataFrame):
        pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-5, obj=path)
        return
    if isinstance(old, pd.Series):
        pd.testing.assert_series_equal(old, new, check_exact=False, rtol=1e-5, obj=path)
        return
    old, new = np.asarray(old), np.asarray(new)
    if old.dtype.names:
        assert old.dtype.names == new.dtype.names, path
        for name in old.dtype.names:
            _assert_same(old[name], new[name], f"{path}[{name}]")
        return
    assert old.shape == new.shape, (path, old.shape, new.shape)
    if old.dtype.kind in "fc":
        scale = float(np.nanmax(np.abs(old))) if old.size and np.isfinite(old).any() else 1.0
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-6 * scale, err_msg=path)
    else:
        np.testing.assert_array_equal(new.astype(str), old.astype(str), err_msg=path)


def _assert_rounding(old, new, path: str) -> None:
    """A rounding measure: as small as the stored one, within a factor 10 (rounding differs between CPUs)."""
    if isinstance(old, Mapping):
        assert set(old) == set(new), path
        for field in old:
            _assert_rounding(old[field], new[field], f"{path}/{field}")
        return
    old, new = np.abs(np.asarray(old, dtype=float)), np.abs(np.asarray(new, dtype=float))
    assert old.shape == new.shape, path
    assert np.all(new <= np.maximum(10 * old, 1e-12)), (path, new, old)


def _assert_same_layout(old, new, path: str) -> None:
    """The same fields, shapes and kinds of value, whatever the values."""
    if isinstance(old, Mapping):
        assert set(old) == set(new) - {TAG}, (path, set(old) ^ (set(new) - {TAG}))
        for field in old:
            _assert_same_layout(old[field], new[field], f"{path}/{field}")
        return
    old, new = np.asarray(old), np.asarray(new)
    assert old.shape == new.shape and old.dtype.kind == new.dtype.kind, (path, old.shape, new.shape)
    assert old.dtype.names == new.dtype.names, path


def _trains_as_recorded(old: Mapping, new: Mapping) -> bool:
    """Whether this machine's training repeats the stored runs' losses to float rounding."""
    runs = old["models"]
    return all(
        np.allclose(np.asarray(new["models"][run]["loss"]), np.asarray(runs[run]["loss"]), rtol=1e-5, atol=0)
        for run in runs
    )


# ------------------------------------------------------------------------ blocks written before the tags
def test_the_stored_file_holds_every_kind_untagged(stored):
    assert set(STORED.values()) == set(KINDS), "the stored file must hold a block of every kind"
    assert stored_blocks.OUT.stat().st_size < 1_000_000
    for key, kind in STORED.items():
        block = stored.uns[key]
        assert TAG not in block and block_version(block) == 0
        assert block_kind(block) == kind, key
    assert block_kind(stored.uns["gbumap"]) == "model" and block_kind(stored.uns["bilinear"]) == "model"
    assert block_kind({"names": np.zeros(2)}) is None  # another tool's entry: not gbumap's


def test_every_stored_block_reads_as_before(stored):
    for key in ("rank_features_gbumap", "contrast_gbumap", "rank_knockouts_gbumap", "gene_sets_gbumap",
                "stability_gbumap"):
        table = gbumap.get.rank_features_df(stored, key=key)
        assert len(table) and table["names"].notna().all()
    assert list(gbumap.get.quality(stored).index) == ["X_gbumap", "X_umap"]
    for key in ("gene_sets_gbumap", "gene_sets_nogroups"):
        scores = gbumap.get.gene_set_scores(stored, key)
        assert scores.shape == (stored.n_obs, len(stored.uns[key]["sets"]))
    for key in ("stability_gbumap", "stability_nogroups"):
        (model,) = gbumap.get.stability_models(stored, key)
        assert model.random_state == int(stored.uns[key]["seeds"][0])
    along = gbumap.get.oriented_contributions(stored, "LYZ", frame="contrast")
    assert along.shape == (stored.n_obs, 1)
    assert find_result(stored, "randomization_gbumap", "randomization")["per_group"].shape[0] == 4
    assert find_result(stored, "perturb_gbumap", "perturb")["n_cells"] == stored.n_obs
    before = snapshot(stored)
    gbumap.pl.contrast(stored, show=False)
    gbumap.pl.stability(stored, "CD14+ Monocyte", show=False)
    gbumap.pl.perturbation(stored, show=False)
    gbumap.pl.interaction_modules(stored, 2, key="modules_bilinear", show=False)
    gbumap.pl.rank_features(stored, "bulk_labels", n_genes=3, show=False)
    assert_unchanged(stored, before)
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("key", list(STORED))
def test_todays_writers_give_the_stored_answers_and_tag_them(stored, rewritten, key):
    new = rewritten.uns[f"new_{key}"]
    kind = STORED[key]
    assert new[TAG] == {"kind": kind, "version": KINDS[kind].version}
    assert block_kind(new) == kind and block_version(new) == KINDS[kind].version
    if kind in TRAINED_KINDS and not _trains_as_recorded(stored.uns[key], new):
        _assert_same_layout(stored.uns[key], new, key)
        _assert_same(stored.uns[key]["params"], new["params"], f"{key}/params")
        np.testing.assert_array_equal(new["seeds"], stored.uns[key]["seeds"])
        pytest.skip(
            f"{key}: this CPU trains the runs differently from the machine that wrote the stored file "
            "(BLAS kernels or bf16 products), so only the block's layout, parameters and seeds can match"
        )
    _assert_same(stored.uns[key], new, key)
    spec = KINDS[kind]
    # per-cell values are positions or moves on the map: equal to the float rounding of the map's coordinates
    atol = 1e-6 * float(np.abs(stored.obsm["X_gbumap"]).max())
    for template in spec.obsm:
        if "{view}" in template:
            continue
        name = template.format(key_added=key)
        np.testing.assert_allclose(rewritten.obsm[f"new_{name}"], stored.obsm[name], rtol=1e-5, atol=atol)
    for template in spec.obs:
        name = template.format(key_added=key)
        if name in stored.obs:
            np.testing.assert_allclose(rewritten.obs[f"new_{name}"], stored.obs[name], rtol=1e-5, atol=atol)
    if "names" in new:  # the finder gives the same table for the old and the new block
        old_table = gbumap.get.rank_features_df(stored, key=key)
        new_table = gbumap.get.rank_features_df(rewritten, key=f"new_{key}")
        pd.testing.assert_frame_equal(old_table, new_table, check_exact=False, rtol=1e-5)


def test_tagged_blocks_round_trip_and_scanpy_reads_the_rankings(rewritten, tmp_path):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Writing zarr v2", category=UserWarning)
        rewritten.write_h5ad(tmp_path / "a.h5ad")
        rewritten.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        for key, kind in STORED.items():
            assert block_kind(back.uns[f"new_{key}"]) == kind and block_version(back.uns[f"new_{key}"]) == 1
        ours = gbumap.get.rank_features_df(back, "CD19+ B", key="new_rank_features_gbumap")
        theirs = sc.get.rank_genes_groups_df(back, "CD19+ B", key="new_rank_features_gbumap")
        assert list(theirs["names"]) == list(ours["names"])
        np.testing.assert_allclose(theirs["pvals_adj"], ours["pvals_adj"])


# ------------------------------------------------------------------------ the overwrite guard
def test_a_result_never_replaces_the_model(pbmc_fitted):
    before = snapshot(pbmc_fitted)
    with pytest.raises(ValueError, match=r"uns\['gbumap'\] holds a gbumap model.*key_added=.*rank_features_"):
        gbumap.tl.rank_features(pbmc_fitted, "bulk_labels", key_added="gbumap")
    with pytest.raises(ValueError, match=r"obsm\['X_gbumap'\] belongs to the gbumap model"):
        gbumap.tl.perturb(pbmc_fitted, "LYZ", key_added="X_gbumap")
    with pytest.raises(ValueError, match=r"uns\['gbumap'\] holds a gbumap model"):
        gbumap.tl.quality(pbmc_fitted, "gbumap", key_added="gbumap")
    assert_unchanged(pbmc_fitted, before)
    assert gbumap.get.model(pbmc_fitted).n_components == 2


def test_a_result_never_replaces_another_kind_but_replaces_its_own(pbmc_fitted):
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", "CD14+ Monocyte", key_added="mine")
    before = snapshot(pbmc_fitted)
    with pytest.raises(ValueError, match=r"uns\['mine'\] holds a contrast \(gbumap.tl.contrast\).*delete"):
        gbumap.tl.rank_features(pbmc_fitted, "bulk_labels", key_added="mine")
    with pytest.raises(ValueError, match=r"holds a ranking \(gbumap.tl.rank_features\)"):
        gbumap.tl.contrast(pbmc_fitted, "bulk_labels", "CD19+ B", key_added="rank_features_gbumap")
    assert_unchanged(pbmc_fitted, before)
    gbumap.tl.contrast(pbmc_fitted, "bulk_labels", "CD19+ B", key_added="mine")  # the same kind: rerun
    assert gbumap.get.rank_features_df(pbmc_fitted, key="mine")["names"].notna().all()
    pbmc_fitted.uns["theirs"] = {"note": "a user's entry"}  # gbumap did not write it: replaced, as scanpy does
    gbumap.tl.rank_features(pbmc_fitted, "bulk_labels", key_added="theirs", n_genes=3)
    assert block_kind(pbmc_fitted.uns["theirs"]) == "rank_features"


def test_the_finder_names_what_it_found_and_refuses_newer_blocks(rewritten):
    with pytest.raises(ValueError, match=r"holds a quality result \(gbumap.tl.quality\), not a ranking"):
        gbumap.get.rank_features_df(rewritten, key="new_gbumap_quality")
    with pytest.raises(KeyError, match=r"No contrast under uns\['absent'\].*here: 'contrast_gbumap', "):
        gbumap.pl.contrast(rewritten, key="absent")
    adata = rewritten.copy()
    adata.uns["new_contrast_gbumap"][TAG] = {"kind": "contrast", "version": 99}
    with pytest.raises(ValueError, match="version 99, written by a newer gbumap"):
        gbumap.get.rank_features_df(adata, key="new_contrast_gbumap")


def test_results_are_checked_against_their_kind_when_built():
    with pytest.raises(RuntimeError, match="missing"):
        Result("contrast", {"params": {}})
    with pytest.raises(RuntimeError, match="unknown"):
        Result("randomization", {"params": {}, "per_group": None, "summary": {}, "extra": 1})


def test_copy_writes_into_a_copy_only(stored):
    adata = stored.copy()
    before = snapshot(adata)
    out = write_result(adata, "extra", Result("quality", {"params": {"basis": []}}), copy=True)
    assert_unchanged(adata, before)
    assert block_kind(out.uns["extra"]) == "quality"


# ------------------------------------------------------------------------ one writer, documented kinds
def _writer_calls(path: Path) -> tuple[set[str], list[int]]:
    """Kinds passed to ``Result(...)`` in a module, and the lines that assign into ``.uns[...]``."""
    tree = ast.parse(path.read_text())
    kinds, assigned = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Result" and node.args:
            if isinstance(node.args[0], ast.Constant):
                kinds.add(node.args[0].value)
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and getattr(target.value, "attr", None) == "uns":
                    assigned.append(node.lineno)
    return kinds, assigned


def test_every_kind_is_written_through_the_one_writer():
    written = set()
    for path in sorted((SRC / "tl").glob("*.py")):
        kinds, assigned = _writer_calls(path)
        written |= kinds
        if path.name not in ("_fit.py", "_contributions.py", "_transform.py", "_pipeline.py"):  # the model's own
            assert not assigned, f"{path.name} writes uns at lines {assigned}; use gbumap._results.write_result"
    assert written == set(KINDS)


def test_the_anndata_page_lists_every_kind_its_version_and_fields():
    page = (SRC.parents[1] / "docs" / "anndata.md").read_text()
    for kind in KINDS.values():
        heading = re.search(rf"^##+ .*`{kind.name}`.*$", page, flags=re.MULTILINE)
        assert heading, f"docs/anndata.md has no section for kind {kind.name!r}"
        section = page[heading.start() :].split("\n## ")[0]
        assert f"version {kind.version}" in section, kind.name
        for name in kind.fields + kind.optional:
            assert f"`{name}`" in section, (kind.name, name)


# ------------------------------------------------------------------------ the group helper
def test_one_group_helper_for_every_tool(pbmc):
    labels = obs_groups(pbmc, "bulk_labels", ["CD19+ B", "CD14+ Monocyte"])
    assert labels.names == ["CD19+ B", "CD14+ Monocyte"] and list(labels.sizes) == [95, 129]
    assert (labels.group_of >= 0).sum() == 224 and labels.labels[0] == pbmc.obs["bulk_labels"].iloc[0]
    pbmc.obs["ints"] = np.arange(pbmc.n_obs) % 3  # not categorical: converted, names compared as strings
    assert obs_groups(pbmc, "ints", "2").sizes.tolist() == [233]
    pbmc.obs["sparse"] = pd.Categorical(["a"] * (pbmc.n_obs - 1) + [np.nan], categories=["a", "b", "unused"])
    assert obs_groups(pbmc, "sparse").names == ["a"]  # categories without cells are no groups
    with pytest.raises(KeyError, match=r"obs column 'nope' not found\. Available .*'bulk_labels'"):
        obs_groups(pbmc, "nope")
    with pytest.raises(ValueError, match=r"single group among its cells \('a'\).*at least two groups"):
        obs_groups(pbmc, "sparse", min_groups=2)
    with pytest.raises(KeyError, match=r"Groups \['b'\] are not among the groups of obs\['sparse'\]: \['a'\]"):
        obs_groups(pbmc, "sparse", ["b"])
    with pytest.raises(ValueError, match=r"more than once"):
        obs_groups(pbmc, "bulk_labels", ["CD19+ B", "CD19+ B"])
    with pytest.raises(ValueError, match=r"Groups \['CD4\+/CD45RA\+/CD25- Naive T'\] have fewer than 10 cells .*; why"):
        obs_groups(pbmc, "bulk_labels", min_cells=10, purpose="; why")
