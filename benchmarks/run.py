"""Side-by-side benchmark of gbumap, scanpy's UMAP and glass-box-umap on simulated and real data.

    python benchmarks/run.py --quick                 # smoke size (CI)
    python benchmarks/run.py                         # 10k, 30k, 90k, 300k cells × 2,000 genes, then pbmc and digits
    python benchmarks/run.py --sizes 10000 30000 --tools gbumap scanpy
    python benchmarks/run.py --real-only             # only the pbmc68k_reduced and digits section

The simulated data (``gbumap.datasets.simulate``, 2,000 genes, 10% of the
cells on a branching trajectory) carry known cell types, within-type states
and differentiation times, so the report gives, beside speed and memory, the
layout figures of ``gbumap.tl.quality`` for every tool and a picture of each
tool's map at every size. The real-data section fits gbumap and umap-learn
with three seeds each on scanpy's bundled ``pbmc68k_reduced`` (log data) and
scikit-learn's digits, in this process (not timed).

Every tool runs in a fresh process per measurement (``workers.py``). The
first pass uses an empty numba cache (the first-ever run, when pynndescent and
umap-learn compile); the second pass reuses it (later runs). glass-box-umap
runs only where it is importable (``pip install glass-box-umap==0.1.0`` in
the benchmark environment, never as a gbumap dependency). Results go to
``--out`` as JSON and markdown, plus a log-log plot of time against cells.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ALL_TOOLS = ["gbumap", "gbumap_reuse", "gbumap_zero", "scanpy", "reference_1", "reference_2"]
N_QUERY = 10_000
EVAL_CELLS = 10_000
TRUST_CELLS = 5_000
TRAJECTORY = 0.1  # share of simulated cells on the branching trajectory
REAL_SEEDS = (0, 1, 2)


def query_size(n_cells: int) -> int:
    """Held-out query cells simulated beside ``n_cells`` reference cells."""
    return min(N_QUERY, max(n_cells // 5, 500))


def make_data(n_cells: int, cache: Path, n_genes: int = 2000) -> Path:
    """Simulate ``n_cells`` reference cells plus a held-out query from the same design."""
    import gbumap

    path = cache / f"sim_traj_{n_cells}x{n_genes}.h5ad"
    if path.exists():
        return path
    n_query = query_size(n_cells)
    adata = gbumap.datasets.simulate(n_cells + n_query, n_genes, trajectory_fraction=TRAJECTORY, random_state=0)
    adata[n_cells:].copy().write_h5ad(str(path).replace(".h5ad", "_query.h5ad"))
    adata[:n_cells].copy().write_h5ad(path)
    return path


def run_worker(tool: str, data: Path, out: Path, numba_cache: Path | None, python: str) -> dict | None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    proc = subprocess.run(
        [python, str(HERE / "workers.py"), tool, str(data), str(out)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"  {tool} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads((out / "result.json").read_text())


def reference_available(python: str) -> bool:
    proc = subprocess.run([python, "-c", "import glass_box_umap"], capture_output=True)
    return proc.returncode == 0


# ---------------------------------------------------------------- metrics
def layout_quality(data: dict, emb: np.ndarray, seed: int = 0) -> dict:
    """The figures of ``gbumap.tl.quality`` for one embedding.

    ``data`` holds ``rep`` (the input representation) and ``labels``, and for
    the simulation ``state`` (within-type pseudotime), ``time`` and ``branch``
    (the trajectory). Neighbour figures use up to 10k sampled cells (exact
    neighbours among all cells); trustworthiness (quadratic) 5k of them.
    """
    from sklearn.metrics import silhouette_score

    from gbumap import _layout_metrics as m

    rep, labels = data["rep"], data["labels"]
    emb = np.asarray(emb, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(emb), size=min(EVAL_CELLS, len(emb)), replace=False))
    small = np.sort(rng.choice(sample, size=min(TRUST_CELLS, len(sample)), replace=False))
    out = {
        "knn_preservation": m.knn_preservation(rep, emb, sample),
        "trustworthiness": m.trustworthiness(rep, emb, small),
        "label_knn_accuracy": m.label_accuracy(emb, labels, sample),
        "silhouette": float(silhouette_score(emb[sample], labels[sample])),
        "radial_anisotropy": m.radial_anisotropy(emb, labels)[0],
        "centroid_distance_spearman": m.centroid_distance_correlation(rep, emb, labels),
    }
    if "state" in data:
        out["r2_state"] = m.continuous_r2(emb, data["state"], labels)
    if "time" in data:
        out["trajectory_spearman"] = m.trajectory_correlation(emb, data["time"], data["branch"])
        out["trajectory_r2"] = m.continuous_r2(emb, data["time"], data["branch"])
    return out


def attribution_auroc(scores: np.ndarray, categories: list[str], truth) -> float:
    """Mean over cell types of the AUROC separating that type's truth genes from the rest."""
    from sklearn.metrics import roc_auc_score

    values = []
    for ci, c in enumerate(categories):
        y = truth[c].to_numpy()
        if y.any() and not y.all():
            values.append(roc_auc_score(y, scores[ci]))
    return float(np.mean(values))


# ---------------------------------------------------------------- report
def machine_info() -> dict:
    from importlib.metadata import version

    import torch

    import gbumap

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "gbumap": gbumap.__version__,
        "scanpy": version("scanpy"),
        "anndata": version("anndata"),
        "torch": torch.__version__,
    }


QUALITY_COLUMNS = (
    ("knn_preservation", "kNN pres.@15", "{:.4f}"),
    ("trustworthiness", "trust.@15", "{:.3f}"),
    ("label_knn_accuracy", "label acc.", "{:.3f}"),
    ("radial_anisotropy", "anisotropy", "{:.2f}"),
    ("centroid_distance_spearman", "centroid ρ", "{:.2f}"),
    ("r2_state", "state R²", "{:.3f}"),
    ("trajectory_spearman", "traj. ρ", "{:.2f}"),
    ("trajectory_r2", "traj. R²", "{:.2f}"),
)


def _fmt(value, pattern: str = "{:.1f}") -> str:
    return "–" if value is None else pattern.format(value)


def markdown(results: dict) -> str:
    info = results["machine"]
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, {info['memory_gib']} GiB, GPU: {info['gpu']}); "
        f"Python {info['python']}, gbumap {info['gbumap']}, scanpy {info['scanpy']}, torch {info['torch']}.",
        "",
        f"Simulated data: `gbumap.datasets.simulate(n, 2000, trajectory_fraction={TRAJECTORY})`; layout figures as in "
        "`gbumap.tl.quality` against the 50 PCs, on the same sampled cells for every tool; AUROC: attribution "
        "recovery of the true programs by each tool's default gene ranking.",
        "",
        "### Speed and memory",
        "",
        "| cells | tool | first run (s) | later run (s) | peak RSS (MiB) | AUROC |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for size, rows in results["sizes"].items():
        for tool, r in rows.items():
            cold = r.get("cold", {}).get("timings", {}).get("total")
            warm = r.get("warm", {}).get("timings", {}).get("total")
            peak = r.get("warm", {}).get("peak_rss_mb")
            lines.append(
                f"| {int(size):,} | {LABELS.get(tool, tool)} | {_fmt(cold)} | {_fmt(warm)} | {_fmt(peak, '{:.0f}')} | "
                f"{_fmt(r.get('auroc'), '{:.3f}')} |"
            )
        extra = results["derived"].get(size, {})
        if extra:
            lines.append("")
        for k, v in extra.items():
            lines.append(f"- {int(size):,} cells: {k.replace('_', ' ')}: {v}")
        lines.append("")
    excludes = [r.get("warm", {}).get("peak_excludes_loading") for rows in results["sizes"].values() for r in rows.values()]
    if any(excludes):
        lines.append("Peak RSS: the highest resident memory of the process after the data was read (the reading "
                     "itself excluded; the loaded data count).")
    else:
        lines.append("Peak RSS: the highest resident memory of the whole process, reading the data included; "
                     "where reading dominates, every tool shows the same value.")
    lines += ["", "### Layout", ""]
    present = [c for c in QUALITY_COLUMNS if any(c[0] in r.get("quality", {}) for rows in results["sizes"].values()
                                                 for r in rows.values())]
    lines += ["| cells | tool | " + " | ".join(c[1] for c in present) + " |",
              "| ---: | --- | " + " | ".join("---:" for _ in present) + " |"]
    for size, rows in results["sizes"].items():
        for tool, r in rows.items():
            q = r.get("quality", {})
            lines.append(f"| {int(size):,} | {LABELS.get(tool, tool)} | "
                         + " | ".join(_fmt(q.get(k), f) for k, _, f in present) + " |")
    for size, name in results.get("pictures", {}).items():
        lines += ["", f"![{int(size):,} simulated cells]({name})"]
    lines.extend(real_table(results.get("real", {})))
    lines.extend(targets_table(results))
    if results.get("slope"):
        lines.append("\nLog-log slope of later-run time against cells (sizes ≥ 30k where measured):\n")
        for t, v in results["slope"].items():
            value, span = (v["slope"], v["span"]) if isinstance(v, dict) else (v, "30k → 300k")
            lines.append(f"- {LABELS.get(t, t)}: {value:.2f} ({span})")
    lines.append(
        "\nglass-box-umap's default is 200 epochs; its 200-epoch time is extrapolated as "
        "fit(1 epoch) + 199 × (fit(2 epochs) − fit(1 epoch)), not measured."
    )
    return "\n".join(lines)


def _mean_sd(runs: list[dict], key: str, pattern: str) -> str:
    vals = [r[key] for r in runs if key in r]
    if not vals:
        return "–"
    if len(vals) == 1:
        return pattern.format(vals[0])
    return f"{pattern.format(np.mean(vals))} ± {pattern.format(np.std(vals, ddof=1))}"


def real_table(real: dict) -> list[str]:
    """The pbmc68k_reduced and digits section: mean ± sd over seeds, and the pictures."""
    if not real:
        return []
    cols = [c for c in QUALITY_COLUMNS[:5]]
    lines = ["", "### Real data (not timed)", "",
             "gbumap (`tl.fit` defaults on pbmc68k_reduced's log data; `GlassBoxUMAP()` on digits) beside umap-learn "
             "(`sc.pp.neighbors` + `sc.tl.umap`; `umap.UMAP()`), mean ± sd over seeds, against the 50 PCs of the log "
             "data (pbmc) or the 64 pixels (digits).", "",
             "| data | tool | " + " | ".join(c[1] for c in cols) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for name, entry in real.items():
        for tool, runs in entry["rows"].items():
            lines.append(f"| {name} ({len(runs)} seeds) | {tool} | "
                         + " | ".join(_mean_sd(runs, k, f) for k, _, f in cols) + " |")
    for name, entry in real.items():
        lines += ["", f"![{name}]({entry['picture']})"]
    return lines


def targets_table(results: dict, size: int = 90_000) -> list[str]:
    """The targets of the layout and ranking work, each with the measured value, at ``size`` cells."""
    rows = results["sizes"].get(str(size))
    if not rows:
        return []
    d = results["derived"].get(str(size), {})
    lines = [f"\n### Targets at {size:,} cells", "", "| target | measured | met |", "| --- | --- | :---: |"]

    def add(name: str, value, ok: bool | None) -> None:
        lines.append(f"| {name} | {value} | {'–' if ok is None else ('yes' if ok else 'no')} |")

    g, u = rows.get("gbumap", {}), rows.get("scanpy", {})
    gq, uq = g.get("quality"), u.get("quality")
    if gq and uq:
        ratio = gq["knn_preservation"] / uq["knn_preservation"]
        add("kNN preservation@15 ≥ 0.95× umap-learn's (each at its default min_dist: scanpy 0.5, gbumap 0.1)",
            f"{gq['knn_preservation']:.4f} vs {uq['knn_preservation']:.4f} ({ratio:.2f}×)", ratio >= 0.95)
        for metric, name in (("label_knn_accuracy", "label kNN accuracy"), ("trustworthiness", "trustworthiness")):
            diff = gq[metric] - uq[metric]
            add(f"{name} ≥ umap-learn's − 0.005", f"{gq[metric]:.3f} vs {uq[metric]:.3f} ({diff:+.3f})", diff >= -0.005)
        ratio = gq["radial_anisotropy"] / uq["radial_anisotropy"]
        add("radial anisotropy ≤ 1.25× umap-learn's",
            f"{gq['radial_anisotropy']:.2f} vs {uq['radial_anisotropy']:.2f} ({ratio:.2f}×)", ratio <= 1.25)
        for metric, name in (("r2_state", "within-type state R²"), ("trajectory_spearman", "trajectory-time ρ")):
            if metric in gq and metric in uq:
                add(f"{name} ≥ umap-learn's", f"{gq[metric]:.3f} vs {uq[metric]:.3f}", gq[metric] >= uq[metric])
    if "gbumap_over_scanpy_time" in d:
        add("end to end with contributions ≤ 0.5× scanpy pca+neighbors+umap", f"{d['gbumap_over_scanpy_time']:.2f}×",
            d["gbumap_over_scanpy_time"] <= 0.5)
    r1 = rows.get("reference_1", {})
    if "gbumap_speedup_vs_reference_1_epoch" in d and r1.get("quality") and gq:
        compared = {"knn_preservation": "kNN pres.", "trustworthiness": "trust.", "label_knn_accuracy": "label acc."}
        versus = "; ".join(f"{name} {gq[m]:.4g} vs {r1['quality'][m]:.4g}" for m, name in compared.items())
        better = all(gq[m] > r1["quality"][m] for m in compared)
        add("glass-box-umap's 1-epoch run slower and worse (kNN pres., trust., label acc.)",
            f"gbumap {d['gbumap_speedup_vs_reference_1_epoch']:.2f}× faster; {versus}",
            d["gbumap_speedup_vs_reference_1_epoch"] > 1 and better)
    if g.get("auroc") is not None:
        zero = rows.get("gbumap_zero", {}).get("auroc")
        extra = f" (baseline='zero': {zero:.3f})" if zero is not None else ""
        add("attribution AUROC ≥ 0.95, default ranking", f"{g['auroc']:.3f}{extra}", g["auroc"] >= 0.95)
    if "reconstruction_error" in d:
        err = float(d["reconstruction_error"])
        add("exactness ≤ 1e-5 relative (float32)", f"{err:.1e}", err <= 1e-5)
    t = d.get("transform_of_query_with_contributions_s")
    if t is not None:
        add(f"transform of {query_size(size):,} new cells with contributions < 2 s", f"{t:.2f} s", t < 2)
    for name, entry in results.get("real", {}).items():
        ours, theirs = entry["rows"]["gbumap"], entry["rows"]["umap-learn"]
        for metric, label, test in (
            ("knn_preservation", "kNN preservation ≥ 0.95×", lambda a, b: a >= 0.95 * b),
            ("radial_anisotropy", "radial anisotropy ≤ 1.25×", lambda a, b: a <= 1.25 * b),
        ):
            a, b = np.mean([r[metric] for r in ours]), np.mean([r[metric] for r in theirs])
            add(f"{name}: {label} umap-learn's (mean of {len(ours)} seeds)", f"{a:.3f} vs {b:.3f} ({a / b:.2f}×)",
                bool(test(a, b)))
    return lines


def simulated_data(adata) -> dict:
    """The input representation and known structure of a simulated AnnData, for ``layout_quality``."""
    obs = adata.obs
    return {
        "rep": np.asarray(adata.obsm["X_pca"], dtype=np.float32),
        "labels": obs["cell_type"].astype(str).to_numpy(),
        "state": obs["state"].to_numpy(np.float64),
        "time": obs["trajectory_time"].to_numpy(np.float64),
        "branch": obs["fate"].astype(str).where(obs["fate"].notna(), None).to_numpy(),
    }


def plot_layouts(embeddings: dict, labels: np.ndarray, title: str, path: Path, max_cells: int = 30_000) -> None:
    """The tools' maps side by side, coloured by label (the same random cells in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [t for t in ("scanpy", "umap-learn", "gbumap", "reference_1") if t in embeddings]
    if not order:
        return
    names = {"scanpy": "scanpy / umap-learn", "umap-learn": "umap-learn", "gbumap": "gbumap",
             "reference_1": "glass-box-umap, 1 epoch"}
    cats = sorted(set(labels))
    cmap = plt.get_cmap("tab20")
    colour = {c: cmap(i % 20) for i, c in enumerate(cats)}
    rng = np.random.default_rng(0)
    shown = rng.permutation(len(labels))[:max_cells]
    fig, axes = plt.subplots(1, len(order), figsize=(4.6 * len(order), 4.6))
    for ax, tool in zip(np.atleast_1d(axes), order):
        emb = embeddings[tool]
        ax.scatter(emb[shown, 0], emb[shown, 1], s=1.5 if len(shown) > 5000 else 5, linewidths=0,
                   c=[colour[c] for c in labels[shown]], rasterized=True)
        ax.set_title(names[tool])
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour[c], label=c) for c in cats]
    fig.suptitle(title + (f" ({len(shown):,} of {len(labels):,} drawn)" if len(shown) < len(labels) else ""))
    fig.tight_layout()
    # outside the panels, whatever the length of the labels; the saved figure grows to hold it
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def real_data(out: Path, seeds=REAL_SEEDS) -> dict:
    """gbumap beside umap-learn on pbmc68k_reduced (log data) and digits, several seeds each."""
    import scanpy as sc
    import umap
    from sklearn.datasets import load_digits

    import gbumap

    results = {}
    base = sc.datasets.pbmc68k_reduced().raw.to_adata()  # log-normalised expression
    sc.pp.pca(base, n_comps=50, random_state=0)
    X_digits, y_digits = load_digits(return_X_y=True)
    sets = {
        "pbmc68k_reduced": {"rep": base.obsm["X_pca"].astype(np.float32),
                            "labels": base.obs["bulk_labels"].astype(str).to_numpy()},
        "digits": {"rep": X_digits.astype(np.float32), "labels": y_digits.astype(str)},
    }
    for name, data in sets.items():
        rows: dict = {"umap-learn": [], "gbumap": []}
        first = {}
        for seed in seeds:
            if name == "digits":
                theirs = umap.UMAP(random_state=seed).fit_transform(X_digits)
                ours = gbumap.GlassBoxUMAP(random_state=seed).fit_transform(X_digits)
            else:
                adata = base.copy()
                sc.pp.neighbors(adata, n_neighbors=15, random_state=seed)
                sc.tl.umap(adata, random_state=seed)
                theirs = adata.obsm["X_umap"]
                gbumap.tl.fit(adata, verbose=False, random_state=seed)
                ours = adata.obsm["X_gbumap"]
            rows["umap-learn"].append(layout_quality(data, theirs))
            rows["gbumap"].append(layout_quality(data, ours))
            print(f"  {name} seed {seed}: umap-learn {rows['umap-learn'][-1]}\n    gbumap {rows['gbumap'][-1]}", flush=True)
            if not first:
                first = {"umap-learn": theirs, "gbumap": ours}
        picture = out / f"layout_{name}.png"
        plot_layouts(first, data["labels"], f"{name} (seed {seeds[0]})", picture)
        results[name] = {"rows": rows, "picture": picture.name, "seeds": list(seeds)}
    return results


LABELS = {
    "gbumap": "gbumap end to end (PCA, graph, training, contributions)",
    "gbumap_reuse": "gbumap on a reused sc.pp.neighbors graph (training + contributions)",
    "gbumap_zero": "gbumap, baseline='zero'",
    "scanpy": "sc.pp.pca + sc.pp.neighbors + sc.tl.umap",
    "reference_1": "glass-box-umap 0.1.0, 1 epoch",
    "reference_2": "glass-box-umap 0.1.0, 2 epochs",
}


def derived(rows: dict) -> dict:
    """The ratios the targets are stated in."""
    out = {}
    g = rows.get("gbumap", {}).get("warm")
    s = rows.get("scanpy", {}).get("warm")
    reuse = rows.get("gbumap_reuse", {}).get("warm")
    r1 = rows.get("reference_1", {}).get("warm")
    r2 = rows.get("reference_2", {}).get("warm")
    if g and s:
        out["gbumap_over_scanpy_time"] = round(g["timings"]["total"] / s["timings"]["total"], 3)
        out["gbumap_over_scanpy_peak_rss"] = round(g["peak_rss_mb"] / s["peak_rss_mb"], 3)
    if reuse and s:
        t = reuse["timings"]["total"]
        out["reused_graph_training_plus_contributions_over_sc_tl_umap"] = round(t / s["timings"]["umap"], 3)
    for tool, label in (("gbumap", "gbumap_stages_s"), ("gbumap_reuse", "gbumap_reused_graph_stages_s")):
        run = rows.get(tool, {}).get("warm")
        if run:
            stages = {k[len("stage_"):]: v for k, v in run["timings"].items() if k.startswith("stage_")}
            stages["other (imports, checks, writing)"] = run["timings"]["total"] - sum(stages.values())
            out[label] = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
    if s:
        out["scanpy_stages_s"] = ", ".join(f"{k} {s['timings'][k]:.1f}" for k in ("pca", "neighbors", "umap"))
    if g:
        out["transform_of_query_with_contributions_s"] = round(g["timings"]["transform_query_with_contributions"], 2)
        out["reconstruction_error"] = f"{g['reconstruction_error']:.1e}"
    if r1 and r2:
        per_epoch = r2["timings"]["fit"] - r1["timings"]["fit"]
        if per_epoch > 0:
            est200 = r1["timings"]["fit"] + 199 * per_epoch + r1["timings"]["contributions"]
            out["reference_200_epochs_extrapolated_s"] = round(est200, 1)
            if g:
                out["gbumap_speedup_vs_reference_200_epochs"] = round(est200 / g["timings"]["total"], 1)
        else:
            out["reference_200_epochs_extrapolated_s"] = (
                "not extrapolable: its 2-epoch fit was not slower than its 1-epoch fit (fixed costs dominate)"
            )
        if g:
            out["gbumap_speedup_vs_reference_1_epoch"] = round(r1["timings"]["total"] / g["timings"]["total"], 2)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    tools = sorted({t for rows in results["sizes"].values() for t in rows})
    for tool in tools:
        xs, ys = [], []
        for size, rows in results["sizes"].items():
            warm = rows.get(tool, {}).get("warm")
            if warm:
                xs.append(int(size))
                ys.append(warm["timings"]["total"])
        if xs:
            ax.loglog(xs, ys, "o-", label=LABELS.get(tool, tool))
    ax.set_xlabel("cells (× 2,000 genes)")
    ax.set_ylabel("wall time, later run (s)")
    ax.set_title(f"Time against cells ({results['machine']['cores']} CPU cores)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 90_000, 300_000])
    parser.add_argument("--quick", action="store_true", help="one small size (2,000 cells), for CI smoke")
    parser.add_argument("--tools", nargs="+", default=ALL_TOOLS, choices=ALL_TOOLS)
    parser.add_argument("--reference-max-cells", type=int, default=90_000, help="largest size for glass-box-umap")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--cache", type=Path, default=HERE / "results" / "raw")
    parser.add_argument(
        "--no-cold", action="store_true", help="skip the empty-numba-cache pass; use the usual (warm) cache"
    )
    parser.add_argument(
        "--cold-sizes", type=int, nargs="*", default=None,
        help="sizes at which to measure the first run too (default: every size)",
    )
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the markdown and plot from the JSON already in --out"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the pbmc68k_reduced and digits section")
    parser.add_argument(
        "--real-only", action="store_true", help="only (re)measure the pbmc68k_reduced and digits section"
    )
    args = parser.parse_args(argv)
    if args.report:
        _save(json.loads((args.out / "benchmark.json").read_text()), args.out)
        return 0
    sizes = [2_000] if args.quick else args.sizes
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    tools = [t for t in args.tools if not t.startswith("reference") or reference_available(python)]
    if len(tools) < len(args.tools):
        print("glass-box-umap is not importable here: skipping it (pip install glass-box-umap==0.1.0)")

    import anndata as ad

    from gbumap.datasets import truth_matrix

    if args.real_only:
        results = json.loads((args.out / "benchmark.json").read_text())
        results["real"] = real_data(args.out)
        _save(results, args.out)
        return 0
    results = {"machine": machine_info(), "sizes": {}, "derived": {}}
    numba_cache = Path(tempfile.mkdtemp(prefix="gbumap-bench-numba-"))
    for size in sizes:
        data = make_data(size, args.cache)
        adata = ad.read_h5ad(data)
        truth = truth_matrix(adata)
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        import scanpy as sc

        sc.pp.pca(adata, n_comps=50)
        known = simulated_data(adata)
        rows = {}
        embeddings = {}
        for tool in tools:
            if tool.startswith("reference") and size > args.reference_max_cells:
                continue
            row: dict = {}
            cold = not args.no_cold and (args.cold_sizes is None or size in args.cold_sizes)
            passes = ["cold", "warm"] if cold else ["warm"]
            for name in passes:
                # the first run starts from an empty numba cache; the later run reuses what it compiled
                cache = numba_cache / f"{size}-{tool}" if cold else None
                out = args.out / "raw" / f"{size}" / f"{tool}-{name}"
                print(f"[{size:,} cells] {tool} ({'first run' if name == 'cold' else 'later run'})", flush=True)
                res = run_worker(tool, data, out, cache, python)
                if res is not None:
                    row[name] = res
            final = row.get("warm") or row.get("cold")
            if final is not None:
                emb = np.load(out / "embedding.npy")
                embeddings[tool] = emb
                row["quality"] = layout_quality(known, emb)
                scores = np.load(out / "type_scores.npy")
                row["auroc"] = attribution_auroc(scores, final["categories"], truth)
                if tool == "scanpy":
                    mean_scores = np.load(out / "mean_expression_scores.npy")
                    row["auroc_mean_expression"] = attribution_auroc(mean_scores, final["categories"], truth)
                print(f"   total {final['timings']['total']:.1f} s, quality {row['quality']}, AUROC {row['auroc']:.3f}")
            rows[tool] = row
        results["sizes"][str(size)] = rows
        results["derived"][str(size)] = derived(rows)
        picture = args.out / f"layout_{size}.png"
        plot_layouts(embeddings, labels, f"{size:,} simulated cells", picture)
        results.setdefault("pictures", {})[str(size)] = picture.name
        if "scanpy" in rows and "auroc_mean_expression" in rows["scanpy"]:
            results["derived"][str(size)]["auroc_rank_genes_groups_t_test"] = round(rows["scanpy"]["auroc"], 3)
            results["derived"][str(size)]["auroc_mean_expression"] = round(rows["scanpy"]["auroc_mean_expression"], 3)
        _save(results, args.out)
    if not args.quick and not args.no_real:
        results["real"] = real_data(args.out)
        _save(results, args.out)
    return 0


def slopes(results: dict) -> dict:
    """Log-log slope of later-run time against cells, per tool, over its sizes from 30k up."""
    out = {}
    for tool in sorted({t for rows in results["sizes"].values() for t in rows}):
        pts = sorted(
            (int(size), rows[tool]["warm"]["timings"]["total"])
            for size, rows in results["sizes"].items()
            if int(size) >= 30_000 and "warm" in rows.get(tool, {})
        )
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            span = f"{pts[0][0] // 1000}k → {pts[-1][0] // 1000}k"
            out[tool] = {"slope": float(np.polyfit(x, y, 1)[0]), "span": span}
    return out


def _save(results: dict, out: Path) -> None:
    results["slope"] = slopes(results)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "benchmark.md").write_text(markdown(results) + "\n")
    plot(results, out / "time_vs_cells.png")


if __name__ == "__main__":
    sys.exit(main())
