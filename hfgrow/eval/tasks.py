"""Benchmark tasks: the hand-off to lm-evaluation-harness (``pip install 'hfgrow[eval]'``).

The Gstack paper evaluates on :data:`PAPER_TASKS`: lambada_openai, arc_challenge, arc_easy, logiqa,
piqa, sciq, winogrande, plus wikitext perplexity. The harness downloads its datasets from the Hub
on first use.

Example:
    >>> run_tasks("out/grown", "piqa,arc_easy", limit=100)["piqa"]["acc,none"]   # doctest: +SKIP
    0.62
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from hfgrow.errors import HfgrowError
from hfgrow.eval.loss import pick_device

__all__ = ["PAPER_TASKS", "LM_EVAL_MISSING", "require_lm_eval", "run_tasks"]

#: Benchmarks the Gstack paper reports (lm-evaluation-harness task names); wikitext = perplexity.
PAPER_TASKS: tuple[str, ...] = (
    "lambada_openai",
    "arc_challenge",
    "arc_easy",
    "logiqa",
    "piqa",
    "sciq",
    "winogrande",
    "wikitext",
)
#: The error when the harness is not installed.
LM_EVAL_MISSING = "--tasks needs lm-evaluation-harness, which is not installed: pip install 'hfgrow[eval]'."


def require_lm_eval() -> ModuleType:
    """Import and return ``lm_eval``, or raise the one clear error.

    Example:
        >>> lm_eval = require_lm_eval()                                      # doctest: +SKIP
    """
    try:
        import lm_eval
    except ImportError:
        raise HfgrowError(LM_EVAL_MISSING) from None
    return lm_eval


def run_tasks(
    model_path: str | Path,
    tasks: Sequence[str] | str,
    batch_size: int | str = 4,
    *,
    device: str | None = None,
    dtype: str | None = None,
    limit: int | float | None = None,
) -> dict[str, dict[str, float]]:
    """Run lm-evaluation-harness tasks on a saved model (``lm_eval.simple_evaluate``, model "hf").

    ``tasks`` is a list or a comma-separated string; ``"paper"`` expands to :data:`PAPER_TASKS`.
    Returns ``{task: {metric: value}}`` with the harness's metric names (e.g. ``"acc,none"``).
    The harness downloads its datasets from the Hub on first use.

    Raises:
        HfgrowError: lm-evaluation-harness is not installed, or no task is named.

    Example:
        >>> run_tasks("out/grown", "paper", batch_size=8)                    # doctest: +SKIP
        {'lambada_openai': {'acc,none': 0.41, ...}, ...}
    """
    lm_eval = require_lm_eval()
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    expanded: list[str] = []
    for name in names:
        for task in PAPER_TASKS if name == "paper" else (name,):
            if task not in expanded:
                expanded.append(task)
    if not expanded:
        raise HfgrowError("--tasks is empty; e.g. --tasks piqa,arc_easy or --tasks paper.")
    device = pick_device(device)
    model_args = f"pretrained={model_path},dtype={dtype or ('float32' if device == 'cpu' else 'auto')}"
    output = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=expanded, batch_size=batch_size, device=device, limit=limit
    )
    results = (output or {}).get("results", {})
    return {
        task: {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, metrics in results.items()
    }
