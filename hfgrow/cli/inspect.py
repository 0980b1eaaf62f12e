"""`hfgrow inspect` (what a checkpoint is made of) and `hfgrow demo` (a tiny offline end-to-end run)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import click

from hfgrow.cli.options import console_options, hub_options
from hfgrow.errors import HfgrowError


@click.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@hub_options
@console_options
def inspect(src, as_json, revision, token):
    """Show a model's architecture, layers, parameters, dtype and size, without loading weights.

    \b
    Examples:
      hfgrow inspect ./my-model
      hfgrow inspect Qwen/Qwen3-0.6B --json
    """
    from hfgrow.growth.describe import format_inspect, inspect as run_inspect

    info = run_inspect(src, revision=revision, token=token)
    click.echo(json.dumps(info, indent=2) if as_json else format_inspect(info))


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Keep the demo folders here (default: a temporary folder).")
@click.option("--factor", type=int, default=4, show_default=True)
@console_options
def demo(out, factor):
    """Build a tiny Llama offline, Gstack it, and check the result: its layer count, transformers' loading report
    (nothing missing, unexpected or mismatched), every layer bit for bit the source layer it copies, the other
    weights bit for bit, and a finite loss. Exits 1 when a check fails.

    No network is needed: the model has random weights and a tokenizer trained on the spot.
    """
    from transformers.utils import logging as hf_logging

    from hfgrow.eval.tiny import check_stacked, make_model, tiny_llama_config
    from hfgrow.growth.pipeline import stack as run_stack

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="hfgrow-demo-") as tmp:
        root = Path(out) if out else Path(tmp)
        small, big = root / "small", root / "grown"
        if out and small.exists():
            raise HfgrowError(f"{small} already exists; choose an empty --out folder.")
        click.echo(f"1. building a tiny random Llama (4 layers) in {small}")
        make_model(small, tiny_llama_config(layers=4))
        click.echo(f"2. hfgrow stack {small} {big} --factor {factor}")
        result = run_stack(str(small), big, factor=factor, quiet=True)
        click.echo(result.report())
        click.echo("3. loading the grown model with transformers and checking it against the source")
        check = check_stacked(small, big, list(result.plan.layer_map))
        issues = "; ".join(f"{key}: {', '.join(map(str, value))}" for key, value in check.load_issues.items())
        click.echo(f"   layers          {check.layers} (4 x {factor} = {check.expected_layers})"
                   + ("" if check.layers == check.expected_layers else "  MISMATCH"))
        click.echo(f"   loading report  {issues or 'no missing, unexpected or mismatched weights'}")
        click.echo(f"   layers          {check.layers - len(check.differing_layers)} of {check.layers} bit for bit "
                   "the source layer they copy" + (f"; differ: {check.differing_layers}" if check.differing_layers
                                                    else ""))
        click.echo("   other weights   " + (f"differ: {', '.join(check.differing_globals)}" if check.differing_globals
                                           else "embeddings, final norm and head bit for bit the source's"))
        click.echo(f"   loss            {check.loss:.3f} on a demo sentence (random weights: about ln(vocab) = "
                   f"{math.log(tiny_llama_config().vocab_size):.3f})")
        if not check.ok:
            raise HfgrowError("the demo's grown model failed a check above.")
        click.echo("demo ok: every check passed" + (f"; folders kept in {root}" if out else ""))


COMMANDS = [inspect, demo]
