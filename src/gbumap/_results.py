"""Result blocks in ``adata.uns``: their kinds, fields and versions; one writer and one finder.

Every ``tl`` tool but the model writers (``fit``, ``contributions``,
``transform``, whose registry :mod:`gbumap._registry` owns) computes a
:class:`Result` and writes it with :func:`write_result`, after choosing its
key with :func:`result_key`. That path owns

- the default key of each kind (``"rank_features_<model key>"``, ...);
- the overwrite guard: a result never replaces a fitted model (its registry,
  embedding or Jacobians) nor another kind's block; the error names the key
  and the fix, and the AnnData is left as it was;
- the tag ``block["gbumap_result"] = {"kind": ..., "version": ...}`` on every
  block (a mapping of a string and an integer: it round-trips through
  ``.h5ad`` and zarr, and scanpy's readers ignore it);
- the ``copy`` tail: write into ``adata``, or into a copy that is returned.

``get`` and ``pl`` read blocks through :func:`find_result`, by key and
expected kind. Blocks written before the tags existed (gbumap 0.2 and
earlier) carry none; they are recognised by their fields, as they always
were, and read as version 0. Each kind's fields are listed once, in
:data:`KINDS`, which ``docs/anndata.md`` follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = [
    "KINDS",
    "RANKED_FIELDS",
    "RANKING_KINDS",
    "SCANPY_RANKED_FIELDS",
    "TAG",
    "Result",
    "ResultKind",
    "block_kind",
    "block_version",
    "check_writable",
    "find_ranking",
    "find_result",
    "result_groups",
    "result_key",
    "select_group",
    "write_result",
]

#: The ``uns`` field holding a block's kind and version.
TAG = "gbumap_result"

#: Rank-ordered per-group fields in ``sc.tl.rank_genes_groups``' layout, in its order.
SCANPY_RANKED_FIELDS = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj")


def _method(name: str) -> Callable[[Mapping], bool]:
    """Recognises an untagged block by ``params["method"]``."""

    def check(block: Mapping) -> bool:
        params = block.get("params")
        return isinstance(params, Mapping) and str(params.get("method", "")) == name

    return check


def _params_with(name: str) -> Callable[[Mapping], bool]:
    def check(block: Mapping) -> bool:
        params = block.get("params")
        return isinstance(params, Mapping) and name in params

    return check


@dataclass(frozen=True)
class ResultKind:
    """One kind of result block: where it goes by default, what it holds, and how old blocks are recognised."""

    name: str
    version: int
    writer: str  # the tool that writes it, e.g. "gbumap.tl.rank_features"
    noun: str  # what it is, in words, for messages
    default_key: str  # "{key}" stands for the model key
    fields: tuple[str, ...]  # always present
    optional: tuple[str, ...] = ()  # present in some calls (e.g. with groupby)
    ranked: tuple[str, ...] = ()  # rank-ordered per-group record arrays, in the order written
    obsm: tuple[str, ...] = ()  # obsm keys written, "{key_added}" the block's key
    obs: tuple[str, ...] = ()  # obs columns written
    open_fields: str = ""  # the fields beyond these, when a block holds one per view or embedding
    legacy: Callable[[Mapping], bool] = field(default=lambda block: False, repr=False, compare=False)

    def default(self, model_key: str) -> str:
        return self.default_key.format(key=model_key)


_RANK = ("names", "scores", "logfoldchanges", "pvals", "pct_nz_group", "pct_nz_reference", "mean_contribution",
         "mean_expression", "pvals_adj")
_CONTRAST = ("names", "scores", "share", "across", "difference_term", "context_term", "covariance_term")
_KNOCKOUT = ("names", "scores", "shift", "exact_scores", "exact_shift", "mean_expression")
_GENE_SET = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj", "overlap", "overlap_genes")
_STABILITY = ("names", "scores", "median_rank", "rank_iqr", "top_fraction")

#: Every kind of result block, by name.
KINDS: dict[str, ResultKind] = {
    kind.name: kind
    for kind in (
        ResultKind(
            "rank_features", 1, "gbumap.tl.rank_features", "ranking", "rank_features_{key}",
            fields=(*_RANK, "group_sizes", "params"), optional=("modality",), ranked=(*_RANK, "modality"),
            legacy=_method("gbumap_contributions"),
        ),
        ResultKind(
            "contrast", 1, "gbumap.tl.contrast", "contrast", "contrast_{key}",
            fields=("params", *_CONTRAST, "centroid_shift", "terms", "reconstruction_gap"), ranked=_CONTRAST,
            legacy=lambda block: "centroid_shift" in block,
        ),
        ResultKind(
            "perturb", 1, "gbumap.tl.perturb", "perturbation", "perturb_{key}",
            fields=("params", "genes", "n_cells", "n_changed", "agreement", "tolerance", "max_deviation",
                    "flip_fraction", "mean_length"),
            optional=("values", "groups"),
            obsm=("{key_added}", "{key_added}_first_order"),
            obs=("{key_added}_deviation", "{key_added}_flips"),
            legacy=_method("gbumap_perturb"),
        ),
        ResultKind(
            "rank_knockouts", 1, "gbumap.tl.rank_knockouts", "knock-out ranking", "rank_knockouts_{key}",
            fields=("params", *_KNOCKOUT), ranked=_KNOCKOUT,
            legacy=_method("gbumap_knockout"),
        ),
        ResultKind(
            "gene_sets", 1, "gbumap.tl.gene_set_contributions", "gene-set result", "gene_sets_{key}",
            fields=("params", "sets", "dropped"), optional=(*_GENE_SET, "top_genes"), ranked=_GENE_SET,
            obsm=("{key_added}",),
            legacy=_method("gbumap_gene_sets"),
        ),
        ResultKind(
            "interaction_modules", 1, "gbumap.tl.interaction_modules", "set of interaction modules", "modules_{key}",
            fields=("params", "reconstruction_gap"), obsm=("{key_added}_{view}",),
            open_fields="one mapping per view (axis_1, axis_2, …, l2): eigenvalues, mean_term, loadings",
            legacy=lambda block: "reconstruction_gap" in block and _params_with("n_modules")(block),
        ),
        ResultKind(
            "quality", 1, "gbumap.tl.quality", "quality result", "gbumap_quality",
            fields=("params",), optional=("per_group_anisotropy",),
            open_fields="one mapping of figures per embedding (its obsm key)",
            legacy=_params_with("basis"),
        ),
        ResultKind(
            "randomization", 1, "gbumap.tl.randomization_check", "randomization check", "randomization_{key}",
            fields=("params", "per_group", "summary"),
            legacy=lambda block: "per_group" in block and _params_with("n_randomizations")(block),
        ),
        ResultKind(
            "stability", 1, "gbumap.tl.stability", "stability result", "stability_{key}",
            fields=("params", "seeds", "alignment", "timings", "models"), optional=_STABILITY, ranked=_STABILITY,
            obs=("{key_added}_spread",),
            legacy=lambda block: "alignment" in block and "models" in block,
        ),
    )
}

#: Kinds whose blocks may hold a ranking in ``rank_genes_groups``' layout.
RANKING_KINDS = tuple(name for name, kind in KINDS.items() if kind.ranked)

#: Every rank-ordered per-group field a ranking may hold, in the order ``get.rank_features_df`` gives them.
RANKED_FIELDS = tuple(dict.fromkeys(SCANPY_RANKED_FIELDS + sum((KINDS[k].ranked for k in RANKING_KINDS), ())))


def _is_model(block: Any) -> bool:
    return isinstance(block, Mapping) and "format_version" in block and "encoder" in block


def block_kind(block: Any) -> str | None:
    """The kind of an ``uns`` entry: its tag, ``"model"`` for a model registry, else recognised by its fields.

    ``None`` for anything gbumap did not write.
    """
    if not isinstance(block, Mapping):
        return None
    tag = block.get(TAG)
    if isinstance(tag, Mapping) and "kind" in tag:
        return str(tag["kind"])
    if _is_model(block):
        return "model"
    for kind in KINDS.values():
        if kind.legacy(block):
            return kind.name
    return None


def block_version(block: Mapping) -> int:
    """The version of a result block: its tag's, or 0 for a block written before tags."""
    tag = block.get(TAG)
    return int(tag["version"]) if isinstance(tag, Mapping) and "version" in tag else 0


def _describe(kind: str | None) -> str:
    if kind == "model":
        return "a gbumap model, fitted by gbumap.tl.fit"
    if kind in KINDS:
        return f"a {KINDS[kind].noun} ({KINDS[kind].writer})"
    return f"a {kind!r} block written by another gbumap" if kind else "something gbumap did not write"


def _model_keys(adata: AnnData) -> list[str]:
    return [k for k, v in adata.uns.items() if _is_model(v)]


def check_writable(adata: AnnData, key: str, kind: str, obsm: Sequence[str] = ()) -> None:
    """Refuse to write a ``kind`` result under ``uns[key]`` (and these ``obsm`` keys) over what it must not replace.

    A block of the same kind is replaced (rerunning a tool is explicit), as is
    an entry gbumap did not write; a fitted model, its embedding
    ``obsm["X_<model>"]`` and Jacobians ``obsm["<model>_jacobian"]``, and a
    block of another kind are not. Raises a ``ValueError`` that names the key
    and the fix; nothing is written.
    """
    found = block_kind(adata.uns.get(key)) if key in adata.uns else None
    if found is not None and found != kind:
        default = KINDS[kind].default_key.replace("{key}", "<model key>")
        raise ValueError(
            f"uns[{key!r}] holds {_describe(found)}; writing this {KINDS[kind].noun} there would replace it. "
            f"Pass another key_added= (the default is {default!r}), or delete adata.uns[{key!r}] first if you "
            "no longer need it."
        )
    models = _model_keys(adata)
    owned = {f"X_{m}": m for m in models} | {f"{m}_jacobian": m for m in models}
    for name in obsm:
        if name in owned:
            raise ValueError(
                f"obsm[{name!r}] belongs to the gbumap model under uns[{owned[name]!r}]; writing this "
                f"{KINDS[kind].noun} there would replace it. Pass another key_added=."
            )


def result_key(adata: AnnData, kind: str, key_added: str | None, model_key: str = "gbumap") -> str:
    """The ``uns`` key a ``kind`` result goes to (``key_added``, else the kind's default), checked to be writable.

    Call it before computing, so that a refused key costs nothing and leaves ``adata`` as it was.
    """
    spec = KINDS[kind]
    key = spec.default(model_key) if key_added is None else str(key_added)
    obsm = [name.format(key_added=key, view="") for name in spec.obsm if "{view}" not in name]
    check_writable(adata, key, kind, obsm)
    return key


@dataclass
class Result:
    """A tool's result before it is written: the ``uns`` block and what goes to ``obsm`` and ``obs``.

    ``uns`` holds the kind's fields (:data:`KINDS`); the tag is added when it is written.
    """

    kind: str
    uns: dict
    obsm: dict[str, Any] = field(default_factory=dict)
    obs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = KINDS[self.kind]  # an unknown kind is a KeyError here, in the writer's code
        missing = [f for f in spec.fields if f not in self.uns]
        unknown = [f for f in self.uns if f not in spec.fields + spec.optional and f != TAG]
        if missing or (unknown and not spec.open_fields):
            raise RuntimeError(
                f"A {self.kind} block must hold {list(spec.fields)} (optionally {list(spec.optional)}); "
                f"missing {missing}, unknown {unknown}. Update gbumap._results.KINDS with the writer."
            )


def write_result(adata: AnnData, key: str, result: Result, *, copy: bool = False) -> AnnData | None:
    """Write ``result`` under ``uns[key]`` (tagged) and its ``obsm``/``obs`` entries; the tail of every ``tl`` tool.

    Writes into ``adata``, or into a copy that is returned when ``copy=True``
    (then ``adata`` is left as it was). The overwrite guard runs first.
    """
    check_writable(adata, key, result.kind, list(result.obsm))
    block = dict(result.uns)
    block[TAG] = {"kind": result.kind, "version": KINDS[result.kind].version}
    target = adata.copy() if copy else adata
    for name, values in result.obsm.items():
        target.obsm[name] = values
    for name, values in result.obs.items():
        target.obs[name] = values
    target.uns[key] = block
    return target if copy else None


def _check_version(key: str, kind: str, block: Mapping) -> None:
    version = block_version(block)
    if version > KINDS[kind].version:
        raise ValueError(
            f"uns[{key!r}] is a {KINDS[kind].noun} of version {version}, written by a newer gbumap; this gbumap "
            f"reads versions up to {KINDS[kind].version}. Upgrade gbumap, or rerun {KINDS[kind].writer}."
        )


def find_result(adata: AnnData, key: str, kind: str | Sequence[str], *, hint: str | None = None) -> Mapping:
    """The block ``uns[key]``, checked to be of ``kind`` (a kind, or several accepted ones) and of a known version.

    Raises a ``KeyError`` when there is none, listing the blocks of that kind
    in ``adata``, and a ``ValueError`` when ``uns[key]`` holds something else.
    ``hint`` replaces the sentence that says which tool writes the kind.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    first = KINDS[kinds[0]]
    run = hint or f"run {first.writer} first"
    if key not in adata.uns:
        found = [k for k, v in adata.uns.items() if block_kind(v) in kinds]
        shown = ", ".join(repr(k) for k in found) or "none"
        raise KeyError(f"No {first.noun} under uns[{key!r}]; {run}. Blocks of this kind here: {shown}.")
    block = adata.uns[key]
    found_kind = block_kind(block)
    if found_kind not in kinds:
        raise ValueError(f"uns[{key!r}] holds {_describe(found_kind)}, not a {first.noun}; {run}, or pass its key.")
    _check_version(key, found_kind, block)
    return block


def find_ranking(adata: AnnData, key: str, hint: str) -> Mapping:
    """A block in ``rank_genes_groups``' layout under ``uns[key]``: any ranking kind, or another tool's ranking.

    Rankings written by scanpy itself (``sc.tl.rank_genes_groups``) are read too.
    """
    block = adata.uns.get(key)
    kind = block_kind(block) if key in adata.uns else None
    if kind is None and isinstance(block, Mapping) and "names" in block:
        return block  # not gbumap's: read in rank_genes_groups' layout, as scanpy writes it
    if kind in RANKING_KINDS and "names" not in block:
        raise ValueError(f"uns[{key!r}] holds {_describe(kind)} without a ranking; {hint}.")
    return find_result(adata, key, RANKING_KINDS, hint=hint)


def result_groups(block: Mapping) -> list[str]:
    """The groups a ranking-layout block holds (the fields of its ``names``)."""
    return list(block["names"].dtype.names)


def select_group(block: Mapping, key: str, group: str | None, verb: str = "ranks", done: str = "ranked") -> str:
    """``group``, checked to be in the block (the only group when ``None``); ``verb``/``done`` word the errors."""
    groups = result_groups(block)
    if group is None:
        if len(groups) > 1:
            raise ValueError(f"uns[{key!r}] {verb} several groups {groups}; pass group= one of them.")
        return groups[0]
    if str(group) not in groups:
        raise KeyError(f"{group!r} is not {done} in uns[{key!r}]; it {verb} {groups}.")
    return str(group)
