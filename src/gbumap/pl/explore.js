// The explorer page's callbacks (gbumap.pl.explore). Python reads the three sections by their markers.
// === values: shared by both callbacks
function component_values(g, comp) {
    const n = contrib.data["total"].length;
    const out = new Float64Array(n);
    if (comp === "l2" || comp === "normed_l2") {
        for (let a = 0; a < n_axes; a++) {
            const col = contrib.data["c" + g + "_" + a];
            for (let i = 0; i < n; i++) out[i] += col[i] * col[i];
        }
        for (let i = 0; i < n; i++) out[i] = Math.sqrt(out[i]);
        if (comp === "normed_l2") {
            const total = contrib.data["total"];
            for (let i = 0; i < n; i++) out[i] = total[i] > 0 ? out[i] / total[i] : 0;
        }
    } else {
        const col = contrib.data["c" + g + "_" + comp];
        for (let i = 0; i < n; i++) out[i] = col[i];
    }
    return out;
}
function is_signed(comp) { return !(comp === "l2" || comp === "normed_l2"); }
// === bars: when the selection or the reduction changes
const comp = component_select.value;
const signed = is_signed(comp);
const selected = cells.selected.indices;
const n = contrib.data["total"].length;
const m = selected.length > 0 ? selected.length : n;
const means = [];
for (let g = 0; g < genes.length; g++) {
    const v = component_values(g, comp);
    let s = 0;
    if (selected.length > 0) { for (const i of selected) s += v[i]; }
    else { for (let i = 0; i < n; i++) s += v[i]; }
    means.push(s / m);
}
const order = genes.map((_, g) => g);
order.sort((a, b) => signed ? Math.abs(means[b]) - Math.abs(means[a]) : means[b] - means[a]);
const names = order.map((g) => genes[g]);
y_range.factors = names.slice().reverse();
bars.data = {
    gene: names,
    value: order.map((g) => means[g]),
    color: order.map((g) => signed ? (means[g] >= 0 ? positive : negative) : bar_color),
};
const what = selected.length > 0
    ? selected.length.toLocaleString("en-US") + " selected cells"
    : "all " + n.toLocaleString("en-US") + " shown cells";
bar_fig.title.text = "Mean " + labels[comp] + ": " + what;
x_axis.axis_label = "mean " + labels[comp];
// === colours: when the colouring or the reduction changes
const mode = color_select.value;
const comp = component_select.value;
const n = cells.data["x"].length;
const color = cells.data["color"];
if (mode === "group" || mode === "top") {
    const codes = cells.data[mode === "group" ? "group_code" : "top_code"];
    const palette = mode === "group" ? group_palette : top_palette;
    for (let i = 0; i < n; i++) color[i] = palette[codes[i]];
    legend.items = mode === "group" ? group_items : top_items;
    legend.visible = true;
    color_bar.visible = false;
} else {
    const g = parseInt(mode.slice(5));
    const v = component_values(g, comp);
    const signed = is_signed(comp);
    let hi = 0;
    for (let i = 0; i < n; i++) hi = Math.max(hi, signed ? Math.abs(v[i]) : v[i]);
    if (!(hi > 0)) hi = 1;
    const lo = signed ? -hi : 0;
    const palette = signed ? diverging : sequential;
    const k = palette.length - 1;
    for (let i = 0; i < n; i++) {
        const t = Math.min(1, Math.max(0, (v[i] - lo) / (hi - lo)));
        color[i] = palette[Math.round(t * k)];
    }
    mapper.palette = palette;
    mapper.low = lo;
    mapper.high = hi;
    color_bar.title = genes[g] + ": " + labels[comp];
    legend.visible = false;
    color_bar.visible = true;
}
cells.change.emit();
