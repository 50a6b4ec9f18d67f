"""The recipe registry: how `ulmfit fit`, the predictor and the configuration find a recipe by name.

A recipe registers one `Recipe`: its name, its own config section (a dataclass, stored under that
name in config.json), how to resolve its "auto" values, how to train (`fit`) and how to load a
trained model back (`load_model`). Nothing else in the package compares recipe names: `fit.py`
calls `get(cfg.recipe).fit(run)`, the predictor `get(marker["recipe"]).load_model(folder)`, the
config builds every registered section.

This module imports no torch, so configuration checks at the door stay fast: a registration names
its heavy functions with `lazy("module", "function")`, imported at the first call.

Adding a recipe (see docs/DESIGN.md, "Add a recipe"):

    @dataclass
    class MyConfig:                      # its section: every field checked as in recipes/config.py
        epochs: int = spec(3, ge=1)
        metric: str = spec("macro_f1", choices=METRICS)

    register(Recipe(name="mine", section="mine", config=MyConfig, fit=my_fit, load_model=my_load))

`my_fit(run: Run) -> dict` trains into `run.out` and returns the validation metrics
(`classification_metrics`); `my_load(folder) -> nn.Module` gives a module with
`forward(ids, lengths) -> logits`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ulmfit.errors import UlmfitError

# The recipe of a config that names none (FitConfig.recipe's default): `fit` chooses the model from the
# training texts (recipes/auto_backbone.py) and saves the recipe it chose. Not a registered recipe.
AUTO = "auto"

# The modules whose import registers the shipped recipes (each registers itself, torch-free).
BUILTIN_MODULES = ("ulmfit.recipes.ulmfit_config", "ulmfit.recipes.siatl_config", "ulmfit.recipes.transformer_config",
                   "ulmfit.recipes.distill_config", "ulmfit.recipes.tfidf_config")


@dataclass
class Run:
    """What `fit` hands a recipe: one resolved config per model direction (`configs["fwd"]` ...),
    the prepared data (recipes/prepare.py `FitData`), the model folder, resume and the log."""

    out: Path
    configs: dict
    data: Any
    resume: bool
    log: Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    name: str
    section: str  # its config section in config.json; the section's `metric` selects the model
    config: type  # the section's dataclass (defaults = the recipe's defaults)
    fit: Callable[[Run], dict]  # train into run.out; return the validation metrics
    load_model: Callable[[Path], Any]  # the trained classifier of a folder: forward(ids, lengths) -> logits
    # resolve(section value, pretrained LM folder or None, large: the LM is paper-sized) -> the
    # section with its "auto" values filled in; None: nothing to resolve
    resolve: Callable[[Any, Path | None, bool], Any] | None = None
    check: Callable[[Any], None] | None = None  # rules between fields of the resolved section, before a run
    directions: tuple[str, ...] = ("fwd", "bwd", "both")  # the --direction values it supports
    # The direction of a run of this recipe whose user chose none (no --direction, no --set
    # direction=..., no --config or config object with one); None: FitConfig.direction's default.
    default_direction: str | None = None
    # The AWD-LSTM recipe that "auto" falls back to, and the recipe of a model folder whose marker
    # names none (folders from before recipes were recorded). One recipe sets it.
    default: bool = False
    # load_member(folder, direction) -> a predictor member (predictor.Member's face) for a recipe whose
    # folder has its own text pipeline (a transformer's WordPiece tokenizer); None: tokenizer.json + vocab.json
    load_member: Callable[[Path, str], Any] | None = None
    report: Callable[[dict], str] | None = None  # more markdown for report.md from the run's validation metrics
    summary: str = ""
    lstm: bool = True  # its model has an LSTM: training in bf16 needs the CPU's bf16 LSTM kernel (train/precision.py)
    pretrained_lm: bool = True  # it starts from an AWD-LSTM language model (--pretrained); False: it reads none


_RECIPES: dict[str, Recipe] = {}
_loaded = False


def register(recipe: Recipe) -> Recipe:
    """Add `recipe` (a second registration under the same name replaces the first)."""
    sections = {r.section: r.name for r in _RECIPES.values() if r.name != recipe.name}
    if recipe.section in sections:
        raise ValueError(f"recipe {recipe.name!r}: config section {recipe.section!r} is taken by {sections[recipe.section]!r}")
    _RECIPES[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    _RECIPES.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def recipes() -> dict[str, Recipe]:
    """Every registered recipe by name, the shipped ones first."""
    _load_builtins()
    return dict(_RECIPES)


def names() -> list[str]:
    return list(recipes())


def get(name: str) -> Recipe:
    all_ = recipes()
    if name not in all_:
        raise UlmfitError(f"recipe {name!r} is not available; choose one of {', '.join(all_)} (--recipe)")
    return all_[name]


def default_name() -> str:
    return next(r.name for r in recipes().values() if r.default)


def sections() -> dict[str, type]:
    """{config section name: its dataclass} of every registered recipe."""
    return {r.section: r.config for r in recipes().values()}


def lazy(module: str, name: str) -> Callable:
    """A function that imports `module` and calls its `name` at call time (keeps torch out of the
    configuration's import; the attribute is looked up per call, so a test may stand in a module)."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = f"{module}.{name}"
    return call
