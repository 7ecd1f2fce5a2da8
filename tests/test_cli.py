"""The command line: the demo on bundled data and `gbumap fit` on an .h5ad."""

from __future__ import annotations

import sys

import anndata as ad
import pytest

from gbumap.cli import main


def test_demo_writes_everything(tmp_path, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--out", str(tmp_path), "--n-steps", "60", "--quiet"]) == 0
    ours = [w for w in caught if not str(w.filename).startswith(("/usr", sys.prefix)) or "anndata" in str(w.filename)]
    assert not ours, [f"{w.category.__name__}: {w.message}" for w in ours]
    out = capsys.readouterr().out
    assert "reconstruction error" in out
    assert "ranked by mean L2 contribution in the group × max(0, pts − pts_rest)" in out
    # each group's size beside its list, and the groups under 30 cells marked (benchmarks/small_groups.py)
    lines = {line.strip().split(" (")[0]: line.strip() for line in out.splitlines() if line.startswith("  ")}
    sizes = {"Dendritic": 240, "CD14+ Monocyte": 129, "CD19+ B": 95, "CD4+/CD25 T Reg": 68, "CD8+ Cytotoxic T": 54,
             "CD8+/CD45RA+ Naive Cytotoxic": 43, "CD56+ NK": 31, "CD4+/CD45RO+ Memory": 19, "CD34+": 13,
             "CD4+/CD45RA+/CD25- Naive T": 8}
    assert set(sizes) <= set(lines)
    for group, size in sizes.items():
        if size < 30:
            assert lines[group].startswith(f"{group} ({size} cells; fewer than 30: fragile list): "), lines[group]
        else:
            assert lines[group].startswith(f"{group} ({size} cells): "), lines[group]
        assert len(lines[group].split(": ", 1)[1].split(", ")) == 5
    for name in ("pbmc68k_gbumap.h5ad", "top_features.png", "reconstruction.png", "rank_features.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    pytest.importorskip("bokeh")
    assert (tmp_path / "explorer.html").stat().st_size > 10_000
    back = ad.read_h5ad(tmp_path / "pbmc68k_gbumap.h5ad")
    assert {"X_gbumap", "gbumap_jacobian"} <= set(back.obsm) and "rank_features_gbumap" in back.uns


def test_fit_command(tmp_path, pbmc, capsys):
    src, dst = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    pbmc.write_h5ad(src)
    code = main(["fit", str(src), "-o", str(dst), "--groupby", "bulk_labels", "--n-steps", "40", "--quiet"])
    assert code == 0
    back = ad.read_h5ad(dst)
    assert back.obsm["X_gbumap"].shape == (pbmc.n_obs, 2)
    assert float(back.uns["gbumap"]["reconstruction_error"]["max_rel"]) < 1e-5
    assert "top genes per bulk_labels" in capsys.readouterr().out


def test_summary_of_a_ranking_without_recorded_sizes_counts_obs(pbmc_fitted):
    """Rankings written before group_sizes existed: the sizes come from obs[groupby]."""
    from gbumap.cli import _summary

    del pbmc_fitted.uns["rank_features_gbumap"]["group_sizes"]
    text = _summary(pbmc_fitted, "gbumap", "bulk_labels")
    assert "  CD34+ (13 cells; fewer than 30: fragile list): " in text
    assert "  CD14+ Monocyte (129 cells): " in text
    pbmc_fitted.obs = pbmc_fitted.obs.drop(columns="bulk_labels")
    text = _summary(pbmc_fitted, "gbumap", "bulk_labels")
    assert "  CD34+: " in text and "cells" not in text.split("top genes per")[1]


def test_fit_command_reports_bad_input(tmp_path, pbmc, capsys):
    src = tmp_path / "in.h5ad"
    pbmc.write_h5ad(src)
    assert main(["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--layer", "missing", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "not found" in err
    assert not (tmp_path / "o.h5ad").exists()
    assert main(["fit", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "o.h5ad")]) == 2
