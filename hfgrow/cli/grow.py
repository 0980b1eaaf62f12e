"""`hfgrow stack` (Gstack), `hfgrow grow` (every operator, depth and width, LiGO, recipe replay), `hfgrow verify`.

Option combinations are checked where the growth is specified (hfgrow.growth.spec, hfgrow.growth.ligo):
this module only refuses options that do not apply to the mode chosen (a recipe, LiGO, a fixed operator).
"""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.options import (COUNT, Operator, console_options, depth_options, given, hub_options, output_options,
                                refuse, report, width_options)
from hfgrow.cli.upcycle import UPCYCLE_ONLY, upcycle_options

# options each mode does not take (the recipe fixes everything; LiGO has its own; fixed operators none of LiGO's)
RECIPE_FIXES = UPCYCLE_ONLY + ("op", "width_op", "factor", "layers", "pattern", "order", "hidden_size",
                               "intermediate_size", "num_heads", "num_kv_heads", "noise", "seed", "mask_steps", "style",
                               "dtype", "revision", "keep_tied")
LEARN_ONLY = ("data", "learn_steps", "learn_lr", "seq_len", "batch_size", "width_init", "device_map", "max_memory",
              "offload_folder")
NOT_FOR_LEARN = ("width_op", "noise", "mask_steps", "keep_tied")
NOT_FOR_UPCYCLE = ("width_op", "factor", "layers", "pattern", "order", "hidden_size", "intermediate_size",
                   "num_heads", "num_kv_heads", "mask_steps", "style", "keep_tied")


@click.command()
@click.argument("src")
@click.argument("out", type=click.Path(path_type=Path), required=False)
@depth_options()
@output_options
@hub_options
@console_options
def stack(src, out, factor, layers, pattern, order, dtype, max_shard_size, dry_run, overwrite, push_to, revision,
          token):
    """Gstack: grow SRC by repeating its decoder layers, and write OUT.

    SRC is a local model folder or a Hub repo id. With no --factor/--layers/--pattern
    the factor is 4, the paper's recommendation. Embeddings, final norm and LM head are
    copied unchanged; OUT loads with transformers and carries a model card and a recipe.

    \b
    Pattern language (0-based source layers, comma-separated items):
      a        one layer           a-b      layers a..b (inclusive)
      a-b*n    a..b repeated n times   a*n   layer a n times in place
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
                       overwrite=overwrite, push_to=push_to)
    report(result, dry_run)


def _learn_options(fn):
    for decorator in reversed([
        click.option("--data", multiple=True,
                     help="--op learn: text (.txt/.md, .jsonl, .parquet, .gz, or a folder) to learn the growth on."),
        click.option("--learn-steps", type=int, default=100, show_default=True, help="--op learn: steps of the fit."),
        click.option("--learn-lr", type=float, default=3e-2, show_default=True,
                     help="--op learn: AdamW learning rate, divided by each growth parameter's fan-in: the depth "
                          "coefficients D take lr/L (L source layers mixed into each grown layer), each width matrix "
                          "lr/(the source units it mixes). The operator with the lowest held-out loss seen (step 0 "
                          "included) is written."),
        click.option("--seq-len", type=int, default=256, show_default=True, help="--op learn: sequence length."),
        click.option("--batch-size", type=int, default=4, show_default=True, help="--op learn: sequences per step."),
        click.option("--width-init", type=click.Choice(["direct", "identity"]), default=None,
                     help="--op learn --style hfgrow: start of the width matrices: direct (the function-preserving "
                          "widening) or identity (identity on source units, small random new units) "
                          "[default: direct]. --style prts starts them as LiGO does, at [I; N(0, 1/new)]."),
        click.option("--device-map", default=None, metavar="MAP",
                     help="--op learn: where the frozen source lives while learning: auto (accelerate: GPUs, then "
                          "CPU, then disk, within --max-memory), a device (cpu, cuda:1, disk) or a JSON "
                          "{module: device}. Blocks are then re-run in the backward pass, so one grown block "
                          "exists at a time."),
        click.option("--max-memory", default=None, metavar="SPEC",
                     help="--op learn with --device-map auto: memory per device, e.g. '0=20GiB,cpu=64GiB'."),
        click.option("--offload-folder", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="--op learn: folder for source weights the device map puts on disk (removed afterwards)."),
    ]):
        fn = decorator(fn)
    return fn


@click.command()
@click.argument("src", required=False)
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option("--op", type=Operator(), default="stack", show_default=True,
              help="Operator: stack (Gstack in depth / neuron splitting in width), zero (identity blocks / zero "
                   "fan-out units, function-preserving), random (random init + MSG mask), learn (LiGO: depth and "
                   "width operators learned on --data), upcycle (dense to MoE, see `hfgrow upcycle`). The old name "
                   "direct still means stack. Widening rescales some weights (by 1/copies, or sqrt(old/new) for "
                   "zero's norms); bf16/fp16 output rounds those unless the factor is a power of two, and then the "
                   "recipe says function_preserving: false and a warning suggests --dtype float32.")
@click.option("--width-op", type=Operator(width=True), default=None,
              help="Operator for the width part when it differs from --op (e.g. --op zero --width-op stack).")
@depth_options(("stack", "interpolate", "interleave"), None,
               "Depth placement for --factor/--layers [default: the operator's: stack for stack, interleave for "
               "zero/random].")
@width_options
@click.option("--noise", type=float, default=None, metavar="ALPHA",
              help="Blend every weight matrix with seeded noise: W <- (1-a)W + a*eps (paper's scales), a in [0,1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice and value.")
@click.option("--mask-steps", type=COUNT, default=None,
              help="--op random: steps of the MSG mask ramp recorded for training [default: 10% of the training "
                   "run, fitted when training starts].")
@click.option("--keep-tied", is_flag=True, default=False,
              help="Width growth with --op/--width-op zero: keep tied input and output embeddings tied (new hidden "
                   "units are zero in the embedding, so the tied LM head reads nothing from them; function-preserving). "
                   "Without it, widening a tied model unties it.")
@click.option("--style", type=click.Choice(["hfgrow", "prts"]), default="hfgrow", show_default=True,
              help="hfgrow's own operator variants, or each operator exactly as the papers' reference code runs "
                   "it (prts: new random layers on top with its init and a whole-block ramp, its G-right-direct "
                   "(bert2BERT), G-right-zero and G-right-random, LiGO's width matrices; see README).")
@_learn_options
@upcycle_options
@click.option("--recipe", "recipe", type=click.Path(exists=True, path_type=Path), default=None,
              help="Rebuild from a recipe (hfgrow.yaml or a grown folder): `hfgrow grow --recipe FILE OUT`; "
                   "`hfgrow grow SRC OUT --recipe FILE` takes the source from SRC.")
@output_options
@hub_options
@console_options
@click.pass_context
def grow(ctx, src, out, op, width_op, factor, layers, pattern, order, hidden_size, intermediate_size, num_heads,
         num_kv_heads, noise, seed, mask_steps, keep_tied, style, data, learn_steps, learn_lr, seq_len, batch_size,
         width_init, device_map, max_memory, offload_folder, recipe, dtype, max_shard_size, dry_run, overwrite, push_to,
         revision, token, **upcycling):
    """Grow SRC in depth, width or both with one of the paper's operators, and write OUT.

    Depth growth when --factor/--layers/--pattern is given, width growth when --hidden-size,
    --intermediate-size, --num-heads or --num-kv-heads is given, both when both are.
    SRC is a local model folder or a Hub repo id. OUT holds the model, a model card and a
    recipe (hfgrow.yaml) from which `hfgrow grow --recipe OUT/hfgrow.yaml NEW` rebuilds it
    bit for bit. --order defaults to stack for stack and to interleave (LLaMA Pro: a new
    layer after every L/(N-L) layers) for zero and random. `hfgrow grow SRC OUT --op stack
    --factor 4` writes the same weights as `hfgrow stack SRC OUT --factor 4`.

    \b
    Examples:
      hfgrow grow ./small ./deep --op zero --factor 2            # LLaMA-Pro identity blocks
      hfgrow grow ./small ./wide --hidden-size 4096              # HyperCloning x2 (FFN, heads follow)
      hfgrow grow ./small ./big --op zero --width-op stack --factor 2 --hidden-size 4096
      hfgrow grow ./tied ./wide --op zero --hidden-size 2048 --keep-tied   # embeddings stay tied
      hfgrow grow ./small ./msg --op random --layers 24 --mask-steps 2000
      hfgrow grow ./small ./noisy --factor 4 --noise 0.2         # Gstack + noise
      hfgrow grow ./small ./ligo --op learn --factor 4 --data corpus.txt --learn-steps 100   # LiGO
      hfgrow grow ./small ./ligo-wide --op learn --factor 2 --hidden-size 4096 --data corpus.txt
      hfgrow grow ./small ./ligo-big --op learn --factor 4 --data corpus.txt --device-map auto
      hfgrow grow ./small ./moe --op upcycle --experts 8 --top-k 2     # dense -> MoE (hfgrow upcycle)
      hfgrow grow --recipe ./big/hfgrow.yaml ./big-again
    """
    write = dict(max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, push_to=push_to, token=token)
    if recipe is not None:
        from hfgrow.growth.replay import replay

        refuse(given(ctx, RECIPE_FIXES + LEARN_ONLY), "cannot be combined with --recipe: the recipe fixes every "
                                                      "parameter.")
        if out is None:  # `grow --recipe R OUT`: the recipe names the source; `grow SRC OUT --recipe R` overrides it
            src, out = None, (Path(src) if src is not None else None)
        if out is None and not dry_run:
            raise click.UsageError("OUT is required unless --dry-run is given.")
        if given(ctx, ["max_shard_size"]) == []:
            write["max_shard_size"] = None  # the recipe's own
        report(replay(recipe, out, source=src, **write), dry_run)
        return
    if src is None:
        raise click.UsageError("give SRC and OUT (or --recipe FILE OUT).")
    if out is None and not dry_run:
        raise click.UsageError("OUT is required unless --dry-run is given.")
    depth = dict(factor=factor, layers=layers, pattern=pattern)
    width = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_heads=num_heads,
                 num_kv_heads=num_kv_heads)
    if op != "upcycle":
        refuse(given(ctx, UPCYCLE_ONLY), "is for --op upcycle.")
    if op == "upcycle":
        from hfgrow.growth.pipeline import upcycle

        refuse(given(ctx, NOT_FOR_UPCYCLE + LEARN_ONLY), "does not apply to --op upcycle.")
        result = upcycle(src, out, **upcycling, noise=noise, seed=seed, dtype=dtype, revision=revision, **write)
    elif op == "learn":
        from hfgrow.growth.ligo.operator import learn
        from hfgrow.growth.ligo.placement import placement_from_options

        refuse(given(ctx, NOT_FOR_LEARN), "does not apply to --op learn.")
        result = learn(src, out, data=list(data), order=order or "stack", **depth, **width, width_init=width_init,
                       style=style, learn_steps=learn_steps, learn_lr=learn_lr, seq_len=seq_len,
                       batch_size=batch_size, seed=seed,
                       placement=placement_from_options(device_map, max_memory, offload_folder), dtype=dtype,
                       revision=revision, **write)
    else:
        from hfgrow.growth.pipeline import grow as run_grow

        refuse(given(ctx, LEARN_ONLY), "is for --op learn.")
        result = run_grow(src, out, op=op, width_op=width_op, order=order, **depth, **width, noise=noise, seed=seed,
                          mask_steps=mask_steps, style=style, dtype=dtype, revision=revision, keep_tied=keep_tied,
                          **write)
    report(result, dry_run)


@click.command()
@click.argument("src")
@click.argument("out")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file to run both models on [default: a built-in sample].")
@click.option("--expect", type=click.Choice(["preserved"]), default=None,
              help="Exit with status 1 unless OUT computes the same function as SRC within --tol.")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Tolerance on max |dlogit|, relative to max(1, max |logit of SRC|).")
@click.option("--max-tokens", type=COUNT, default=256, show_default=True,
              help="Use at most this many tokens of the text.")
@hub_options
@console_options
def verify(src, out, text_file, expect, tol, max_tokens, revision, token):
    """Compare OUT with SRC on sample text: max |dlogit|, KL(src||out) and each model's loss.

    Both models are loaded in float32 on the CPU. A function-preserving operator (G-up-zero,
    G-right-direct, G-right-zero with RMSNorm) gives differences at float rounding level; OUT's
    recipe (function_preserving) says whether its growth is one, bf16 rounding included.
    --revision applies to SRC.

    \b
    Examples:
      hfgrow verify ./small ./small-zero --expect preserved
      hfgrow verify TinyLlama/TinyLlama_v1.1 ./wide --text notes.txt
    """
    from hfgrow.growth.verify import verify as run_verify

    text = None
    if text_file is not None:
        from hfgrow.io.folder import read_user_file

        text = read_user_file(text_file, "text file").decode("utf-8", errors="replace")
    result = run_verify(src, out, text=text, tol=tol, max_tokens=max_tokens, revision=revision, token=token)
    click.echo(result.report())
    if expect == "preserved" and not result.preserved:
        raise SystemExit(1)


COMMANDS = [stack, grow, verify]
