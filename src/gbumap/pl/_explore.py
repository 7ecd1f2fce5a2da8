"""``gbumap.pl.explore``: a self-contained interactive HTML page (bokeh)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._attribution import reduction_label
from .._validation import check_int, obs_column
from ..get._summaries import l2_summary
from ._utils import embedding_key, group_colors, model

__all__ = ["ExplorerData", "explore", "explorer_data"]

_GREY = "#d3d3d3"
_POSITIVE = "#b2182b"
_NEGATIVE = "#2166ac"
_BAR = "#4c72b0"


def _categorical_palette(n: int) -> list[str]:
    """The colours scanpy gives ``n`` categories (matplotlib's cycle, then its longer palettes)."""
    from matplotlib import rcParams
    from matplotlib.colors import to_hex
    from scanpy.plotting import palettes

    cycle = [to_hex(c) for c in rcParams["axes.prop_cycle"].by_key().get("color", [])]
    for candidate in (cycle, palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(candidate):
            return [to_hex(c) for c in candidate[:n]]
    base = [to_hex(c) for c in palettes.default_102]
    return [base[i % len(base)] for i in range(n)]


def _cmap_hex(name: str, n: int = 256) -> list[str]:
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps[name]
    return [to_hex(cmap(i / (n - 1))) for i in range(n)]


def _sample_cells(
    n_obs: int, max_cells: int, labels: pd.Series | None, rng: np.random.Generator
) -> np.ndarray:
    """Sorted row indices of at most ``max_cells`` cells, stratified by ``labels`` when given."""
    if n_obs <= max_cells:
        return np.arange(n_obs)
    if labels is None:
        return np.sort(rng.choice(n_obs, size=max_cells, replace=False))
    codes = pd.Categorical(labels.astype(str)).codes
    counts = np.bincount(codes)
    share = counts * (max_cells / n_obs)
    take = np.floor(share).astype(np.int64)
    # largest remainders get the cells left over, so the total is exactly max_cells
    leftover = max_cells - int(take.sum())
    if leftover > 0:
        order = np.argsort(-(share - take), kind="stable")
        take[order[:leftover]] += 1
    take = np.minimum(take, counts)
    chosen = [rng.choice(np.flatnonzero(codes == c), size=int(k), replace=False) for c, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen))


def _javascript() -> dict[str, str]:
    """The page's callbacks from the package file ``explore.js``: ``{"bars": ..., "colours": ...}``."""
    from importlib.resources import files

    text = files("gbumap.pl").joinpath("explore.js").read_text(encoding="utf-8")
    sections = {}
    for part in text.split("// === ")[1:]:
        name, _, code = part.partition("\n")
        sections[name.split(":")[0].strip()] = code
    return {"bars": sections["values"] + sections["bars"], "colours": sections["values"] + sections["colours"]}


@dataclass
class ExplorerData:
    """Everything the explorer page shows, as plain arrays (cells in drawing order)."""

    key: str
    groupby: str | None
    n_obs: int
    rows: np.ndarray  # (n_shown,) obs positions of the shown cells, drawing order
    xy: np.ndarray  # (n_shown, 2) embedding
    gene_names: list[str]  # the genes whose per-cell contributions are embedded
    signed: np.ndarray  # (n_axes, n_genes, n_shown) float32 signed contributions
    totals: np.ndarray  # (n_shown,) each cell's L2 total over all the model's genes
    group_names: list[str]
    group_palette: list[str]
    group_code: np.ndarray
    top_names: list[str]  # the most frequent top genes, then "other genes"
    top_palette: list[str]
    top_code: np.ndarray
    labels: dict[str, str]  # reduction ("l2", "normed_l2", "0", "1", ...) -> its name
    count_text: str

    @property
    def n_shown(self) -> int:
        return len(self.rows)

    @property
    def n_axes(self) -> int:
        return self.signed.shape[0]


def explorer_data(
    adata: AnnData,
    *,
    groupby: str | None = None,
    key: str = "gbumap",
    max_cells: int = 50_000,
    n_genes: int = 20,
    n_top: int = 10,
    random_state: int | None = 0,
    batch_size: int = 4096,
) -> ExplorerData:
    """The numbers behind :func:`explore`: sample, genes, per-cell contributions, colourings (no bokeh)."""
    max_cells = check_int(max_cells, "max_cells")
    n_genes = check_int(n_genes, "n_genes")
    if groupby is not None:
        obs_column(adata, groupby)
    view = model(adata, key)
    names = view.feature_names
    n_axes = int(view.estimator.n_components)
    emb = np.asarray(adata.obsm[embedding_key(adata, key)], dtype=np.float32)
    if n_axes < 2 or emb.shape[1] < 2:
        raise ValueError("The explorer draws 2-D embeddings; this model has fewer than 2 axes.")

    rng = np.random.default_rng(random_state)
    labels = adata.obs[groupby] if groupby is not None else None
    rows = _sample_cells(adata.n_obs, int(max_cells), labels, rng)
    n_shown = len(rows)

    # pass 1: every gene's L2 per shown cell -> totals, top genes (as pl.top_features) and the gene ranking
    l2_sum, totals, winners = l2_summary(adata, view, rows, "up", batch_size)
    top_genes = np.argsort(-l2_sum, kind="stable")[: min(int(n_genes), len(names))]

    # pass 2: signed contributions of the chosen genes only
    signed = np.empty((n_axes, len(top_genes), n_shown), dtype=np.float32)
    pos = 0
    for batch_rows, contrib in view.iter_contributions(adata, rows, top_genes, batch_size=batch_size):
        signed[:, :, pos : pos + len(batch_rows)] = np.transpose(contrib, (1, 2, 0))
        pos += len(batch_rows)

    counts = np.bincount(winners, minlength=len(names))
    frequent = np.argsort(-counts, kind="stable")
    frequent = frequent[counts[frequent] > 0][: int(n_top)]
    top_code = pd.Index(frequent).get_indexer(winners)
    top_code[top_code < 0] = len(frequent)

    if labels is not None:
        cat = labels if isinstance(labels.dtype, pd.CategoricalDtype) else labels.astype("category")
        cat = cat.iloc[rows]
        group_names = [str(c) for c in cat.cat.categories]
        known = group_colors(adata, groupby)
        group_palette = [known[g] for g in group_names] if known else _categorical_palette(len(group_names))
        group_code = np.asarray(cat.cat.codes, dtype=np.int64)
        if (group_code < 0).any():
            group_names.append("NA")
            group_palette.append(_GREY)
            group_code[group_code < 0] = len(group_names) - 1
    else:
        group_names, group_palette, group_code = ["all cells"], [_BAR], np.zeros(n_shown, dtype=np.int64)

    # drawing order: random, with the grey "other genes" cells first (beneath)
    order = rng.permutation(n_shown)
    order = order[np.argsort(top_code[order] != len(frequent), kind="stable")]

    if n_shown < adata.n_obs:
        how = f"random sample stratified by {groupby}" if groupby is not None else "random sample"
        count_text = f"showing {n_shown:,} of {adata.n_obs:,} cells ({how}, seed {random_state})"
    else:
        count_text = f"showing all {n_shown:,} cells"
    reductions: list = ["l2", "normed_l2", *range(n_axes)]
    return ExplorerData(
        key=key,
        groupby=groupby,
        n_obs=adata.n_obs,
        rows=rows[order],
        xy=emb[rows[order], :2],
        gene_names=[str(g) for g in names[top_genes]],
        signed=np.ascontiguousarray(signed[:, :, order]),
        totals=totals[order],
        group_names=group_names,
        group_palette=group_palette,
        group_code=group_code[order],
        top_names=[str(g) for g in names[frequent]] + ["other genes"],
        top_palette=_categorical_palette(len(frequent)) + [_GREY],
        top_code=top_code[order],
        labels={str(r): reduction_label(r, key) for r in reductions},
        count_text=count_text,
    )


def explore(
    adata: AnnData,
    *,
    groupby: str | None = None,
    key: str = "gbumap",
    path: str | Path = "gbumap_explorer.html",
    max_cells: int = 50_000,
    n_genes: int = 20,
    n_top: int = 10,
    random_state: int | None = 0,
    webgl: bool = False,
    batch_size: int = 4096,
) -> Path:
    """Write an interactive, self-contained HTML explorer of a glass-box UMAP.

    One HTML file with everything inlined (bokeh's JavaScript included), so
    it opens from disk or an e-mail attachment with no server, internet or
    Python. It shows the embedding next to a bar chart of the mean
    contribution per gene:

    * *Colour by*: the ``groupby`` groups, each cell's top gene (the
      ``n_top`` most frequent winners in colour, others grey, as in
      :func:`top_features`), or one gene's contribution.
    * *Contribution*: L2, normed L2 (share of the cell's total) or the signed
      push along each axis; drives both the bars and gene colouring.
    * Lasso or box selection on the embedding restricts the bars to the
      selected cells (computed in the page, from per-cell values embedded in
      it); clearing the selection goes back to all cells.

    To keep the page small and fast, per-cell contributions are embedded only
    for the ``n_genes`` genes with the largest mean L2 contribution over the
    shown cells (as compressed float32: about 8 MB for 50,000 cells, 20 genes
    and 2 axes), and above ``max_cells`` cells a random sample is shown
    (stratified by ``groupby``), which the page states ("showing 50,000 of
    200,000 cells").

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` (contributions stored by
        :func:`gbumap.tl.contributions` make this faster).
    groupby
        Categorical ``obs`` column to colour by and to stratify the sample on.
    key
        The model key; the embedding is ``obsm["X_<key>"]``.
    path
        Where to write the HTML file.
    max_cells
        Most cells shown; more are downsampled.
    n_genes
        Genes whose per-cell contributions are embedded: the bars and the
        per-gene colourings cover these.
    n_top
        Genes coloured in the *top gene* colouring.
    random_state
        Seed of the downsampling and of the drawing order.
    webgl
        Draw the scatter with WebGL. Faster with a GPU, but several times
        slower than the default canvas where the browser renders WebGL in
        software (no GPU, remote desktops, headless browsers).
    batch_size
        Cells per batch when rebuilding contributions.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ImportError
        When bokeh is not installed (``pip install gbumap[interactive]``).

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.glassbox_umap(adata, n_steps=60, verbose=False)
    >>> gbumap.pl.explore(adata, groupby="bulk_labels", path="pbmc_explorer.html")  # doctest: +SKIP
    PosixPath('pbmc_explorer.html')
    """
    try:
        import bokeh  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "gbumap.pl.explore needs bokeh; install it with: pip install gbumap[interactive]"
        ) from err
    data = explorer_data(
        adata,
        groupby=groupby,
        key=key,
        max_cells=max_cells,
        n_genes=n_genes,
        n_top=n_top,
        random_state=random_state,
        batch_size=batch_size,
    )
    return _write_page(data, Path(path), webgl)


def _write_page(data: ExplorerData, target: Path, webgl: bool) -> Path:
    """Lay out the bokeh page for ``data`` and write it as one self-contained HTML file.

    The page is the map (:func:`_map_panel`) beside the bar chart
    (:func:`_bar_panel`), under the two menus; :func:`_link_controls` wires
    the JavaScript that recolours the cells and redraws the bars.
    """
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, CustomJS, Div
    from bokeh.resources import INLINE

    start_mode = "group" if data.groupby is not None else "top"
    start_codes, start_palette = (
        (data.group_code, data.group_palette) if start_mode == "group" else (data.top_code, data.top_palette)
    )
    cells = ColumnDataSource(
        data={
            "x": data.xy[:, 0],
            "y": data.xy[:, 1],
            "obs_index": data.rows.astype(np.int32),
            "group_code": data.group_code.astype(np.int32),
            "top_code": data.top_code.astype(np.int32),
            "color": [start_palette[c] for c in start_codes],
        },
        name="cells",
    )
    contrib_data = {"total": data.totals.astype(np.float32)}
    for g in range(len(data.gene_names)):
        for a in range(data.n_axes):
            contrib_data[f"c{g}_{a}"] = data.signed[a, g]
    contrib = ColumnDataSource(data=contrib_data, name="contributions")
    scatter = _map_panel(data, cells, webgl, start_mode)
    bars = _bar_panel(data)
    color_select, component_select = _link_controls(data, cells, contrib, scatter, bars, start_mode)

    header = Div(
        text=(
            f"<b>gbumap explorer</b> &mdash; model <code>{html.escape(data.key)}</code>, "
            f"<span id='cell-count'>{html.escape(data.count_text)}</span>. "
            f"Bars and gene colours cover the {len(data.gene_names)} genes with the largest mean "
            f"{data.labels['l2']}. Lasso or box-select cells to restrict the bars to them."
        ),
        width=1240,
        name="cell_count",
    )
    clear = Button(label="Clear selection", width=140, name="clear_selection")
    clear.js_on_click(CustomJS(args={"cells": cells}, code="cells.selected.indices = [];"))
    layout = column(
        header,
        row(color_select, component_select, column(Div(text="&nbsp;"), clear)),
        row(scatter["figure"], bars["figure"]),
    )
    page = file_html(layout, resources=INLINE, title=f"gbumap explorer: {data.key}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _map_panel(data: ExplorerData, cells, webgl: bool, start_mode: str) -> dict:
    """The embedding: the cells' scatter, both legends (groups, top genes) and the colour bar of gene colours."""
    from bokeh.models import BoxSelectTool, ColorBar, LassoSelectTool, Legend, LegendItem, LinearColorMapper
    from bokeh.plotting import figure

    point_size = float(np.clip(2.0 + 60.0 / np.sqrt(data.n_shown), 2.0, 7.0))
    scatter_fig = figure(
        width=820,
        height=600,
        title=f"{data.key} embedding",
        tools="lasso_select,box_select,pan,wheel_zoom,reset,save",
        active_drag="lasso_select",
        output_backend="webgl" if webgl else "canvas",
        name="scatter_figure",
    )
    scatter_fig.xaxis.axis_label = f"{data.key}1"
    scatter_fig.yaxis.axis_label = f"{data.key}2"
    scatter_fig.grid.visible = False
    scatter = scatter_fig.scatter(
        "x",
        "y",
        source=cells,
        size=point_size,
        fill_color="color",
        line_color=None,
        fill_alpha=0.85,
        nonselection_fill_alpha=0.12,
        nonselection_fill_color="color",
        selection_fill_alpha=0.95,
        name="scatter",
    )

    def legend_items(category_names: list[str], palette: list[str]) -> list:
        items = []
        for label, colour in zip(category_names, palette):
            # one undrawn (NaN) point: the legend needs a glyph with data to draw its swatch
            dummy = scatter_fig.scatter(x=[np.nan], y=[np.nan], size=9, fill_color=colour, line_color=None)
            items.append(LegendItem(label=label, renderers=[dummy]))
        return items

    for tool in scatter_fig.select(type=(LassoSelectTool, BoxSelectTool)):
        tool.renderers = [scatter]
    group_items = legend_items(data.group_names, data.group_palette)
    top_items = legend_items(data.top_names, data.top_palette)
    legend = Legend(
        items=group_items if start_mode == "group" else top_items,
        location="top_left",
        label_text_font_size="9pt",
        glyph_height=12,
        glyph_width=12,
        spacing=1,
        name="legend",
    )
    scatter_fig.add_layout(legend, "right")
    sequential = _cmap_hex("viridis")
    diverging = _cmap_hex("RdBu_r")
    mapper = LinearColorMapper(palette=sequential, low=0, high=1)
    color_bar = ColorBar(color_mapper=mapper, visible=False, width=12, title="", name="color_bar")
    scatter_fig.add_layout(color_bar, "right")
    return {
        "figure": scatter_fig, "legend": legend, "group_items": group_items, "top_items": top_items,
        "color_bar": color_bar, "mapper": mapper, "sequential": sequential, "diverging": diverging,
    }


def _bar_panel(data: ExplorerData) -> dict:
    """The bar chart of mean contribution per gene, first over all shown cells (L2)."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure

    gene_names = data.gene_names
    l2_shown = np.sqrt((data.signed.astype(np.float64) ** 2).sum(axis=0)).mean(axis=1)
    bar_order = np.argsort(-l2_shown, kind="stable")
    bars = ColumnDataSource(
        data={
            "gene": [gene_names[g] for g in bar_order],
            "value": l2_shown[bar_order],
            "color": [_BAR] * len(bar_order),
        },
        name="bars",
    )
    y_range = FactorRange(factors=[gene_names[g] for g in bar_order][::-1])
    bar_fig = figure(
        width=420,
        height=600,
        y_range=y_range,
        title=f"Mean {data.labels['l2']}: all {data.n_shown:,} shown cells",
        tools="save",
        toolbar_location="above",
        name="bar_figure",
    )
    bar_fig.hbar(
        y="gene", right="value", height=0.7, fill_color="color", line_color=None, source=bars, name="bar_glyph"
    )
    bar_fig.add_tools(HoverTool(tooltips=[("gene", "@gene"), ("mean", "@value{0.0000}")]))
    bar_fig.xaxis.axis_label = f"mean {data.labels['l2']}"
    bar_fig.ygrid.visible = False
    return {"figure": bar_fig, "source": bars, "y_range": y_range, "x_axis": bar_fig.xaxis[0]}


def _link_controls(data: ExplorerData, cells, contrib, scatter: dict, bars: dict, start_mode: str) -> tuple:
    """The *Colour by* and *Contribution* menus, and the JavaScript callbacks that follow them and the selection."""
    from bokeh.models import CustomJS, Select

    color_options = [("group", f"group: {data.groupby}")] if data.groupby is not None else []
    color_options += [("top", "top gene per cell")]
    color_options += [(f"gene:{g}", f"gene: {name}") for g, name in enumerate(data.gene_names)]
    color_select = Select(title="Colour by", value=start_mode, options=color_options, width=260, name="color_select")
    component_options = [(r, label) for r, label in data.labels.items()]
    component_select = Select(
        title="Contribution", value="l2", options=component_options, width=260, name="component_select"
    )

    js = _javascript()
    common = {
        "cells": cells,
        "contrib": contrib,
        "genes": data.gene_names,
        "n_axes": data.n_axes,
        "labels": data.labels,
        "component_select": component_select,
    }
    bars_cb = CustomJS(
        args=dict(
            common,
            bars=bars["source"],
            y_range=bars["y_range"],
            bar_fig=bars["figure"],
            x_axis=bars["x_axis"],
            positive=_POSITIVE,
            negative=_NEGATIVE,
            bar_color=_BAR,
        ),
        code=js["bars"],
    )
    colors_cb = CustomJS(
        args=dict(
            common,
            color_select=color_select,
            group_palette=data.group_palette,
            top_palette=data.top_palette,
            group_items=scatter["group_items"],
            top_items=scatter["top_items"],
            legend=scatter["legend"],
            color_bar=scatter["color_bar"],
            mapper=scatter["mapper"],
            sequential=scatter["sequential"],
            diverging=scatter["diverging"],
        ),
        code=js["colours"],
    )
    cells.selected.js_on_change("indices", bars_cb)
    component_select.js_on_change("value", bars_cb, colors_cb)
    color_select.js_on_change("value", colors_cb)
    return color_select, component_select
