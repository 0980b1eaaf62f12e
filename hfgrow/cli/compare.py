"""`hfgrow compare`: grow vs scratch at equal FLOPs, or dense vs upcycled at equal active FLOPs, on your data."""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.options import Operator, console_options
from hfgrow.eval.compare import UPCYCLE_BASE_FRACTION, UPCYCLE_EXPERTS, UPCYCLE_PRESET, UPCYCLE_TOKENS, UPCYCLE_TOP_K


NOT_FOR_UPCYCLE = ("factor", "optimizers", "no_untrained", "no_small")
UPCYCLE_ONLY = ("experts", "top_k")


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--target", default=None, metavar="PRESET|CONFIG",
              help="Target model, as in `hfgrow plan --target`: a preset (tiny: ~1M parameters for CPUs; gpu: 34M "
                   "for one GPU) or a config.json / "
                   "model folder (random init) [default: tiny]. With --op upcycle, the dense model "
                   f"[default: {UPCYCLE_PRESET}, the tiny preset at 2 layers].")
@click.option("--data", multiple=True, help="Text files (.txt/.md, .jsonl, .parquet, .gz) or folders; default: Python's pydoc topics.")
@click.option("--config", "old_config", default=None, hidden=True, help="The old spelling of --target.")
@click.option("--factor", "-g", type=float, default=4, show_default=True,
              help="Depth growth factor g, as in `hfgrow grow`: the base has L/g layers (a whole number).")
@click.option("--op", "ops", multiple=True, default=("stack",), show_default=True,
              type=Operator(in_run=True),
              help="Growth operators to compare (repeatable); upcycle: dense vs upcycled, an experiment of its own.")
@click.option("--max-tokens", "scratch_tokens", default=None, metavar="N",
              help="Tokens of the scratch run, e.g. 3M, 1e6 or 1000000; it fixes the FLOPs budget of every run "
                   "[default: 1M]. With --op upcycle, the dense arm's tokens after the dense checkpoint "
                   f"[default: {UPCYCLE_TOKENS}].")
@click.option("--tokens", "old_tokens", default=None, hidden=True, help="The old spelling of --max-tokens.")
@click.option("--base-fraction", type=float, default=None,
              help="d, the base model's tokens, as a fraction of --max-tokens [default: 0.25]. With --op upcycle, the "
                   f"dense model's pre-training tokens [default: {UPCYCLE_BASE_FRACTION:g}].")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Max LR of every arm. Default: chosen per arm by one rule, a sweep over --lr-grid on the arm's "
                   "first 5% of steps (the report states it).")
@click.option("--lr-grid", default="1e-3,2e-3,4e-3,8e-3", show_default=True, help="LRs the sweep tries, comma-separated.")
@click.option("--grow-optimizer", "optimizers", multiple=True, default=("fresh",), show_default=True,
              type=click.Choice(["fresh", "carry"]),
              help="AdamW state at the growth; repeat to run each operator both ways (carry arms: grown-<op>-carry).")
@click.option("--experts", type=int, default=UPCYCLE_EXPERTS, show_default=True,
              help="--op upcycle: experts per MLP (E).")
@click.option("--top-k", type=int, default=UPCYCLE_TOP_K, show_default=True,
              help="--op upcycle: experts per token (k).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-untrained", is_flag=True, help="Skip growing an untrained base (d = 0).")
@click.option("--no-small", is_flag=True, help="Skip the small model trained alone on the whole budget.")
@console_options
@click.pass_context
def compare(ctx, out, target, old_config, data, factor, ops, scratch_tokens, old_tokens, base_fraction, seq_len,
            batch_size, lr, lr_grid, optimizers, experts, top_k, seed, no_untrained, no_small):
    """Train base -> grow -> continue, and the target from scratch, at equal FLOPs; plot and tabulate.

    Every arm is one run of hfgrow.continue (a grown arm grows inside its run, --grow OP:g@d).
    Writes OUT/compare.png (loss vs FLOPs), OUT/compare.md and OUT/compare.json with the final
    losses and the speedup sp = FLOPs_scratch / FLOPs_grown - 1 at the scratch run's final loss,
    withheld when the scratch run has not learned (not 0.1 nats below a unigram model's loss).

    --op upcycle: a dense model pre-trained from random init, then continued twice at equal active
    FLOPs (6 x parameters a token uses x tokens): dense, and upcycled inside its run
    (--grow upcycle:E@0, top-k routing); the upcycled arm gets fewer tokens when its k experts cost
    more than the MLP. Reports its loss as a ratio to the dense arm's and the share of the dense
    arm's FLOPs at which it reaches the dense arm's final loss.

    \b
    Examples:
      hfgrow compare runs/cmp
      hfgrow compare runs/cmp --op stack --op zero --max-tokens 3M
      hfgrow compare runs/cmp --grow-optimizer fresh --grow-optimizer carry --lr 3e-3
      hfgrow compare runs/cmp --target my-target/config.json --data corpus.jsonl --factor 2
      hfgrow compare runs/upcycle --op upcycle                     # dense vs upcycled (4 experts, top-2)
      hfgrow compare runs/upcycle8 --op upcycle --experts 8 --max-tokens 1M
    """
    from hfgrow.cli.options import given, refuse, renamed
    from hfgrow.console import quiet
    from hfgrow.data.token_folder import is_token_folder
    from hfgrow.eval.compare import compare as run_compare, markdown
    from hfgrow.errors import HfgrowError
    from hfgrow.growth import registry

    scratch_tokens = renamed("--max-tokens", "--tokens", scratch_tokens, old_tokens)
    config = renamed("--target", "--config", target, old_config)
    if any("experts" in registry.get(op).names for op in ops):
        refuse(given(ctx, NOT_FOR_UPCYCLE), "does not apply to --op upcycle (dense vs upcycled, continued from one "
                                            "dense checkpoint).")
    else:
        refuse(given(ctx, UPCYCLE_ONLY), "is for --op upcycle.")
    for path in data:
        if is_token_folder(path):  # its ids belong to another tokenizer than the one compare trains
            raise HfgrowError(f"'{path}' is a token folder; compare trains its own tokenizer on the text, so give "
                              "it the text files the folder was made from.")
    try:
        grid = tuple(float(x) for x in lr_grid.split(",") if x.strip())
    except ValueError:
        raise HfgrowError(f"--lr-grid {lr_grid!r}: give learning rates separated by commas, e.g. 1e-3,3e-3.") from None
    if not grid or min(grid) <= 0:
        raise HfgrowError(f"--lr-grid {lr_grid!r}: give at least one positive learning rate.")
    report = run_compare(out, config=config, data=list(data) or None, factor=factor, ops=tuple(ops),
                         optimizers=tuple(dict.fromkeys(optimizers)), scratch_tokens=scratch_tokens,
                         base_fraction=base_fraction, seq_len=seq_len, batch_size=batch_size, lr=lr, lr_grid=grid,
                         seed=seed, include_untrained=not no_untrained, include_small=not no_small, experts=experts,
                         top_k=top_k, quiet=quiet())
    click.echo(markdown(report))
    click.echo(f"plot: {Path(out) / 'compare.png'}")


COMMANDS = [compare]
