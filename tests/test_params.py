"""The parameter table (``gbumap._params``): it names every constructor parameter and drives checks and the registry."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gbumap import GlassBoxUMAP
from gbumap._params import PARAMS, added_in, registry_params
from gbumap._registry import decode_model, encode_model


def test_the_table_names_every_constructor_parameter_in_order():
    signature = [name for name in inspect.signature(GlassBoxUMAP.__init__).parameters if name != "self"]
    table = [p.name for p in PARAMS]
    missing = [name for name in signature if name not in table]
    assert not missing, f"GlassBoxUMAP.__init__ parameters missing from gbumap._params.PARAMS: {missing}"
    unknown = [name for name in table if name not in signature]
    assert not unknown, f"gbumap._params.PARAMS names parameters GlassBoxUMAP.__init__ lacks: {unknown}"
    assert table == signature, "gbumap._params.PARAMS must list the parameters in the order of the signature"


@pytest.mark.parametrize("param", [p for p in PARAMS if p.minimum is not None or p.choices], ids=lambda p: p.name)
def test_every_bounded_parameter_is_checked_from_its_row(param):
    default = inspect.signature(GlassBoxUMAP.__init__).parameters[param.name].default
    GlassBoxUMAP(**{param.name: default})._check_params()
    if param.choices:
        bad, words = "not-a-choice", f"{param.name} must be {repr(param.choices[0])}"
    elif param.kind == "int":
        bad, words = int(param.minimum) - 1, f"{param.name} must be an integer >= {param.minimum:g}"
    else:
        bad = param.minimum if param.strict else param.minimum - 1.0
        words = f"{param.name} must be a finite number {'>' if param.strict else '>='} {param.minimum:g}"
    with pytest.raises(ValueError, match=words):
        GlassBoxUMAP(**{param.name: bad})._check_params()


def test_the_registry_stores_the_table_s_parameters_and_reads_them_back(wine_std):
    X, _ = wine_std
    model = GlassBoxUMAP(
        n_neighbors=9, min_dist=0.3, spread=1.5, negative_sample_rate=3, repulsion_strength=0.7, pca_components=6,
        baseline="zero", input_norm="l2", hidden_layers=(16, 8), activation="relu", learning_rate=5e-3,
        n_steps=7, batch_size=64, early_stopping=True, random_state=4, engine="torch", dtype="float64",
        training_precision="full",
    ).fit(X)
    reg = encode_model(model)
    stored = [p.name for p in PARAMS if p.stored]
    assert sorted(reg["params"]) == sorted(stored)
    assert list(reg["params"]) == [p.name for p in registry_params()]
    back = decode_model(reg).get_params()
    for param in (p for p in PARAMS if p.stored):  # the value given, or the value the fit used
        name = param.name
        expected = getattr(model, name) if param.fitted is None else param.fitted(model)
        assert back[name] == (tuple(expected) if name == "hidden_layers" else expected), name
    # the training schedule the fit resolved for 178 cells: full batch, given rate, steps and edges
    assert (back["full_batch"], back["learning_rate"], back["n_steps"], back["batch_size"]) == (True, 5e-3, 7, 64)
    optional = [p for p in PARAMS if p.stored and not p.required]
    for param in optional:  # a file without them reads as the constructor's default, or as the table says
        reg_without = {**reg, "params": {k: v for k, v in reg["params"].items() if k != param.name}}
        default = inspect.signature(GlassBoxUMAP.__init__).parameters[param.name].default
        expected = default if param.missing is None else param.missing
        assert decode_model(reg_without).get_params()[param.name] == expected, param.name


def test_an_older_file_reads_its_missing_parameters_as_the_table_s_older_values():
    """tests/data/wave1_model.h5ad (format 1) lacks the parameters formats 2 and 3 added (it has ``engine``)."""
    import anndata as ad

    reg = ad.read_h5ad(Path(__file__).parent / "data" / "wave1_model.h5ad").uns["gbumap"]
    assert int(reg["format_version"]) == 1
    lacking = [p for p in PARAMS if p.added > 1 and p.name not in reg["params"]]
    assert len(lacking) == len([p for p in PARAMS if p.added > 1]) - 1
    params = decode_model(reg).get_params()
    assert {p.name: params[p.name] for p in lacking} == {p.name: p.older for p in lacking}
    assert {**added_in(2), **added_in(3)} == {p.name: p.older for p in PARAMS if p.added > 1}
