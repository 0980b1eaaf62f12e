"""Model cards (README.md): the one place that writes them, from the templates in ``templates/`` via huggingface_hub."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any


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
        tags=["hfgrow", "model-growth", f"grow-{recipe.operation.op}", layout.model_type],
        model_name=model_name,
        base_display=source.display,
        base_url=f"https://huggingface.co/{source.repo_id}" if source.repo_id else None,
        base_commit=source.commit,
        operator_name=operator_name,
        preserving=recipe.operation.function_preserving,
        architecture=layout.architecture,
        source_layers=layout.num_layers,
        target_layers=len(plan.layer_map) if plan.layer_map else layout.num_layers,
        source_params=format_count(source_params),
        target_params=format_count(plan.num_params),
        layer_pattern=compact(plan.layer_map) if plan.layer_map else None,
        notes=plan.notes,
        command=recipe.command_line,
    )
