"""Model cards (README.md): the one place that writes them, from the templates in ``templates/`` via huggingface_hub.

Two kinds of folder, two cards: a grown folder (:func:`grown_card`, ``grown.md``: what it was grown from and
how to replay it) and a trained folder (:func:`trained_card`, ``trained.md``: the training run and, when the
model it started from was grown, that growth). Both share the metadata rules of :func:`render_card`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from hfgrow.growth import registry


def template_path(name: str) -> Path:
    """Path of a card template shipped in ``hfgrow/growth/templates/``."""
    return Path(str(resources.files("hfgrow.growth").joinpath("templates", name)))


def render_card(template: str, *, base_model: str | None, relation: str | None, tags: list[str],
                extra_data: dict[str, Any] | None = None, **variables: Any) -> str:
    """Render ``templates/<template>`` with YAML metadata the Hub understands.

    ``base_model`` is only set for Hub ids (the Hub rejects local paths there).
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=tags,
        pipeline_tag="text-generation",
        **({"base_model_relation": relation} if base_model and relation else {}),
        **(extra_data or {}),
    )
    card = ModelCard.from_template(data, template_path=str(template_path(template)), **variables)
    return str(card)


def _tags(model_type: str, recipe, *extra: str, ops: tuple[str, ...] = ()) -> list[str]:
    """Hub tags: hfgrow, what was done (growth: the recipe's operator or ``ops``, training), the architecture."""
    ops = ((recipe.operation.op,) if recipe is not None else ()) + tuple(ops)
    grown = ["model-growth", *dict.fromkeys(f"grow-{op}" for op in ops)] if ops else []
    return ["hfgrow", *grown, *extra, model_type]


def grown_card(*, plan, recipe, layout, model_name: str, operator_name: str, source_params: int) -> str:
    """The card of a grown folder: what it was grown from, by which operator, and how to reproduce it."""
    from hfgrow.arch.pattern import compact
    from hfgrow.units import format_count

    source = recipe.source
    return render_card(
        "grown.md",
        base_model=source.repo_id,
        # A grown model reuses its base's weights re-arranged, as mergekit passthrough "self-merges"
        # (e.g. SOLAR-style depth up-scaling) do; the Hub labels those merges.
        relation="merge",
        tags=_tags(layout.model_type, recipe),
        model_name=model_name,
        base_display=source.display,
        base_url=f"https://huggingface.co/{source.repo_id}" if source.repo_id else None,
        base_commit=source.commit,
        operator_name=operator_name,
        preserving=recipe.operation.function_preserving,
        architecture=layout.architecture,
        target_architecture=(plan.config.get("architectures") or [layout.architecture])[0],
        why=registry.get(recipe.operation.op).card,
        source_layers=layout.num_layers,
        target_layers=len(plan.layer_map) if plan.layer_map else layout.num_layers,
        source_params=format_count(source_params),
        target_params=format_count(plan.num_params),
        layer_pattern=compact(plan.layer_map) if plan.layer_map and "depth" in recipe.operation.direction else None,
        layer_map_text=registry.layer_map_text(recipe.operation),
        notes=plan.notes + plan.warnings,
        command=recipe.command_line,
    )


def _growth(recipe) -> dict[str, Any]:
    """What a trained card says about the growth its base model came from."""
    from hfgrow.arch.pattern import compact

    source = recipe.source
    return {
        "source": source.display,
        "source_url": f"https://huggingface.co/{source.repo_id}" if source.repo_id else None,
        "operator": registry.describe(recipe.operation),
        "preserving": recipe.operation.function_preserving,
        "pattern": compact(recipe.layer_map) if recipe.layer_map else None,
        "new_layers": ", ".join(map(str, recipe.new_layers)),
        "command": recipe.command_line,
    }


def trained_card(*, model_name: str, base_display: str, base_repo_id: str | None, model_type: str, base_recipe,
                 steps: int, tokens: int, training: list[tuple[str, str]], eval_columns: list[str],
                 eval_rows: list[tuple[str, list[str]]], data: list[tuple[str, str, str]], datasets: list[str],
                 command: str, random_init: bool = False, run_growth: str | None = None,
                 run_growth_ops: list[str] | tuple[str, ...] = ()) -> str:
    """The card of a trained folder: the run that made it and, when its base was grown, that growth.

    ``training`` are the rows of the training table, ``eval_rows`` the held-out losses per domain at the
    evaluations named by ``eval_columns``, ``data`` the (domain, source, proportion) rows; every value is
    already formatted. ``base_recipe`` is the base model's recipe (None when it was not grown).
    ``random_init``: the run started from the base's architecture with random weights (pre-training, not
    continued pre-training; no ``base_model``). ``run_growth``: the growths the run made itself, in words
    (their operators in ``run_growth_ops``, for the tags).

    Example:
        >>> card = trained_card(model_name="tl-g4-cpt", base_display="org/tl-g4", base_repo_id="org/tl-g4",
        ...                     model_type="llama", base_recipe=Recipe.read(Path("tl-g4")), steps=2000,
        ...                     tokens=8_192_000, training=[("steps", "2,000")], eval_columns=["step 0"],
        ...                     eval_rows=[("web", ["7.9123"])], data=[("web", "`web.jsonl` (local)", "1.000")],
        ...                     datasets=[], command="hfgrow train --model org/tl-g4 ...")
        >>> "base_model_relation: finetune" in card
        True
    """
    from hfgrow.units import format_count

    return render_card(
        "trained.md",
        base_model=None if random_init else base_repo_id,
        relation="finetune",
        tags=_tags(model_type, base_recipe, "pretraining" if random_init else "continued-pretraining",
                   ops=tuple(run_growth_ops)),
        extra_data={"datasets": datasets} if datasets else None,
        model_name=model_name,
        base_display=base_display,
        base_url=f"https://huggingface.co/{base_repo_id}" if base_repo_id else None,
        random_init=random_init,
        run_growth=run_growth,
        steps=f"{steps:,}",
        tokens=format_count(tokens),
        growth=_growth(base_recipe) if base_recipe is not None else None,
        training=training,
        eval_columns=eval_columns,
        eval_rows=eval_rows,
        data=data,
        command=command,
    )
