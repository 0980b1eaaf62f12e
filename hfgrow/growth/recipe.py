"""The machine-readable recipe written into every grown folder (``hfgrow.yaml``).

It records the source (Hub id and commit, or path), the operator and every parameter,
and the resulting layer map, so ``hfgrow grow --recipe OUT/hfgrow.yaml NEW`` rebuilds
the same model, and training can find which layers are new.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import yaml

from hfgrow.errors import HfgrowError

RECIPE_FILE = "hfgrow.yaml"


def hfgrow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hfgrow")
    except PackageNotFoundError:
        return "0+unknown"


def make_recipe(source, params: dict[str, Any], plan, command: str) -> dict[str, Any]:
    src: dict[str, Any] = {"spec": source.spec}
    if source.repo_id:
        src.update(repo_id=source.repo_id, revision=source.revision, commit=source.commit)
    else:
        src["path"] = str(source.path)
    if source.adapter is not None:
        src["adapter"] = {"spec": source.adapter.spec, "commit": source.adapter.commit}
    recipe = {
        "hfgrow_version": hfgrow_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "source": src,
        "operation": dict(plan.recipe),
        "params": {k: v for k, v in params.items() if v is not None},
        "layer_map": plan.layer_map,
        "new_layers": plan.new_layers,
    }
    return recipe


def dump_recipe(recipe: dict[str, Any]) -> str:
    return "# hfgrow recipe: `hfgrow grow --recipe hfgrow.yaml OUT` rebuilds this model.\n" + yaml.safe_dump(
        recipe, sort_keys=False, default_flow_style=None, width=120
    )


def load_recipe(path: Path) -> dict[str, Any] | None:
    """Read a recipe from a file or from ``folder/hfgrow.yaml``; None when a folder has none.

    Example:
        >>> load_recipe(Path("grown"))["layer_map"][:4]
        [0, 1, 2, 3]
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECIPE_FILE
        if not path.is_file():
            return None
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise HfgrowError(f"cannot read recipe {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(recipe, dict) or "source" not in recipe or "params" not in recipe:
        raise HfgrowError(f"{path} is not an hfgrow recipe (no source/params).")
    return recipe
