"""Layout-quality figures for any embedding, measured against its input representation.

Pure NumPy / scikit-learn functions on arrays; :func:`gbumap.tl.quality` applies
them to the embeddings stored in an AnnData. Definitions follow the project's
yardsticks:

* **kNN preservation@k**: for sampled cells, the share of their ``k`` nearest
  neighbours in the input that are also among their ``k`` nearest in the
  embedding (neighbours searched among all cells, exactly).
* **Trustworthiness@k** (Venna & Kaski), on a sample (it is quadratic in cells).
* **Label kNN accuracy**: 5-fold cross-validated accuracy of a ``k``-nearest-
  neighbour classifier of the labels from the embedding.
* **Radial anisotropy**: per group, ``sqrt(var_along / var_across)`` of the
  group's cells, where "along" is the direction from the map's centre (the
  mean of all cells) to the group's centroid and "across" the mean variance
  perpendicular to it; the median over groups. A starburst (each group a
  streak pointing at the centre) scores well above 1.
* **Centroid-distance correlation**: Spearman correlation between the pairwise
  distances of group centroids in the input and in the embedding.
* **Continuous structure**: within each group, the R² of a linear fit of a
  known continuous variable (a state, a differentiation time) from the
  embedding coordinates; the median over groups.
* **Batch mixing**: the mean share of a cell's 30 map neighbours from other
  batches, over that share under random mixing (0 apart, 1 mixed); the
  field's integration metrics (iLISI, cLISI, ASW, graph connectivity, NMI/ARI)
  come from ``scib-metrics``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "knn_preservation",
    "trustworthiness",
    "label_accuracy",
    "radial_anisotropy",
    "centroid_distance_correlation",
    "continuous_r2",
    "trajectory_correlation",
    "batch_mixing",
    "integration_scores",
]

_MIN_GROUP = 10  # groups with fewer cells are too small for a variance or a fit


def _neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest cells of ``data`` for each row of ``queries`` (self excluded)."""
    from sklearn.neighbors import NearestNeighbors

    found = NearestNeighbors(n_neighbors=k + 1).fit(data).kneighbors(data[queries], return_distance=False)
    out = np.empty((len(queries), k), dtype=np.int64)
    for i, (q, row) in enumerate(zip(queries, found)):
        row = row[row != q]  # the cell itself, wherever ties put it
        out[i] = row[:k]
    return out


def knn_preservation(high: np.ndarray, low: np.ndarray, sample: np.ndarray, k: int = 15) -> float:
    """Mean share of each sampled cell's ``k`` input neighbours kept among its ``k`` embedding neighbours."""
    a = _neighbours(high, sample, k)
    b = _neighbours(low, sample, k)
    shared = [np.intersect1d(x, y, assume_unique=True).size for x, y in zip(a, b)]
    return float(np.mean(shared) / k)


def trustworthiness(high: np.ndarray, low: np.ndarray, sample: np.ndarray, k: int = 15) -> float:
    """Trustworthiness@k of the embedding restricted to the sampled cells."""
    from sklearn.manifold import trustworthiness as sk_trust

    return float(sk_trust(high[sample], low[sample], n_neighbors=k))


def label_accuracy(low: np.ndarray, labels: np.ndarray, sample: np.ndarray, k: int = 15) -> float:
    """5-fold cross-validated kNN-classifier accuracy of ``labels`` from the embedding."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels)[sample]
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(5, counts.min())) if len(counts) > 1 else 0
    if folds < 2:
        return float("nan")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    return float(cross_val_score(KNeighborsClassifier(min(k, len(y) - 1)), low[sample], y, cv=cv).mean())


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels)
    out = []
    for value in np.unique(labels[~_missing(labels)]):
        idx = np.flatnonzero(labels == value)
        if idx.size >= _MIN_GROUP:
            out.append(idx)
    return out


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype == object:
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
    return np.zeros(values.shape, dtype=bool)


def radial_anisotropy(low: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
    """Median over groups of ``sqrt(var along centre→centroid / var across)``, and the per-group values."""
    low = np.asarray(low, dtype=np.float64)
    centre = low.mean(axis=0)
    per_group: dict[str, float] = {}
    labels = np.asarray(labels)
    for idx in _groups(labels):
        pts = low[idx]
        centroid = pts.mean(axis=0)
        direction = centroid - centre
        norm = np.linalg.norm(direction)
        if norm == 0:
            continue
        direction /= norm
        dev = pts - centroid
        along = dev @ direction
        var_along = float(along.var())
        var_across = float((dev**2).sum(axis=1).mean() - var_along) / max(low.shape[1] - 1, 1)
        if var_across > 0:
            per_group[str(labels[idx[0]])] = float(np.sqrt(var_along / var_across))
    median = float(np.median(list(per_group.values()))) if per_group else float("nan")
    return median, per_group


def centroid_distance_correlation(high: np.ndarray, low: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation of the groups' pairwise centroid distances, input against embedding."""
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    groups = _groups(labels)
    if len(groups) < 3:
        return float("nan")
    c_high = np.stack([np.asarray(high[idx], dtype=np.float64).mean(axis=0) for idx in groups])
    c_low = np.stack([np.asarray(low[idx], dtype=np.float64).mean(axis=0) for idx in groups])
    return float(spearmanr(pdist(c_high), pdist(c_low)).statistic)


def continuous_r2(low: np.ndarray, values: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Median over groups of the R² of a linear fit of ``values`` from the embedding coordinates.

    Cells whose value is NaN are left out; ``labels=None`` fits all cells at once.
    """
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    if labels is None:
        groups = [np.flatnonzero(known)]
    else:
        labels = np.asarray(labels).astype(object)
        labels[~known] = None
        groups = _groups(labels)
    scores = []
    for idx in groups:
        if idx.size < _MIN_GROUP:
            continue
        y = values[idx]
        if y.var() == 0:
            continue
        design = np.column_stack([np.asarray(low[idx], dtype=np.float64), np.ones(idx.size)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        scores.append(1.0 - resid.var() / y.var())
    return float(np.median(scores)) if scores else float("nan")


def trajectory_correlation(low: np.ndarray, time: np.ndarray, branch: np.ndarray, root_quantile: float = 0.1) -> float:
    """Median over branches of the Spearman correlation between time and distance from the root.

    The root is the centroid of the earliest cells (time below its
    ``root_quantile``) over all branches; a branch whose cells move away from
    it as time grows scores near 1, one whose transitional cells collapse onto
    their fate scores near 0.
    """
    from scipy.stats import spearmanr

    time = np.asarray(time, dtype=np.float64)
    on = ~np.isnan(time)
    if on.sum() < _MIN_GROUP:
        return float("nan")
    early = on & (time <= np.quantile(time[on], root_quantile))
    root = np.asarray(low[early], dtype=np.float64).mean(axis=0)
    dist = np.linalg.norm(np.asarray(low, dtype=np.float64) - root, axis=1)
    branch = np.asarray(branch).astype(object)
    branch[~on] = None
    scores = [spearmanr(time[idx], dist[idx]).statistic for idx in _groups(branch)]
    return float(np.median(scores)) if scores else float("nan")


def batch_mixing(low: np.ndarray, batch: np.ndarray, sample: np.ndarray, k: int = 30) -> float:
    """Mean share of the sampled cells' ``k`` map neighbours from other batches, over that share at random.

    The share expected under random mixing is, for a cell of batch ``b``,
    ``(n − n_b) / (n − 1)``; the figure is ``mean(observed) / mean(expected)``:
    0 when batches lie apart, about 1 when they are mixed as if at random.
    """
    batch = np.asarray(batch)
    neighbours = _neighbours(low, sample, k)
    observed = (batch[neighbours] != batch[sample][:, None]).mean(axis=1)
    _, inverse, counts = np.unique(batch, return_inverse=True, return_counts=True)
    expected = (len(batch) - counts[inverse[sample]]) / max(len(batch) - 1, 1)
    return float(observed.mean() / expected.mean()) if expected.mean() > 0 else float("nan")


def integration_scores(low: np.ndarray, batch: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """The field's integration metrics from ``scib-metrics`` (the maintained implementation), on ``low``.

    Batch removal: iLISI (scaled to [0, 1]) and, with labels, batch ASW and
    graph connectivity; biological conservation (with labels): cLISI, label
    ASW, and NMI/ARI of k-means clusters against the labels. Neighbours: the
    90 nearest (exact), as scib-metrics' LISI uses.
    """
    try:
        import scib_metrics
        from scib_metrics.nearest_neighbors import NeighborsResults
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The field's integration metrics come from scib-metrics: pip install 'gbumap[integration]' "
            "(or pip install scib-metrics), or pass integration_metrics=False for batch mixing alone."
        ) from err
    from sklearn.neighbors import NearestNeighbors

    low = np.ascontiguousarray(low, dtype=np.float32)
    k = min(90, len(low) - 1)
    distances, indices = NearestNeighbors(n_neighbors=k).fit(low).kneighbors(low)
    neighbours = NeighborsResults(indices=indices, distances=distances)
    batch = np.asarray(batch).astype(str)
    out = {"ilisi": float(scib_metrics.ilisi_knn(neighbours, batch))}
    if labels is not None:
        labels = np.asarray(labels).astype(str)
        out["batch_asw"] = float(scib_metrics.silhouette_batch(low, labels, batch))
        out["graph_connectivity"] = float(scib_metrics.graph_connectivity(neighbours, labels))
        out["clisi"] = float(scib_metrics.clisi_knn(neighbours, labels))
        out["label_asw"] = float(scib_metrics.silhouette_label(low, labels))
        out.update({k_: float(v) for k_, v in scib_metrics.nmi_ari_cluster_labels_kmeans(low, labels).items()})
    return out
