"""`hfgrow plan`: the paper's growth guidelines as a calculator."""

from __future__ import annotations

import json

import click

from hfgrow.cli.options import console_options


@click.command("plan")
@click.option(
    "--target",
    required=True,
    metavar="MODEL_OR_CONFIG_OR_SIZE",
    help="Target model: a size (7B, 1.1B, 410M), a config.json or model folder, a transformers "
    "model type (llama, gpt2, ...) or a Hub repo already in the local cache.",
)
@click.option("--max-tokens", "tokens", metavar="D",
              help="Total training tokens of the target, e.g. 2T or 300B (the token budget, as in hfgrow train).")
@click.option("--tokens", "old_tokens", hidden=True, metavar="D", help="The old spelling of --max-tokens.")
@click.option(
    "--factor",
    type=float,
    default=4,
    show_default=True,
    metavar="G",
    help="Growth factor g (the paper recommends 4), as in `hfgrow grow`: the base has L/g layers, a whole number.",
)
@click.option("--extrapolate", is_flag=True,
              help="Plan a target below 410M parameters anyway (outside the law's fit; refused without it).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@console_options
def plan(target: str, tokens: str | None, old_tokens: str | None, factor: float, extrapolate: bool,
         as_json: bool) -> None:
    """Plan a Gstack growth: when to grow (d tokens), the base model's shape, and the FLOPs.

    Uses the growth-timing law of Du et al. 2024 (§4.2):
    log10 d = 0.88·log10 N + 163.27/log10 C − 5.74, with C = 6·N·D.
    N is the target's total parameter count (embeddings included); for a mixture of experts, the parameters a
    token uses (top-k of the routed experts), which every FLOPs figure counts. The law was fitted on 410M-7B
    dense models: a smaller target is refused unless --extrapolate, and every warning is printed first.

    \b
    Examples:
      hfgrow plan --target 7B --max-tokens 2T                # paper Table 4: d = 11.11B tokens
      hfgrow plan --target llama --max-tokens 300B --factor 4
      hfgrow plan --target ./my-model/config.json --max-tokens 50B --json
    """
    from hfgrow.cli.options import renamed

    tokens = renamed("--max-tokens", "--tokens", tokens, old_tokens)
    if tokens is None:
        raise click.UsageError("give the token budget: --max-tokens D (e.g. 2T).")
    from hfgrow.errors import HfgrowError
    from hfgrow.growth.timing import LAW_MIN_PARAMS, make_plan
    from hfgrow.units import format_count

    result = make_plan(target, tokens, factor=factor)
    if result.params.active < LAW_MIN_PARAMS and not extrapolate:
        active = " active" if result.params.experts else ""
        raise HfgrowError(f"the target has {format_count(result.params.active)}{active} parameters, below "
                          f"{format_count(LAW_MIN_PARAMS)}, the smallest model the growth-timing law was fitted on "
                          "(Du et al. 2024: 410M-7B), so its d is not the paper's guidance there; give --extrapolate "
                          "to see the numbers anyway.")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.report())


COMMANDS = [plan]
