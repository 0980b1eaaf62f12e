"""`hfgrow inspect` (what a checkpoint is made of) and `hfgrow demo` (a tiny offline end-to-end run)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from hfgrow.cli.options import hub_options
from hfgrow.errors import HfgrowError


@click.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@hub_options
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
def demo(out, factor):
    """Build a tiny Llama offline, Gstack it, and check the result loads and runs.

    No network is needed: the model has random weights and a tokenizer trained on the spot.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfgrow.growth.pipeline import stack as run_stack
    from hfgrow.eval.tiny import DEMO_TEXT, make_model, tiny_llama_config

    from transformers.utils import logging as hf_logging

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
        click.echo("3. loading the grown model with transformers and running it")
        model = AutoModelForCausalLM.from_pretrained(big)
        tokenizer = AutoTokenizer.from_pretrained(big)
        ids = tokenizer(DEMO_TEXT.splitlines()[0], return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        click.echo(f"   {model.config.num_hidden_layers} layers, {model.num_parameters():,} parameters, "
                   f"loss on a demo sentence {loss:.3f} (random weights: about ln(vocab) = "
                   f"{torch.log(torch.tensor(float(model.config.vocab_size))).item():.3f})")
        click.echo("demo ok" + (f"; folders kept in {root}" if out else ""))


COMMANDS = [inspect, demo]
