"""`hfgrow stack`, `hfgrow grow --recipe`, `hfgrow inspect`, `hfgrow demo`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from hfgrow.errors import HfgrowError
from hfgrow.io.dtypes import OUTPUT_CHOICES


def source_options(fn):
    """--revision and --token, shared by every command that reads SRC."""
    fn = click.option("--token", default=None, envvar="HF_TOKEN", show_envvar=True,
                      help="Hub token for private/gated repos (default: your `hf auth login` token).")(fn)
    fn = click.option("--revision", default=None, help="Hub branch, tag or commit sha of SRC.")(fn)
    return fn


def output_options(fn):
    """Options every command that writes a grown model takes."""
    for decorator in reversed([
        click.option("--dtype", type=click.Choice(["keep", *OUTPUT_CHOICES]), default="keep",
                     show_default=True, help="Dtype of floating-point tensors in OUT."),
        click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard."),
        click.option("--dry-run", is_flag=True, help="Print the plan (layer map, sizes); write nothing."),
        click.option("--overwrite", is_flag=True, help="Replace OUT if it exists."),
        click.option("--push-to", metavar="ORG/NAME", default=None, help="Push OUT to this Hub repo when done."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary."),
    ]):
        fn = decorator(fn)
    return fn


def depth_options(fn):
    for decorator in reversed([
        click.option("--factor", "-g", type=float, default=None, help="Growth factor g: L*g output layers."),
        click.option("--layers", "-n", type=int, default=None, help="Number of output layers (instead of --factor)."),
        click.option("--pattern", "-p", default=None,
                     help="Exact layer map, e.g. '0-5*4' (Gstack), '0,0,1,1' (interpolate), '0-23,8-31' (SOLAR)."),
        click.option("--order", type=click.Choice(["stack", "interpolate"]), default="stack", show_default=True,
                     help="How --factor/--layers place copies: whole-model repeats or each layer in place."),
    ]):
        fn = decorator(fn)
    return fn


def finish(result, dry_run: bool, quiet: bool) -> None:
    if dry_run:
        click.echo(result.report())
        click.echo("dry run: nothing written.")
    elif not quiet:
        click.echo(result.report())


@click.command()
@click.argument("src")
@click.argument("out", type=click.Path(path_type=Path), required=False)
@depth_options
@output_options
@source_options
def stack(src, out, factor, layers, pattern, order, dtype, max_shard_size, dry_run, overwrite, push_to, quiet,
          revision, token):
    """Gstack: grow SRC by repeating its decoder layers, and write OUT.

    SRC is a local model folder or a Hub repo id. With no --factor/--layers/--pattern
    the factor is 4, the paper's recommendation. Embeddings, final norm and LM head are
    copied unchanged; OUT loads with transformers and carries a model card and a recipe.

    \b
    Pattern language (0-based source layers, comma-separated items):
      a        one layer           a-b      layers a..b (inclusive)
      a-b*n    a..b repeated n times
    \b
    Examples:
      hfgrow stack TinyLlama/TinyLlama_v1.1 tinyllama-g4 --factor 4
      hfgrow stack ./small ./big --layers 24 --order interpolate
      hfgrow stack ./small ./big --pattern '0-1,2-5*5,4-5'     # partial stacking
      hfgrow stack mistralai/Mistral-7B-v0.1 solar --pattern '0-23,8-31'   # SOLAR DUS
      hfgrow stack ./small ./big --dry-run
    """
    from hfgrow.growth.pipeline import stack as run_stack

    if out is None and not dry_run:
        raise click.UsageError("OUT is required unless --dry-run is given.")
    result = run_stack(src, out, factor=factor, layers=layers, pattern=pattern, order=order, dtype=dtype,
                       revision=revision, token=token, max_shard_size=max_shard_size, dry_run=dry_run,
                       overwrite=overwrite, quiet=quiet, push_to=push_to)
    finish(result, dry_run, quiet)


@click.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@source_options
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


COMMANDS = [stack, inspect, demo]
