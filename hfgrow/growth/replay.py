"""Rebuild a grown model from its recipe (``hfgrow grow --recipe hfgrow.yaml OUT``), bit for bit.

The recipe names the growth function (``command``) and its keyword arguments (``params``), so a replay
is a plain call of :func:`hfgrow.growth.pipeline.stack`, :func:`~hfgrow.growth.pipeline.grow` or, for
LiGO, :func:`hfgrow.growth.ligo.operator.learn` with the learned operator read back instead of trained.
This module sits above both, so neither imports the other.

Example:
    >>> replay("grown/hfgrow.yaml", "grown-again").out
    PosixPath('/abs/grown-again')
"""

from __future__ import annotations

import inspect
import os
from functools import partial
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.growth.pipeline import GrowResult, WriteOptions, grow, run_spec, stack
from hfgrow.growth import registry
from hfgrow.growth.recipe import RECIPE_FILE, Recipe

_WRITE_FIELDS = set(WriteOptions.__dataclass_fields__)


def resolve_source(recipe: Recipe, recipe_path: Path, source: str | None = None) -> tuple[str, str | None]:
    """(SRC, revision) to replay from: ``source`` if given, else the recipe's Hub repo at its commit, else the
    local folder it names, looked up beside the grown folder and in the current folder.

    A recipe is a file from anywhere, so the folder it names is a name, never a path: ``../other``, an absolute
    path or a name with a separator is refused (a 0.1 recipe's absolute ``source.path`` is looked up by its last
    component, like a name). Only the user names a path, as SRC.
    """
    ref = recipe.source
    if source is not None:
        return source, None
    if ref.adapter is not None and ref.adapter.repo_id:
        return ref.adapter.repo_id, ref.adapter.commit or ref.adapter.revision
    if ref.repo_id:
        return ref.repo_id, ref.commit or ref.revision
    name = ref.name or (Path(ref.path).name if ref.path else None)
    if name:
        if name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise HfgrowError(f"the recipe names its source folder '{name}', which is a path, not a folder name; "
                              "hfgrow looks a recipe's source up by name only. Give the source yourself: "
                              f"hfgrow grow SRC OUT --recipe {recipe_path}.")
        grown = Path(os.path.abspath(recipe_path if recipe_path.is_dir() else recipe_path.parent))  # "." has a parent
        for candidate in (grown.parent / name, Path.cwd() / name):
            if candidate.is_dir():
                return str(candidate), None
        raise HfgrowError(f"the recipe was grown from a local folder named '{name}', which is neither beside "
                          f"{grown} nor in the current folder; give it as SRC: hfgrow grow SRC OUT --recipe "
                          f"{recipe_path}.")
    raise HfgrowError(f"{recipe_path} does not say which model it was grown from; give it as SRC: hfgrow grow SRC "
                      f"OUT --recipe {recipe_path}.")


def _call(function, src: str, out, params: dict[str, Any], extra: dict[str, Any], options: dict[str, Any]):
    declared = function.args[0] if isinstance(function, partial) else function  # run_spec: the spec's fields
    accepted = set(inspect.signature(declared).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        name = getattr(declared, "command", None) or declared.__name__
        raise HfgrowError(f"the recipe gives '{unknown[0]}', which `hfgrow {name}` does not take; "
                          "was it written by a newer hfgrow?")
    _check_types(declared, params)
    return function(src, out, **params, **extra, **options)


def _check_types(function, params: dict[str, Any]) -> None:
    """A recipe is a file from anywhere: each parameter must have the type the growth function declares."""
    import types
    import typing

    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the function's own checks remain
        return
    for name, value in params.items():
        hint = hints.get(name)
        if hint is None or hint is typing.Any:
            continue
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        allowed = tuple(typing.get_origin(t) or t for t in options)  # list[str] -> list
        allowed = tuple(t for t in allowed if isinstance(t, type))
        if not allowed or (value is None and type(None) in allowed):
            continue
        if isinstance(value, list) and list in allowed:
            items = [typing.get_args(t) for t in options if typing.get_origin(t) is list]
            item = items[0][0] if items and items[0] else None
            if isinstance(item, type) and not all(isinstance(v, item) for v in value):
                raise HfgrowError(f"the recipe's {name} is {value!r}, which is not a list of {item.__name__}.")
            continue
        if float in allowed:
            allowed += (int,)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            words = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
            names = " or ".join(dict.fromkeys(words.get(t.__name__, t.__name__) for t in allowed
                                              if t is not type(None)))
            raise HfgrowError(f"the recipe's {name} is {value!r}, which is not {names}.")


def replay(recipe_path: str | Path, out: str | Path | None, *, source: str | None = None,
           **options: Any) -> GrowResult:
    """Rebuild the model ``recipe_path`` (an ``hfgrow.yaml`` or a grown folder) describes, into ``out``.

    ``source`` overrides where the source model is taken from; ``options`` are
    :class:`~hfgrow.growth.pipeline.WriteOptions` fields (``max_shard_size`` defaults to the recipe's).
    """
    recipe_path = Path(recipe_path)
    recipe = Recipe.read(recipe_path)
    if recipe is None:
        raise HfgrowError(f"{recipe_path} holds no hfgrow recipe ({RECIPE_FILE}).")
    src, revision = resolve_source(recipe, recipe_path, source)
    params = {k: v for k, v in recipe.params.items() if k not in _WRITE_FIELDS}
    options = dict(options, revision=revision)
    if options.get("max_shard_size") is None:
        options["max_shard_size"] = recipe.params.get("max_shard_size") or "5GB"
    if recipe.command == "stack":
        return _call(stack, src, out, params, {}, options)
    if recipe.command == "grow" and recipe.operation.op == "learn":
        from hfgrow.growth.ligo.operator import learn, read_matrices

        from hfgrow.io.folder import Folder

        folder = Folder(recipe_path if recipe_path.is_dir() else recipe_path.parent)
        width = recipe.operation.width
        matrices = folder.file(width.matrices, f"the recipe's matrices file '{width.matrices}'") \
            if width and width.matrices else None  # named by the recipe: it must lie beside it
        extra = {"coefficients": recipe.operation.coefficients,
                 "width_matrices": read_matrices(matrices) if matrices is not None else None}
        return _call(learn, src, out, params, extra, options)
    if (spec := registry.get(recipe.operation.op).spec) is not None:  # an operator with a growth of its own
        return _call(partial(run_spec, spec()), src, out, params, {}, options)
    if recipe.command == "grow":
        return _call(grow, src, out, params, {}, options)
    raise HfgrowError(f"the recipe was written by `hfgrow {recipe.command}`; replay supports stack and grow.")
