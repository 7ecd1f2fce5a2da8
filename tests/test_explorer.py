"""gbumap.pl.explore: the HTML page, checked in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gbumap

GROUPBY = "bulk_labels"
# Debian's paths; GBUMAP_CHROMIUM and GBUMAP_CHROMEDRIVER point the tests elsewhere (CI points them at
# nothing to prove that the README's test command passes, skipping these tests, on a machine without a browser).
CHROMIUM = Path(os.environ.get("GBUMAP_CHROMIUM") or "/usr/bin/chromium")
CHROMEDRIVER = Path(os.environ.get("GBUMAP_CHROMEDRIVER") or "/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
ARGS = (
    "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run --window-size=1300,900"
).split()


@pytest.fixture(scope="module")
def adata(pbmc_plot_session):
    return pbmc_plot_session


@pytest.fixture(scope="module")
def page(adata, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explorer") / "explorer.html"
    returned = gbumap.pl.explore(adata, groupby=GROUPBY, path=path, n_genes=12)
    assert returned == path
    return path


@pytest.fixture(scope="module")
def small_page(adata, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explorer_small") / "explorer.html"
    return gbumap.pl.explore(adata, groupby=GROUPBY, path=path, max_cells=300, n_genes=5)


def test_page_is_self_contained(page, adata):
    text = page.read_text(encoding="utf-8")
    assert "showing all 700 cells" in text
    # bokeh's JavaScript is inlined: no script or stylesheet is fetched from anywhere
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"?https?:", text)
    assert "cdn.bokeh.org" not in text
    assert "Bokeh" in text and len(text) > 500_000
    assert set(adata.uns.keys()) >= {"gbumap", "rank_features_gbumap"}
    assert "top_feature_gbumap" not in adata.obs.columns


def test_downsampling_text(small_page):
    text = small_page.read_text(encoding="utf-8")
    assert "showing 300 of 700 cells (random sample stratified by bulk_labels, seed 0)" in text


def test_stratified_sample_keeps_group_shares():
    from gbumap.pl._explore import _sample_cells

    labels = pd.Series(np.repeat(["a", "b", "c"], [7000, 2500, 500]))
    rows = _sample_cells(len(labels), 1000, labels, np.random.default_rng(0))
    assert len(rows) == len(np.unique(rows)) == 1000
    assert labels.iloc[rows].value_counts().to_dict() == {"a": 700, "b": 250, "c": 50}
    assert (_sample_cells(50, 100, labels[:50], np.random.default_rng(0)) == np.arange(50)).all()


def test_missing_bokeh_names_the_extra(adata, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bokeh", None)
    with pytest.raises(ImportError, match=re.escape("pip install gbumap[interactive]")):
        gbumap.pl.explore(adata, path=tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


# --------------------------------------------------------------------------- browser


def browser_missing(chromium: Path | None = None, chromedriver: Path | None = None) -> str | None:
    """Why the browser tests cannot run here (chromium or its driver absent), or ``None``."""
    chromium = CHROMIUM if chromium is None else chromium
    chromedriver = CHROMEDRIVER if chromedriver is None else chromedriver
    missing = [str(p) for p in (chromium, chromedriver) if not p.exists()]
    if not missing:
        return None
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} absent; install with: {INSTALL}"


def test_browser_guard_names_what_is_missing(tmp_path):
    """Every case on files this test controls, so it passes with and without a browser installed."""
    chromium, chromedriver = tmp_path / "chromium", tmp_path / "chromedriver"
    gone_chromium, gone_driver = tmp_path / "no-chromium", tmp_path / "no-chromedriver"
    chromium.write_text("#!/bin/sh\n")
    chromedriver.write_text("#!/bin/sh\n")
    assert browser_missing(chromium, chromedriver) is None
    assert browser_missing(chromium, gone_driver) == f"{gone_driver} is absent; install with: {INSTALL}"
    assert browser_missing(gone_chromium, chromedriver) == f"{gone_chromium} is absent; install with: {INSTALL}"
    assert browser_missing(gone_chromium, gone_driver) == (
        f"{gone_chromium} and {gone_driver} are absent; install with: {INSTALL}"
    )


@pytest.mark.parametrize("installed", [True, False], ids=["browser installed", "no browser"])
def test_browser_guard_reads_the_module_paths(installed, monkeypatch, tmp_path):
    """The guard the driver fixture calls reads CHROMIUM/CHROMEDRIVER, whatever this machine has."""
    chromium, chromedriver = tmp_path / "chromium", tmp_path / "chromedriver"
    if installed:
        chromium.write_text("#!/bin/sh\n")
        chromedriver.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", chromium)
    monkeypatch.setattr(sys.modules[__name__], "CHROMEDRIVER", chromedriver)
    why = browser_missing()
    if installed:
        assert why is None
    else:
        assert why == f"{chromium} and {chromedriver} are absent; install with: {INSTALL}"


def test_browser_paths_follow_the_environment(tmp_path, monkeypatch):
    """GBUMAP_CHROMIUM / GBUMAP_CHROMEDRIVER replace Debian's paths (CI hides the browser with them)."""
    import importlib.util

    def paths():
        spec = importlib.util.spec_from_file_location("_explorer_paths", __file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.CHROMIUM, module.CHROMEDRIVER

    monkeypatch.setenv("GBUMAP_CHROMIUM", str(tmp_path / "c"))
    monkeypatch.setenv("GBUMAP_CHROMEDRIVER", str(tmp_path / "d"))
    assert paths() == (tmp_path / "c", tmp_path / "d")
    monkeypatch.delenv("GBUMAP_CHROMIUM")
    monkeypatch.setenv("GBUMAP_CHROMEDRIVER", "")
    assert paths() == (Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver"))


@pytest.fixture(scope="module")
def driver():
    why = browser_missing()
    if why is not None:
        if os.environ.get("GBUMAP_REQUIRE_BROWSER"):
            pytest.fail(f"GBUMAP_REQUIRE_BROWSER is set (as in CI) but the browser tests cannot run: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ARGS:
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_script_timeout(60)
    yield browser
    browser.quit()


def _open(driver, path: Path) -> None:
    driver.get(path.as_uri())
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        (function wait() {
            const ready = window.Bokeh && Bokeh.documents && Bokeh.documents.length > 0
                && Bokeh.index && Object.keys(Bokeh.index).length > 0;
            if (ready) requestAnimationFrame(() => requestAnimationFrame(() => done(true)));
            else setTimeout(wait, 50);
        })();
        """
    )


def _js(driver, body: str):
    return driver.execute_script("const doc = Bokeh.documents[0];\n" + body)


def _wait_for(driver, expression: str, expected, timeout: float = 30.0):
    """Poll a JS expression until it equals ``expected`` (CustomJS callbacks run asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = _js(driver, f"return {expression};")
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _page_state(driver) -> dict:
    return _js(
        driver,
        """
        const cells = doc.get_model_by_name("cells");
        const bars = doc.get_model_by_name("bars");
        return {
            n_cells: cells.data.x.length,
            obs_index: Array.from(cells.data.obs_index),
            group_code: Array.from(cells.data.group_code),
            genes: Array.from(bars.data.gene),
            values: Array.from(bars.data.value),
            title: doc.get_model_by_name("bar_figure").title.text,
            scatter: doc.get_model_by_name("scatter") !== null,
            bar_glyph: doc.get_model_by_name("bar_glyph") !== null,
            text: doc.get_model_by_name("cell_count").text,
        };
        """,
    )


@pytest.mark.browser
def test_browser_page_renders_and_selection_updates_bars(driver, page, adata, tmp_path):
    _open(driver, page)
    assert _severe(driver) == []
    state = _page_state(driver)
    assert state["scatter"] and state["bar_glyph"]
    assert state["n_cells"] == adata.n_obs
    assert "showing all 700 cells" in state["text"]
    assert len(state["genes"]) == 12
    assert sorted(state["obs_index"]) == list(range(adata.n_obs))

    # the screenshot shows a coloured scatter, not a blank page
    shot = tmp_path / "explorer.png"
    driver.save_screenshot(str(shot))
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    scatter_area = image[150:650, 60:560].reshape(-1, 3)
    colours = {tuple(c) for c in scatter_area[::3]}
    assert len(colours) > 50
    saturated = (scatter_area.max(axis=1).astype(int) - scatter_area.min(axis=1)) > 60
    assert saturated.mean() > 0.01, "coloured points are drawn"

    # all cells: the bars are the mean L2 over every shown cell
    genes = state["genes"]
    full = gbumap.get.contributions(adata, genes=genes, reduction="l2").astype(np.float64)
    np.testing.assert_allclose(state["values"], full.mean(axis=0), rtol=1e-4)
    assert state["values"] == sorted(state["values"], reverse=True)

    # select the CD14+ monocytes, as a lasso would, and read the bars back
    obs_index = np.asarray(state["obs_index"])
    labels = adata.obs[GROUPBY].astype(str).to_numpy()[obs_index]
    selected = np.flatnonzero(labels == "CD14+ Monocyte")
    _js(driver, f'doc.get_model_by_name("cells").selected.indices = {selected.tolist()};')
    title = _wait_for(driver, 'doc.get_model_by_name("bar_figure").title.text.includes("selected")', True)
    assert title is True
    state = _page_state(driver)
    assert f"{len(selected)} selected cells" in state["title"]
    chosen = obs_index[selected]
    sel_l2 = gbumap.get.contributions(adata, genes=genes, obs=chosen, reduction="l2").astype(np.float64)
    expected = pd.Series(sel_l2.mean(axis=0), index=genes)
    page_means = pd.Series(state["values"], index=state["genes"])
    assert set(page_means.index) == set(genes)
    np.testing.assert_allclose(page_means[genes], expected, rtol=1e-4)
    assert list(page_means.index) == list(expected.sort_values(ascending=False).index)
    assert not np.allclose(expected, full.mean(axis=0), rtol=1e-2), "the selection changed the bars"

    # switch the bars to the signed second axis: ranked by |mean|
    _js(driver, 'doc.get_model_by_name("component_select").value = "1";')
    assert _wait_for(driver, 'doc.get_model_by_name("bar_figure").title.text.includes("signed")', True)
    state = _page_state(driver)
    signed = gbumap.get.contributions(adata, genes=genes, obs=chosen, reduction=1).astype(np.float64)
    expected = pd.Series(signed.mean(axis=0), index=genes)
    page_means = pd.Series(state["values"], index=state["genes"])
    np.testing.assert_allclose(page_means[genes], expected, rtol=1e-4, atol=1e-9)
    assert list(page_means.index) == list(expected.abs().sort_values(ascending=False).index)

    # normed L2: shares of each cell's total over all genes
    _js(driver, 'doc.get_model_by_name("component_select").value = "normed_l2";')
    assert _wait_for(driver, 'doc.get_model_by_name("bar_figure").title.text.includes("share")', True)
    state = _page_state(driver)
    names = list(np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str))
    shares = gbumap.get.contributions(adata, obs=chosen, reduction="normed_l2").astype(np.float64)
    expected = pd.Series(shares[:, [names.index(g) for g in genes]].mean(axis=0), index=genes)
    np.testing.assert_allclose(pd.Series(state["values"], index=state["genes"])[genes], expected, rtol=1e-4)

    # colour by one gene's contribution: a colour bar replaces the legend
    before = _js(driver, 'return doc.get_model_by_name("cells").data.color.slice(0, 50);')
    _js(driver, 'doc.get_model_by_name("color_select").value = "gene:0";')
    assert _wait_for(driver, 'doc.get_model_by_name("color_bar").visible', True)
    after = _js(driver, 'return doc.get_model_by_name("cells").data.color.slice(0, 50);')
    assert after != before
    assert _js(driver, 'return doc.get_model_by_name("legend").visible;') is False

    # clearing the selection goes back to all cells
    _js(driver, 'doc.get_model_by_name("cells").selected.indices = [];')
    assert _wait_for(driver, 'doc.get_model_by_name("bar_figure").title.text.includes("all 700")', True)
    assert _severe(driver) == []


@pytest.mark.browser
def test_browser_downsampled_page_says_so(driver, small_page, adata):
    _open(driver, small_page)
    assert _severe(driver) == []
    state = _page_state(driver)
    assert state["n_cells"] == 300
    assert len(set(state["obs_index"])) == 300
    assert "showing 300 of 700 cells" in state["text"]
    shown = driver.find_element("tag name", "body").text
    if "showing 300 of 700 cells" not in shown:  # bokeh renders Divs in a shadow root
        shown = driver.execute_script(
            """
            const texts = [];
            (function walk(node) {
                if (node.shadowRoot) walk(node.shadowRoot);
                for (const child of node.childNodes) {
                    if (child.nodeType === Node.TEXT_NODE) texts.push(child.textContent);
                    else walk(child);
                }
            })(document.body);
            return texts.join(" ");
            """
        )
    assert "showing 300 of 700 cells" in shown
    counts = adata.obs[GROUPBY].iloc[state["obs_index"]].value_counts()
    expected = adata.obs[GROUPBY].value_counts() * 300 / 700
    assert (np.abs(counts[expected.index] - expected) < 1).all(), "the sample keeps each group's share"


# --------------------------------------------------------------------------- the data step alone
def test_explorer_data_is_the_numbers_the_page_shows(adata):
    from gbumap._attribution import reduction_label
    from gbumap.pl._explore import explorer_data

    data = explorer_data(adata, groupby="bulk_labels", n_genes=7, n_top=4)
    assert data.n_shown == adata.n_obs and sorted(data.rows) == list(range(adata.n_obs))
    l2 = gbumap.get.contributions(adata, reduction="l2").astype(np.float64)
    names = np.asarray(adata.uns["gbumap"]["feature_names"]).astype(str)
    # embedded genes: the 7 largest mean L2 contributions; totals: every gene's L2, per cell
    assert data.gene_names == list(names[np.argsort(-l2.sum(0), kind="stable")[:7]])
    np.testing.assert_allclose(data.totals, l2[data.rows].sum(1), rtol=1e-5)
    signed = gbumap.get.contributions(adata, genes=data.gene_names)[data.rows]
    np.testing.assert_allclose(data.signed, np.transpose(signed, (1, 2, 0)), rtol=1e-6, atol=1e-7)
    # the top-gene colouring is pl.top_features' (genes the cell expresses above baseline)
    top = gbumap.get.top_feature_groups(adata, n_top=4)
    assert data.top_names[:-1] == list(top.cat.categories) and data.top_names[-1] == "other genes"
    expected = np.where(top.isna(), 4, top.cat.codes)[data.rows]
    np.testing.assert_array_equal(data.top_code, expected)
    assert data.labels == {r: reduction_label(int(r) if r.isdigit() else r) for r in ("l2", "normed_l2", "0", "1")}
    np.testing.assert_array_equal(data.xy, adata.obsm["X_gbumap"][data.rows, :2])
    small = explorer_data(adata, groupby="bulk_labels", max_cells=100)
    assert small.n_shown == 100
    assert "showing 100 of 700 cells (random sample stratified by bulk_labels" in small.count_text


def test_explorer_javascript_comes_from_the_package_file():
    from gbumap.pl._explore import _javascript

    js = _javascript()
    assert "function component_values" in js["bars"] and "function component_values" in js["colours"]
    assert "bars.data = {" in js["bars"] and "cells.change.emit()" in js["colours"]
