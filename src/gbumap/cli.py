"""The ``gbumap`` command line: ``gbumap demo`` and ``gbumap fit``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main"]


def _stored_reduction(params) -> str | int:
    reduction = str(params.get("reduction", "l2"))
    return int(reduction) if reduction.isdigit() else reduction


def _summary(adata, key: str, groupby: str | None, n_top: int = 5) -> str:
    from ._registry import read_record
    from .get import rank_features_df

    record = read_record(adata, key)
    info = record.model.training_info_
    lines = [
        f"cells × genes: {adata.n_obs} × {adata.n_vars}; model features: {len(record.feature_names)}",
        f"training: {int(info['n_steps'])} steps in {float(info['seconds']):.1f} s on {info['device']}",
        "reconstruction error (max |Σ contributions − embedding| / max |embedding|): "
        f"{float(record.reconstruction_error['max_rel']):.2e}",
    ]
    rank_key = f"rank_features_{key}"
    if groupby is not None and rank_key in adata.uns:
        from ._ranking import MIN_GROUP_SIZE, score_label

        params = adata.uns[rank_key]["params"]
        label = score_label(str(params.get("score", "logfc")), _stored_reduction(params), key)
        from .get._rank import _ranked_group_sizes

        sizes = _ranked_group_sizes(adata, rank_key)
        lines.append(f"top genes per {groupby} (ranked by {label}):")
        for group in adata.uns[rank_key]["names"].dtype.names:
            top = rank_features_df(adata, group, key=rank_key)["names"].head(n_top)
            size = sizes.get(group)
            if size is None:
                lines.append(f"  {group}: {', '.join(top)}")
                continue
            mark = f"; fewer than {MIN_GROUP_SIZE}: fragile list" if size < MIN_GROUP_SIZE else ""
            lines.append(f"  {group} ({size} cells{mark}): {', '.join(top)}")
    return "\n".join(lines)


def _figures(adata, key: str, groupby: str | None, out: Path) -> list[Path]:
    """Write the standard figures; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from . import pl

    written = []
    fig = pl.top_features(adata, key=key, n_top=10, return_fig=True, show=False)
    written.append(out / "top_features.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    fig = pl.reconstruction(adata, key=key, return_fig=True, show=False)
    written.append(out / "reconstruction.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    if groupby is not None:
        fig = pl.rank_features(adata, groupby, key=key, n_genes=8, return_fig=True, show=False)
        written.append(out / "rank_features.png")
        fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return written
    written.append(out / "explorer.html")
    pl.explore(adata, key=key, groupby=groupby, path=written[-1])
    return written


def _demo(args: argparse.Namespace) -> int:
    import scanpy as sc

    from . import tl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # the log-normalised expression (adata.raw); X of pbmc68k_reduced holds z-scored values
    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    print(
        f"gbumap demo: pbmc68k_reduced ({adata.n_obs} cells × {adata.n_vars} genes, log-normalised), "
        "bundled with scanpy"
    )
    with warnings.catch_warnings():
        # the summary below marks the small groups beside their lists
        warnings.simplefilter("ignore", tl.SmallGroupWarning)
        tl.glassbox_umap(adata, groupby="bulk_labels", top_genes=20, verbose=not args.quiet, n_steps=args.n_steps)
    figures = [] if args.no_figures else _figures(adata, "gbumap", "bulk_labels", out)
    path = out / "pbmc68k_gbumap.h5ad"
    adata.write_h5ad(path)
    print(_summary(adata, "gbumap", "bulk_labels"))
    print(f"wrote {path}")
    for fig in figures:
        print(f"wrote {fig}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import anndata as ad

    from . import tl

    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        raise FileNotFoundError(f"input file {str(source)!r} does not exist.")
    if not target.resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder of the output file {str(target)!r} does not exist.")
    if target.resolve() == source.resolve():
        raise ValueError("the output file must differ from the input file.")
    try:
        adata = ad.read_h5ad(source)
    except OSError as err:
        raise OSError(f"cannot read {str(source)!r} as an .h5ad file ({err}).") from err
    params = {}
    if args.n_steps is not None:
        params["n_steps"] = args.n_steps
    if args.baseline is not None:
        params["baseline"] = args.baseline
    with warnings.catch_warnings():
        # the summary marks the small groups beside their lists
        warnings.simplefilter("ignore", tl.SmallGroupWarning)
        tl.glassbox_umap(
            adata,
            groupby=args.groupby,
            key_added=args.key_added,
            layer=args.layer,
            use_rep=args.use_rep,
            neighbors_key=args.neighbors_key,
            top_genes=args.top_genes,
            verbose=not args.quiet,
            **params,
        )
    adata.write_h5ad(args.output)
    print(_summary(adata, args.key_added, args.groupby))
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="gbumap",
        description="Glass-box UMAP: embeddings whose coordinates are exact sums of per-gene contributions.",
    )
    parser.add_argument("--version", action="version", version=f"gbumap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run the whole workflow on bundled PBMC data",
        description="Fit on scanpy's bundled pbmc68k_reduced, compute contributions and per-cell-type gene "
        "rankings, write figures and an .h5ad, and print a summary. Needs no network.",
    )
    demo.add_argument("--out", default="gbumap_demo", help="output folder (default: ./gbumap_demo)")
    demo.add_argument("--n-steps", type=int, default=None, help="training steps (default: automatic)")
    demo.add_argument("--no-figures", action="store_true", help="skip the figures")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a model on an .h5ad file",
        description="Read IN.h5ad, fit gbumap (embedding, model registry, contributions, optional rankings) "
        "and write OUT.h5ad.",
    )
    fit.add_argument("input", help="input .h5ad (log-normalised expression in X or --layer)")
    fit.add_argument("-o", "--output", required=True, help="output .h5ad")
    fit.add_argument("--groupby", default=None, help="obs column to rank genes by, e.g. cell_type")
    fit.add_argument("--layer", default=None, help="train on this layer instead of X")
    fit.add_argument("--use-rep", default=None, help="train on this obsm representation, e.g. X_pca")
    fit.add_argument("--neighbors-key", default=None, help="reuse this sc.pp.neighbors graph")
    fit.add_argument("--key-added", default="gbumap", help="model key (default: gbumap)")
    fit.add_argument("--top-genes", type=int, default=None, help="also write a sparse top-k contribution layer")
    fit.add_argument("--baseline", choices=["mean", "zero"], default=None, help="contribution baseline")
    fit.add_argument("--n-steps", type=int, default=None, help="training steps (default: automatic)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(func=_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gbumap`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, OSError) as err:
        # KeyError's str() adds quotes around the message; print the message itself
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"gbumap {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
