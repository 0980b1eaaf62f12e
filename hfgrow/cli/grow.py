"""`hfgrow grow` (every growth operator, depth and width, and recipe replay) and `hfgrow verify`."""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.stack import finish, output_options, source_options

OPS = ["direct", "zero", "random", "learn"]


@click.command()
@click.argument("src", required=False)
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option("--op", type=click.Choice(OPS), default="direct", show_default=True,
              help="Operator: direct (Gstack / neuron splitting), zero (identity blocks / zero fan-out units, "
                   "function-preserving), random (random init + MSG mask), learn (LiGO: depth and width "
                   "operators learned on --data).")
@click.option("--width-op", type=click.Choice(OPS), default=None,
              help="Operator for the width part when it differs from --op (e.g. --op zero --width-op direct).")
@click.option("--factor", "-g", type=float, default=None, help="Depth: growth factor g (L*g output layers).")
@click.option("--layers", "-n", type=int, default=None, help="Depth: number of output layers.")
@click.option("--pattern", "-p", default=None,
              help="Depth: exact layer map, e.g. '0-5*4'; with --op zero/random every repeat is a new layer.")
@click.option("--order", type=click.Choice(["stack", "interpolate", "interleave"]), default=None,
              help="Depth placement for --factor/--layers [default: stack for direct, interleave (LLaMA Pro: a "
                   "new layer after every L/(N-L) layers) for zero/random].")
@click.option("--hidden-size", type=int, default=None,
              help="Width: new hidden size (heads and FFN follow it unless given; head_dim stays fixed).")
@click.option("--intermediate-size", type=int, default=None, help="Width: new FFN size.")
@click.option("--num-heads", type=int, default=None, help="Width: new number of query heads.")
@click.option("--num-kv-heads", type=int, default=None,
              help="Width: new number of key/value heads [default: grow with the query heads; MQA stays 1].")
@click.option("--noise", type=float, default=None, metavar="ALPHA",
              help="Blend every weight matrix with seeded noise: W <- (1-a)W + a*eps (paper's scales), a in [0,1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice and value.")
@click.option("--mask-steps", type=int, default=None,
              help="--op random: steps of the MSG mask ramp recorded for training [default: 5000].")
@click.option("--data", multiple=True, help="--op learn: text (.txt/.md, .jsonl, .parquet, .gz, or a folder) to learn the growth on.")
@click.option("--learn-steps", type=int, default=100, show_default=True, help="--op learn: steps of the LiGO phase.")
@click.option("--learn-lr", type=float, default=1e-3, show_default=True, help="--op learn: LR of the coefficients.")
@click.option("--seq-len", type=int, default=256, show_default=True, help="--op learn: sequence length.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="--op learn: sequences per step.")
@click.option("--width-init", type=click.Choice(["direct", "identity"]), default="direct", show_default=True,
              help="--op learn: start of the width matrices: direct (the function-preserving widening) or "
                   "identity (LiGO: identity on source units, small random new units).")
@click.option("--device-map", default=None, metavar="MAP",
              help="--op learn: where the frozen source lives while learning: auto (accelerate: GPUs, then CPU, "
                   "then disk, within --max-memory), a device (cpu, cuda:1, disk) or a JSON {module: device}. "
                   "Blocks are then re-run in the backward pass, so one grown block exists at a time.")
@click.option("--max-memory", default=None, metavar="SPEC",
              help="--op learn with --device-map auto: memory per device, e.g. '0=20GiB,cpu=64GiB'.")
@click.option("--offload-folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--op learn: folder for source weights the device map puts on disk (removed afterwards).")
@click.option("--recipe", "recipe", type=click.Path(exists=True, path_type=Path), default=None,
              help="Rebuild from a recipe (hfgrow.yaml or a grown folder): `hfgrow grow --recipe FILE OUT`.")
@output_options
@source_options
def grow(src, out, op, width_op, factor, layers, pattern, order, hidden_size, intermediate_size, num_heads,
         num_kv_heads, noise, seed, mask_steps, data, learn_steps, learn_lr, seq_len, batch_size, width_init, device_map,
         max_memory, offload_folder, recipe, dtype, max_shard_size, dry_run, overwrite, push_to, quiet, revision, token):
    """Grow SRC in depth, width or both with one of the paper's operators, and write OUT.

    Depth growth when --factor/--layers/--pattern is given, width growth when --hidden-size,
    --intermediate-size, --num-heads or --num-kv-heads is given, both when both are.
    SRC is a local model folder or a Hub repo id. OUT holds the model, a model card and a
    recipe (hfgrow.yaml) from which `hfgrow grow --recipe OUT/hfgrow.yaml NEW` rebuilds it
    bit for bit.

    \b
    Examples:
      hfgrow grow ./small ./deep --op zero --factor 2            # LLaMA-Pro identity blocks
      hfgrow grow ./small ./wide --hidden-size 4096              # HyperCloning x2 (FFN, heads follow)
      hfgrow grow ./small ./big --op zero --width-op direct --factor 2 --hidden-size 4096
      hfgrow grow ./small ./msg --op random --layers 24 --mask-steps 2000
      hfgrow grow ./small ./noisy --factor 4 --noise 0.2         # Gstack + noise
      hfgrow grow ./small ./ligo --op learn --factor 4 --data corpus.txt --learn-steps 100   # LiGO
      hfgrow grow ./small ./ligo-wide --op learn --factor 2 --hidden-size 4096 --data corpus.txt
      hfgrow grow ./small ./ligo-big --op learn --factor 4 --data corpus.txt --device-map auto --offload-folder /scratch/off
      hfgrow grow --recipe ./big/hfgrow.yaml ./big-again
    """
    from hfgrow.growth.pipeline import grow as run_grow
    from hfgrow.growth.replay import replay

    if recipe is not None:
        if out is None:  # `grow --recipe R OUT`: the recipe names the source; `grow SRC OUT --recipe R` overrides it
            out, src = (Path(src) if src is not None else None), None
        given = [name for name, value in (("--factor", factor), ("--layers", layers), ("--pattern", pattern),
                                          ("--hidden-size", hidden_size), ("--intermediate-size", intermediate_size),
                                          ("--num-heads", num_heads), ("--num-kv-heads", num_kv_heads),
                                          ("--noise", noise), ("--mask-steps", mask_steps), ("--order", order),
                                          ("--width-op", width_op), ("--revision", revision))
                 if value is not None]
        if given:
            raise click.UsageError(f"{given[0]} cannot be combined with --recipe: the recipe fixes every parameter.")
        if out is None and not dry_run:
            raise click.UsageError("OUT is required unless --dry-run is given.")
        result = replay(recipe, out, source=src, token=token,
                        max_shard_size=max_shard_size if max_shard_size != "5GB" else None,
                        dry_run=dry_run, overwrite=overwrite, quiet=quiet, push_to=push_to)
        finish(result, dry_run, quiet)
        return
    if src is None:
        raise click.UsageError("give SRC and OUT (or --recipe FILE OUT).")
    if out is None and not dry_run:
        raise click.UsageError("OUT is required unless --dry-run is given.")
    if op == "learn":
        from hfgrow.growth.ligo.operator import learn
        from hfgrow.growth.ligo.placement import Placement, parse_device_map, parse_max_memory

        if width_op or noise is not None or mask_steps is not None:
            raise click.UsageError("--width-op, --noise and --mask-steps do not apply to --op learn.")
        if device_map is None and (max_memory or offload_folder):
            raise click.UsageError("--max-memory and --offload-folder go with --device-map.")
        if max_memory and device_map != "auto":
            raise click.UsageError("--max-memory is a budget for --device-map auto; an explicit map places "
                                   "every module itself.")
        placement = None
        if device_map is not None:
            placement = Placement(parse_device_map(device_map), parse_max_memory(max_memory), offload_folder)
        result = learn(src, out, data=list(data), factor=factor, layers=layers, pattern=pattern,
                       order=order or "stack", hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_heads=num_heads, num_kv_heads=num_kv_heads, width_init=width_init,
                       learn_steps=learn_steps, learn_lr=learn_lr, seq_len=seq_len, batch_size=batch_size, seed=seed,
                       placement=placement, dtype=dtype, revision=revision, token=token,
                       max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                       push_to=push_to)
        finish(result, dry_run, quiet)
        return
    if data or device_map or max_memory or offload_folder or width_init != "direct":
        raise click.UsageError("--data, --width-init, --device-map, --max-memory and --offload-folder are for "
                               "--op learn.")
    result = run_grow(src, out, op=op, width_op=width_op, factor=factor, layers=layers, pattern=pattern, order=order,
                      hidden_size=hidden_size, intermediate_size=intermediate_size, num_heads=num_heads,
                      num_kv_heads=num_kv_heads, noise=noise, seed=seed, mask_steps=mask_steps, dtype=dtype,
                      revision=revision, token=token, max_shard_size=max_shard_size, dry_run=dry_run,
                      overwrite=overwrite, quiet=quiet, push_to=push_to)
    finish(result, dry_run, quiet)


@click.command()
@click.argument("src")
@click.argument("out")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file to run both models on [default: a built-in sample].")
@click.option("--expect", type=click.Choice(["preserved"]), default=None,
              help="Exit with status 1 unless OUT computes the same function as SRC within --tol.")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Tolerance on max |dlogit|, relative to max(1, max |logit of SRC|).")
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Tokens of the text to use.")
@source_options
def verify(src, out, text_file, expect, tol, max_tokens, revision, token):
    """Compare OUT with SRC on sample text: max |dlogit|, KL(src||out) and each model's loss.

    Both models are loaded in float32 on the CPU. A function-preserving operator (G-up-zero,
    G-right-direct, G-right-zero with RMSNorm) gives differences at float rounding level.
    --revision applies to SRC.

    \b
    Examples:
      hfgrow verify ./small ./small-zero --expect preserved
      hfgrow verify TinyLlama/TinyLlama_v1.1 ./wide --text notes.txt
    """
    from hfgrow.errors import HfgrowError
    from hfgrow.growth.verify import verify as run_verify

    text = None
    if text_file is not None:
        try:
            text = text_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise HfgrowError(f"cannot read {text_file}: {exc}") from None
    result = run_verify(src, out, text=text, tol=tol, max_tokens=max_tokens, revision=revision, token=token)
    click.echo(result.report())
    if expect == "preserved" and not result.preserved:
        raise SystemExit(1)


COMMANDS = [grow, verify]
