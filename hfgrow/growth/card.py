"""Model cards (README.md) rendered from the templates in ``templates/`` via huggingface_hub."""

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
