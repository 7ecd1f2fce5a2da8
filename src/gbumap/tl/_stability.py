"""``gbumap.tl.stability``: how much a map and its gene rankings change with the training seed."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._dask import gather_rows, is_dask_array
from .._ranking import rank_groups, rank_positions, ranked_values, records, warn_small_groups
from .._registry import encode_weights
from .._results import KINDS, Result, result_key, write_result
from .._runs import load_run_weights, run_model, run_view
from .._validation import GroupLabels, as_matrix, check_int, check_number, obs_groups
from .._view import ModelView, model_view

if TYPE_CHECKING:  # pragma: no cover - annotations only; the estimator imports torch
    from .._estimator import GlassBoxUMAP

__all__ = ["stability", "procrustes_align", "load_run_weights"]

#: The ranking compared across runs: ``tl.rank_features``' defaults.
_SCORE, _REDUCTION = "weighted_mean", "l2"


def procrustes_align(Y: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, float]:
    """``Y`` moved onto ``R`` by rotation/reflection, translation and one global scale (least squares).

    Returns the aligned ``Y`` (in ``R``'s units) and the scale applied.
    """
    from scipy.linalg import orthogonal_procrustes

    Y = np.asarray(Y, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    y0, r0 = Y.mean(axis=0), R.mean(axis=0)
    Yc, Rc = Y - y0, R - r0
    rotation, trace = orthogonal_procrustes(Yc, Rc)  # argmin_Q |Yc Q − Rc|, trace = sum of singular values
    norm2 = float(np.sum(Yc**2))
    scale = float(trace) / norm2 if norm2 > 0 else 1.0
    return scale * Yc @ rotation + r0, scale


def _embedding(model: GlassBoxUMAP, X, labels: np.ndarray | None = None) -> np.ndarray:
    """``model.transform(X)`` in float64; for Dask input, gathered chunk by chunk (any scheduler)."""
    if is_dask_array(X):
        out = np.empty((X.shape[0], model.n_components), dtype=model.numpy_dtype)
        return gather_rows(model.transform(X, batches=labels), out).astype(np.float64)
    return model.transform(X, batches=labels).astype(np.float64)


def _shared_graph(adata: AnnData, view: ModelView, X, seed: int) -> tuple[sp.csr_matrix, str]:
    """The reference's neighbour graph, built once: scanpy's when the reference used it, else searched again."""
    neighbors = view.record.neighbors
    conn = neighbors.get("connectivities_key")
    if neighbors.get("source") == "scanpy" and conn in adata.obsp:
        return sp.csr_matrix(adata.obsp[conn], dtype=np.float32), f"scanpy:{conn}"
    from .._estimator import GlassBoxUMAP

    ref = view.estimator
    builder = GlassBoxUMAP(**{**ref.get_params(), "random_state": seed, "checkpoint_path": None})
    if getattr(ref, "correction_", None) is not None:  # the graph of the corrected input
        graph = builder.neighbor_graph(X, projection=ref, batches=view.batch_labels(adata))
    else:
        graph = builder.neighbor_graph(X, components=ref.components_)
    return sp.csr_matrix(graph, dtype=np.float32), "gbumap"


def _check_args(n_models, n_top, bootstrap, random_state) -> None:
    check_int(n_models, "n_models", 2, words="an integer >= 2 (the reference model plus at least one more run)")
    check_int(n_top, "n_top", words="an integer >= 1 (the size of the top lists compared)")
    if bootstrap is not None:
        words = "a fraction of cells in (0, 1] (e.g. 0.8), or None to train on all cells"
        check_number(bootstrap, "bootstrap", 0, strict=True, maximum=1, words=words)
    check_int(random_state, "random_state", None, optional=True)


def stability(
    adata: AnnData,
    n_models: int = 5,
    *,
    key: str = "gbumap",
    groupby: str | None = None,
    n_top: int = 20,
    bootstrap: float | None = None,
    random_state: int | None = None,
    key_added: str | None = None,
    verbose: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """How much the map and its gene rankings change when only the training seed changes.

    The model under ``key`` is the reference run. ``n_models − 1`` further
    models are trained with the reference's parameters and another seed, on
    the same input, sharing the reference's baseline, PCA loadings and input
    scaling, and one neighbour graph (built once, with the reference's
    settings and seed, or the reference's scanpy graph), so ``k`` models cost
    about ``k`` trainings. With ``bootstrap=f`` each further run trains on a
    random fraction ``f`` of the cells (its graph: the shared graph restricted
    to them) and then embeds all cells.

    Each run's embedding is aligned to the reference embedding
    ``obsm["X_<key>"]`` by rotation or reflection, translation and one global
    scale (orthogonal Procrustes). A cell's *spread* is the root mean square
    distance of its aligned positions, over the further runs, from its
    reference position, in the reference map's units.

    With ``groupby``, every run ranks the genes of each group exactly as
    :func:`gbumap.tl.rank_features` does by default (``score="weighted_mean"``,
    ``reduction="l2"``; the same function is called for each run), and the
    ranks are summarised per gene. Stable genes are those with
    ``top_fraction >= 0.8``.

    Parameters
    ----------
    adata
        AnnData with a fitted model under ``key`` and its embedding ``obsm["X_<key>"]``.
    n_models
        Number of models compared, the reference included (at least 2).
    key
        The reference model's key.
    groupby
        Categorical ``obs`` column: rank the genes of each group in every run.
    n_top
        Size of the top lists counted by ``top_fraction``.
    bootstrap
        Fraction of the cells, in (0, 1], each further run trains on (a new
        random subset per run); ``None`` trains on all cells.
    random_state
        Seed of the first further run; the others use the next integers.
        Default: the reference's seed + 1. A run with the reference's seed
        (on the CPU) repeats the reference exactly.
    key_added
        ``uns`` key of the result and prefix of the ``obs`` column (default ``"stability_<key>"``).
    verbose
        Show a progress bar over the runs (and each run's training bar).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` when ``copy=False`` (``adata`` is updated), else the new AnnData, with:

    ``obs["<key_added>_spread"]``
        Per cell, the RMS distance of its aligned positions from its reference position.
    ``uns[key_added]``
        ``params``; ``seeds`` of the further runs; ``alignment``
        (``residual``: per run, the RMS over cells of the aligned distance;
        ``scale``: the scale applied); ``timings`` (``graph``: seconds to build
        the shared graph, ``training``: seconds per further run,
        ``reference_training``); ``models`` (``{"run_1": {"seed", "weights",
        "loss"}, ...}``, the further runs' encoder weights as plain arrays,
        read back by :func:`gbumap.get.stability_models`). With ``groupby``,
        in the format of ``sc.tl.rank_genes_groups``, per group, genes ordered
        by median rank: ``names``, ``scores`` (the reference run's score),
        ``median_rank``, ``rank_iqr`` (interquartile range of the rank over
        runs), ``top_fraction`` (fraction of runs with the gene in the top
        ``n_top``); read one group with :func:`gbumap.get.rank_features_df`.

    Examples
    --------
    >>> import scanpy as sc, gbumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gbumap.tl.fit(adata, n_steps=100, verbose=False)  # doctest: +SKIP
    >>> gbumap.tl.stability(adata, n_models=3, groupby="bulk_labels", verbose=False)  # doctest: +SKIP
    >>> table = gbumap.get.rank_features_df(adata, "CD14+ Monocyte", key="stability_gbumap")  # doctest: +SKIP
    >>> table[table["top_fraction"] >= 0.8]  # doctest: +SKIP
    >>> gbumap.pl.stability(adata, group="CD14+ Monocyte")  # doctest: +SKIP
    """
    from tqdm import tqdm

    _check_args(n_models, n_top, bootstrap, random_state)
    view = model_view(adata, key)
    groups = None
    if groupby is not None:
        groups = obs_groups(adata, groupby, min_groups=2, min_cells=2, purpose="; ranking needs at least 2 per group")
    if view.embedding_key not in adata.obsm:
        raise KeyError(f"obsm[{view.embedding_key!r}] not found; run gbumap.tl.fit(adata, key_added={key!r}).")
    key_added = result_key(adata, "stability", key_added, key)
    ref = view.estimator
    ref_seed = 0 if ref.random_state is None else int(ref.random_state)
    first = ref_seed + 1 if random_state is None else int(random_state)
    seeds = [first + i for i in range(int(n_models) - 1)]
    if ref_seed in seeds:
        warnings.warn(
            f"A run uses the reference's seed {ref_seed}; on the CPU it repeats the reference exactly and "
            "understates the variability. Pass another random_state.",
            UserWarning,
            stacklevel=2,
        )
    reference = np.asarray(adata.obsm[view.embedding_key], dtype=np.float64)

    # Dask or backed input stays lazy: the runs' passes (projection, embedding) go over its row chunks
    X = as_matrix(view.matrix(adata, lazy=True), name="X", dtype=ref.numpy_dtype)
    n_cells = X.shape[0]
    labels = view.batch_labels(adata)
    codes = None if labels is None else ref.correction_.codes(labels)
    t0 = time.perf_counter()
    graph, graph_source = _shared_graph(adata, view, X, ref_seed)
    graph_seconds = time.perf_counter() - t0

    from .._estimator import GlassBoxUMAP

    params = {**ref.get_params(), "checkpoint_path": None, "verbose": bool(verbose)}
    runs, train_seconds, infos = [], [], []
    with tqdm(total=len(seeds), desc="gbumap stability", unit="model", disable=not verbose, leave=False) as bar:
        for seed in seeds:
            if bootstrap is None and codes is None:
                est = GlassBoxUMAP(**{**params, "random_state": seed})
                est.fit(X, graph=graph, components=ref.components_)
                same = np.array_equal(est.baseline_, ref.baseline_) and est.input_norm_offset_ == ref.input_norm_offset_
                if not same:
                    raise RuntimeError(
                        f"The run with seed {seed} did not reproduce the reference's baseline and input scaling; "
                        "was the input changed after fitting? Refit the reference with gbumap.tl.fit."
                    )
            else:
                # a batch-corrected reference shares its correction with every run (refitting it would move it)
                share = 1.0 if bootstrap is None else float(bootstrap)
                n_train = max(int(round(share * n_cells)), ref.n_neighbors + 1)
                cells = np.sort(np.random.default_rng(seed).choice(n_cells, size=min(n_train, n_cells), replace=False))
                est = GlassBoxUMAP(**{**params, "random_state": seed})
                est.fit(X[cells], graph=graph[cells][:, cells], projection=ref,
                        batches=None if labels is None else labels[cells])
            train_seconds.append(float(est.training_info_["seconds"]))
            info = {"loss": est.loss_history_, "seconds": est.training_info_["seconds"]}
            infos.append(info)
            runs.append(run_model(ref, est.encoder_, seed, info))
            bar.update(1)

    embeddings = [_embedding(m, X, labels) for m in runs]
    aligned = [procrustes_align(Y, reference) for Y in embeddings]
    sq = np.stack([np.sum((A - reference) ** 2, axis=1) for A, _ in aligned])  # (runs, cells)
    spread = np.sqrt(sq.mean(axis=0))
    residual = np.sqrt(sq.mean(axis=1))

    ranking: dict = {}
    if groups is not None:
        warn_small_groups(groups.names, groups.sizes, groupby, None)
        ranking = _stability_ranking(adata, view, runs, groups, int(n_top))

    result = {
        "params": {
            "model_key": key,
            "n_models": int(n_models),
            "n_top": int(n_top),
            "bootstrap": "None" if bootstrap is None else float(bootstrap),
            "random_state": int(first),
            "reference_seed": int(ref_seed),
            "graph_source": graph_source,
            "groupby": "None" if groupby is None else str(groupby),
            **(
                {"reference": "rest", "method": "gbumap_stability", "use_raw": False, "score": _SCORE,
                 "reduction": _REDUCTION}
                if groupby is not None
                else {}
            ),
        },
        "seeds": np.asarray(seeds, dtype=np.int64),
        "alignment": {
            "residual": residual,
            "scale": np.asarray([s for _, s in aligned], dtype=np.float64),
        },
        "timings": {
            "graph": float(graph_seconds),
            "training": np.asarray(train_seconds, dtype=np.float64),
            "reference_training": float(ref.training_info_["seconds"]),
        },
        "models": {
            f"run_{i + 1}": {
                "seed": int(seed),
                "weights": encode_weights(model.encoder_),
                "loss": np.asarray(info["loss"], dtype=np.float32),
            }
            for i, (seed, model, info) in enumerate(zip(seeds, runs, infos))
        },
        **ranking,
    }
    obs = {f"{key_added}_spread": spread.astype(np.float32)}
    return write_result(adata, key_added, Result("stability", result, obs=obs), copy=copy)


def _stability_ranking(
    adata: AnnData, view: ModelView, runs: list[GlassBoxUMAP], labels: GroupLabels, n_top: int
) -> dict:
    """Rank summaries over the reference and the further runs, each ranked as :func:`gbumap.tl.rank_features` ranks.

    The reference uses its stored Jacobians when present; each run's contributions come from its own encoder.
    """
    genes = view.feature_names
    n_top = min(n_top, len(genes))
    ranking = dict(score=_SCORE, reduction=_REDUCTION)
    reference = rank_groups(adata, view, labels, **ranking)
    groups = list(reference["names"].dtype.names)
    ranks = [rank_positions(reference, genes)]
    scores = ranked_values(reference, genes, "scores")
    for i, model in enumerate(runs):
        run = rank_groups(adata, run_view(view, model, f"{view.key} (stability run {i + 1})"), labels, **ranking)
        ranks.append(rank_positions(run, genes))
    ranks = np.stack(ranks).astype(np.float64)  # (models, groups, genes)
    median = np.median(ranks, axis=0)
    q75, q25 = np.percentile(ranks, [75, 25], axis=0)
    top = (ranks <= n_top).mean(axis=0)
    fields: dict[str, dict] = {f: {} for f in KINDS["stability"].ranked}
    for gi, group in enumerate(groups):
        order = np.lexsort((ranks[0, gi], median[gi]))  # by median rank, ties by the reference's rank
        fields["names"][group] = genes[order]
        fields["scores"][group] = scores[gi][order]
        fields["median_rank"][group] = median[gi][order]
        fields["rank_iqr"][group] = (q75 - q25)[gi][order]
        fields["top_fraction"][group] = top[gi][order]
    dtypes = {"names": "O", "scores": "float32", "median_rank": "float32", "rank_iqr": "float32",
              "top_fraction": "float32"}
    return {name: records(cols, dtypes[name]) for name, cols in fields.items()}
