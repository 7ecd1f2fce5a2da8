"""``gbumap.tl.gene_set_contributions``: each gene set's exact share of every cell's position."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import BATCH_COPY, doc_params
from .._gmt import read_gmt
from .._ranking import benjamini_hochberg, records
from .._results import KINDS, Result, result_key, write_result
from .._validation import GroupLabels, check_batch_size, check_int, obs_groups
from .._view import ModelView, model_view

__all__ = ["GENE_SEPARATOR", "GeneSets", "gene_set_contributions"]

GeneSets = Mapping[str, Sequence[str]] | str | os.PathLike
# Joins a set's genes into one string in the stored tables: h5ad and zarr keep it whatever the set's name.
GENE_SEPARATOR = ","


@dataclass
class _Sets:
    """Gene sets matched to the model's genes."""

    names: list[str]
    size: np.ndarray  # distinct genes listed
    seen: list[np.ndarray]  # positions among the model's genes, in the order listed

    @property
    def n_seen(self) -> np.ndarray:
        return np.array([len(s) for s in self.seen], dtype=np.int64)

    def membership(self, n_genes: int) -> sp.csr_matrix:
        """``(genes, sets)`` 0/1 matrix."""
        rows = np.concatenate(self.seen)
        cols = np.repeat(np.arange(len(self.seen)), self.n_seen)
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_genes, len(self.seen)))

    def table(self, feature_names: np.ndarray) -> pd.DataFrame:
        genes = [GENE_SEPARATOR.join(feature_names[s]) for s in self.seen]
        return pd.DataFrame(
            {"size": self.size, "n_seen": self.n_seen, "genes": pd.array(genes, dtype=object)},
            index=pd.Index(self.names, dtype=object),
        )


def _as_gene_sets(gene_sets: GeneSets) -> dict[str, list[str]]:
    """``{name: distinct genes}`` from a mapping or a GMT path; empty input raises."""
    if isinstance(gene_sets, (str, os.PathLike)):
        return read_gmt(gene_sets)
    if not isinstance(gene_sets, Mapping):
        raise TypeError(
            f"gene_sets must be a dict {{set name: list of genes}} or the path of a GMT file; "
            f"got {type(gene_sets).__name__}."
        )
    if not gene_sets:
        raise ValueError("gene_sets is empty; pass at least one set, e.g. {'monocyte': ['LYZ', 'CST3']}.")
    sets: dict[str, list[str]] = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, (str, bytes)) or not isinstance(genes, Iterable):
            raise TypeError(
                f"Gene set {name!r} must be a list of gene names; got {type(genes).__name__} "
                f"({genes!r:.60}). Write a one-gene set as [{genes!r:.30}]."
            )
        distinct = list(dict.fromkeys(str(g).strip() for g in genes if str(g).strip()))
        if not distinct:
            raise ValueError(f"Gene set {name!r} lists no genes; remove it from gene_sets.")
        if str(name) in sets:
            raise ValueError(f"Two gene sets are named {str(name)!r}; set names must be unique.")
        sets[str(name)] = distinct
    return sets


def _match_sets(
    sets: dict[str, list[str]], feature_names: np.ndarray, min_genes: int, drop_small: bool = False
) -> tuple[_Sets, list[str]]:
    """The model's genes in each set, and the names of the sets dropped for holding fewer than ``min_genes``.

    Short sets raise, unless ``drop_small``; then only a library with no set
    left raises.
    """
    index = pd.Index(feature_names)
    seen = []
    for genes in sets.values():
        positions = index.get_indexer(pd.Index(genes, dtype=object))
        seen.append(positions[positions >= 0].astype(np.int64))
    matched = _Sets(list(sets), np.array([len(g) for g in sets.values()], dtype=np.int64), seen)
    short = [(n, size, k) for n, size, k in zip(matched.names, matched.size, matched.n_seen) if k < min_genes]
    if short and drop_small and len(short) < len(matched.names):
        keep = matched.n_seen >= min_genes
        kept = _Sets(
            [n for n, k in zip(matched.names, keep) if k], matched.size[keep], [g for g, k in zip(seen, keep) if k]
        )
        return kept, [n for n, _, _ in short]
    if short:
        listed = "; ".join(f"{n!r} lists {size} genes, {k} of them in the model" for n, size, k in short[:10])
        more = f" (and {len(short) - 10} more)" if len(short) > 10 else ""
        raise ValueError(
            f"{len(short)} gene set(s) have fewer than min_genes={min_genes} of the model's {len(feature_names)} "
            f"genes: {listed}{more}. Only genes the model was trained on have contributions; drop these sets "
            "(or lower min_genes, at least 1; drop_small=True skips them), or check that the set uses the same "
            "gene identifiers as var_names (symbols vs Ensembl IDs, species)."
        )
    return matched, []


def _set_terms(view: ModelView, sets: _Sets) -> dict:
    """What turns a batch's input and Jacobians into set contributions, computed once.

    With PCA, per set, the loadings of its genes ``P[:, S].T`` and the
    baseline's projection ``b_S · P[:, S].T``; without, the gene × set
    membership matrix.
    """
    comps = view.estimator.components_
    if comps is None:
        return {"membership": sets.membership(len(view.feature_names))}
    comps = np.asarray(comps, dtype=np.float64)
    baseline = np.asarray(view.estimator.baseline_, dtype=np.float64)
    loadings = [np.ascontiguousarray(comps[:, idx].T) for idx in sets.seen]
    baselines = [baseline[idx] @ lo for idx, lo in zip(sets.seen, loadings)]
    return {"genes": sets.seen, "loadings": loadings, "baseline": baselines}


def _set_contributions(
    block, jac: np.ndarray, view: ModelView, terms: dict, shift: np.ndarray | None = None
) -> np.ndarray:
    """``(cells, axes, sets)`` exact sums of the sets' gene contributions for one batch, in float64.

    ``shift`` is the rows' batch correction per gene (``L δ``), for a batch-corrected model.
    """
    est = view.estimator
    jac64 = jac.astype(np.float64)
    if "membership" in terms:  # no PCA: the Jacobian is per gene, so sum the genes' contributions
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        offset = dense.astype(np.float64) - est.baseline_
        if shift is not None:
            offset -= shift
        contrib = jac64 * offset[:, None, :]
        n, d, g = contrib.shape
        out = np.asarray(terms["membership"].T @ contrib.reshape(n * d, g).T).T.reshape(n, d, -1)
    else:  # set s moves the cell by J · P[:, S] (x_S − b_S): project each set's offset, then apply J
        block = block.tocsc() if sp.issparse(block) else block  # column slices of CSC are cheap
        out = np.empty((jac.shape[0], jac.shape[1], len(terms["loadings"])))
        for s, (loadings, base) in enumerate(zip(terms["loadings"], terms["baseline"])):
            idx = terms["genes"][s]
            z = np.asarray(block[:, idx] @ loadings) - base  # (cells, pcs)
            if shift is not None:
                z -= shift[:, idx] @ loadings
            out[:, :, s] = np.matmul(jac64, z[:, :, None])[:, :, 0]
    degree = est.homogeneity_degree_
    return out / degree if degree != 1 else out


@dataclass
class _GroupSums:
    """Per-group running sums over the labelled cells, filled batch by batch."""

    codes: np.ndarray  # group of each cell (-1: not labelled)
    groups: list[str]
    set_l2: np.ndarray  # (groups, sets)
    gene_l2: np.ndarray  # (groups, genes)
    gene_nz: np.ndarray  # (groups, genes)

    def onehot(self, rows: np.ndarray) -> sp.csr_matrix:
        """``(groups, cells)``: which group each cell of the batch is in (unlabelled cells in none)."""
        codes = self.codes[rows]
        cells = np.flatnonzero(codes >= 0)
        shape = (len(self.groups), len(rows))
        return sp.csr_matrix((np.ones(len(cells)), (codes[cells], cells)), shape=shape)

    def add(self, rows: np.ndarray, block, jac: np.ndarray, set_values: np.ndarray, view: ModelView) -> None:
        est = view.estimator
        onehot = self.onehot(rows)
        self.set_l2 += onehot @ np.sqrt((set_values**2).sum(axis=1))
        # A gene's contribution is its Jacobian column times one number, (x − b) / degree, so its length over
        # the axes is |x − b| / degree × the column's length: no (cells, axes, genes) array is needed.
        comps = est.components_
        jac_genes = jac if comps is None else (jac.reshape(-1, jac.shape[2]) @ comps).reshape(*jac.shape[:2], -1)
        length = np.sqrt(np.einsum("idg,idg->ig", jac_genes, jac_genes))
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        scaled = np.subtract(dense, est.baseline_)
        np.abs(scaled, out=scaled)
        scaled *= length
        self.gene_l2 += onehot @ scaled / est.homogeneity_degree_
        detected = block > 0 if sp.issparse(block) else sp.csr_matrix(dense > 0)
        self.gene_nz += (onehot @ detected.astype(np.float64)).toarray()


def _group_sums(labels: GroupLabels, n_sets: int, n_genes: int) -> _GroupSums:
    groups = labels.names  # every group with cells, in category order
    return _GroupSums(
        codes=labels.group_of,
        groups=groups,
        set_l2=np.zeros((len(groups), n_sets)),
        gene_l2=np.zeros((len(groups), n_genes)),
        gene_nz=np.zeros((len(groups), n_genes)),
    )


def _ranking(sums: _GroupSums, sets: _Sets, feature_names: np.ndarray, n_top: int) -> dict:
    """Per group: sets ordered by mean L2 contribution, with the enrichment of the group's top genes."""
    from scipy.stats import hypergeom

    sizes = np.bincount(sums.codes[sums.codes >= 0], minlength=len(sums.groups)).astype(np.float64)[:, None]
    n_all = sizes.sum()
    rest = np.maximum(n_all - sizes, 1)
    mean_in = sums.set_l2 / sizes
    mean_rest = (sums.set_l2.sum(0) - sums.set_l2) / rest
    lfc = np.log2((mean_in + 1e-9) / (mean_rest + 1e-9))
    # the group's top genes by tl.rank_features' default score, mean L2 × max(0, pts − pts_rest)
    pts_in = sums.gene_nz / sizes
    pts_rest = (sums.gene_nz.sum(0) - sums.gene_nz) / rest
    gene_score = sums.gene_l2 / sizes * np.maximum(pts_in - pts_rest, 0.0)
    membership = sets.membership(len(feature_names))
    n_genes, n_seen = len(feature_names), sets.n_seen
    n_top = min(n_top, n_genes)
    names = np.asarray(sets.names, dtype=object)
    fields: dict[str, dict[str, np.ndarray]] = {f: {} for f in KINDS["gene_sets"].ranked}
    top_genes = {}
    for gi, g in enumerate(sums.groups):
        top = np.argsort(-gene_score[gi], kind="stable")[:n_top]
        top = top[gene_score[gi][top] > 0]
        inside = membership[top].toarray().astype(bool)  # (top genes, sets)
        overlap = inside.sum(0)
        pvals = hypergeom.sf(overlap - 1, n_genes, n_seen, len(top))
        order = np.argsort(-mean_in[gi], kind="stable")
        fields["names"][g] = names[order]
        fields["scores"][g] = mean_in[gi][order]
        fields["logfoldchanges"][g] = lfc[gi][order]
        fields["pvals"][g] = pvals[order]
        fields["pvals_adj"][g] = benjamini_hochberg(pvals)[order]
        fields["overlap"][g] = overlap[order]
        fields["overlap_genes"][g] = np.array(
            [GENE_SEPARATOR.join(feature_names[top[inside[:, s]]]) for s in order], dtype=object
        )
        top_genes[g] = np.concatenate([feature_names[top], np.full(n_top - len(top), "")]).astype(object)
    dtypes = {"names": "O", "overlap_genes": "O", "overlap": np.int64, "logfoldchanges": np.float32}
    result = {f: records(cols, dtypes.get(f, np.float64)) for f, cols in fields.items()}
    result["top_genes"] = records(top_genes, "O")
    return result


@doc_params(batch_copy=BATCH_COPY)
def gene_set_contributions(
    adata: AnnData,
    gene_sets: GeneSets,
    *,
    key: str = "gbumap",
    groupby: str | None = None,
    n_top: int = 50,
    min_genes: int = 1,
    drop_small: bool = False,
    key_added: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """How far each gene set moves every cell on the map, exactly.

    A set's contribution to a cell is the sum of its genes' contributions,
    ``C_s = Σ_{g ∈ S} C_g``, a vector in map units. Within a set the sum is
    exact: it is computed, without building every gene's contribution, as
    ``J · P[:, S] (x_S − b_S) / degree`` (``J`` the cell's Jacobian, ``P``
    the PCA loadings, ``b`` the baseline), and equals the sum of
    :func:`gbumap.get.contributions` over the set's genes to float rounding.
    Only genes the model was trained on count: listed genes missing from the
    model are reported (``n_seen``) but contribute nothing. Overlapping sets
    are **not** additive across sets: a gene in two sets counts in both, so
    the sets' contributions add up to the cell's position only when the sets
    partition the model's genes.

    With ``groupby``, the sets are also ranked per group, in the format of
    ``sc.tl.rank_genes_groups``: ``scores`` is the group's mean over cells of
    the length of the set's contribution (its L2 norm over the map axes, so
    it does not depend on how the map is rotated). Each set is also tested
    for enrichment among the group's top genes: the group's ``n_top`` genes
    by :func:`gbumap.tl.rank_features`' default score (mean L2 contribution in
    the group × ``max(0, pts − pts_rest)``, computed in the same pass; genes
    scoring 0 are left out), against the set's genes, with a hypergeometric
    test over the universe of the model's genes.

    Parameters
    ----------
    adata
        AnnData with a fitted gene-level model under ``key``.
    gene_sets
        ``{set name: list of genes}``, or the path of a GMT file (read with
        :func:`gbumap.read_gmt`). A gene listed twice in a set counts once.
    key
        The model key.
    groupby
        Categorical ``obs`` column: rank the sets for each of its groups.
    n_top
        How many of each group's top genes are tested for enrichment.
    min_genes
        Fewest of the model's genes a set must hold; sets with fewer raise
        an error naming them, unless ``drop_small``.
    drop_small
        Skip the sets with fewer than ``min_genes`` of the model's genes
        instead of raising (their names are kept in
        ``uns[key_added]["dropped"]``): for large libraries (e.g. an MSigDB
        collection against a few thousand highly variable genes). A library
        with no set left still raises.
    key_added
        ``obsm`` and ``uns`` key of the result (default ``"gene_sets_<key>"``).
    {batch_copy}
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``obsm[key_added]``
        ``(n_cells, n_axes, n_sets)`` float32: each set's contribution to
        each cell's coordinates.
    ``uns[key_added]``
        ``params``; ``sets``: a DataFrame indexed by set name with
        ``size`` (distinct genes listed), ``n_seen`` (of them, genes the
        model saw) and ``genes`` (those genes, comma-separated); and
        ``dropped``: the names of the sets skipped by ``drop_small``.
        With ``groupby`` it also holds the ranking, one record-array field
        per group in rank order, as ``sc.tl.rank_genes_groups`` writes:
        ``names`` (sets), ``scores`` (mean L2 contribution in the group),
        ``logfoldchanges`` (log2 of that mean over the other cells' mean),
        ``pvals`` and ``pvals_adj`` (hypergeometric enrichment of the group's
        top genes and its Benjamini–Hochberg correction over the sets),
        ``overlap`` (how many of the top genes are in the set) and
        ``overlap_genes`` (which, comma-separated, best first); and
        ``top_genes`` (``n_top`` rows per group, best first, ``""`` where
        fewer genes scored above 0).

    Read the ranking with :func:`gbumap.get.rank_features_df` (``key=``
    ``key_added``) and the per-cell values as an AnnData of cells × sets with
    :func:`gbumap.get.gene_set_scores`, which scanpy's plots draw.

    Examples
    --------
    >>> sets = {"monocyte": ["LYZ", "S100A8", "CST3"], "B": ["CD79A", "MS4A1", "CD74"]}
    >>> gbumap.tl.gene_set_contributions(adata, sets, groupby="bulk_labels")  # doctest: +SKIP
    >>> gbumap.get.rank_features_df(adata, "CD14+ Monocyte", key="gene_sets_gbumap")  # doctest: +SKIP
    >>> scores = gbumap.get.gene_set_scores(adata)  # doctest: +SKIP
    >>> sc.pl.embedding(scores, basis="gbumap", color="monocyte")  # doctest: +SKIP
    """
    view = model_view(adata, key)
    if not view.gene_level:
        raise ValueError(
            f"Model {key!r} explains the columns of {view.spec.description}, not genes, so gene sets cannot be "
            "scored. Fit it on genes (or on an X_pca that traces back to genes)."
        )
    batch_size = check_batch_size(batch_size)
    n_top = check_int(n_top, "n_top")
    min_genes = check_int(min_genes, "min_genes")
    feature_names = np.asarray(view.feature_names).astype(str)
    sets, dropped = _match_sets(_as_gene_sets(gene_sets), feature_names, min_genes, bool(drop_small))
    labels = None if groupby is None else obs_groups(adata, groupby, min_groups=2)
    key_added = result_key(adata, "gene_sets", key_added, key)
    sums = None if labels is None else _group_sums(labels, len(sets.names), len(feature_names))

    terms = _set_terms(view, sets)
    values = np.empty((adata.n_obs, view.estimator.n_components, len(sets.names)), dtype=np.float32)
    for rows, block, jac, shift in view.jacobian_batches(adata, np.arange(adata.n_obs), batch_size, None):
        batch = _set_contributions(block, jac, view, terms, shift)
        values[rows] = batch
        if sums is not None:
            sums.add(rows, block, jac, batch, view)

    result: dict = {
        "params": {
            "model_key": key,
            "method": "gbumap_gene_sets",
            "min_genes": min_genes,
            "n_sets": len(sets.names),
        },
        "sets": sets.table(feature_names),
        "dropped": np.asarray(dropped, dtype=str),
    }
    if sums is not None:
        result["params"].update(
            {
                "groupby": groupby,
                "reference": "rest",
                "n_top": n_top,
                "top_genes_score": "weighted_mean",
                "corr_method": "benjamini-hochberg",
                "use_raw": False,
            }
        )
        result.update(_ranking(sums, sets, feature_names, n_top))
    return write_result(adata, key_added, Result("gene_sets", result, obsm={key_added: values}), copy=copy)
