"""`hfgrow compare`: grow vs scratch at equal FLOPs, on your data."""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.options import Operator, console_options


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--config", default="tiny", show_default=True,
              help="Target model: a preset (tiny: ~1M parameters for CPUs; gpu: 34M for one GPU) or a config.json / model folder (random init).")
@click.option("--data", multiple=True, help="Text files (.txt/.md, .jsonl, .parquet, .gz) or folders; default: Python's pydoc topics.")
@click.option("--factor", "-g", type=int, default=4, show_default=True)
@click.option("--op", "ops", multiple=True, default=("stack",), show_default=True,
              type=Operator(depth=True, in_run=True), help="Growth operators to compare (repeatable).")
@click.option("--max-tokens", "scratch_tokens", default=None, metavar="N",
              help="Tokens of the scratch run, e.g. 3M, 1e6 or 1000000; it fixes the FLOPs budget of every run "
                   "[default: 1M].")
@click.option("--tokens", "old_tokens", default=None, hidden=True, help="The old spelling of --max-tokens.")
@click.option("--base-fraction", type=float, default=0.25, show_default=True,
              help="d, the base model's tokens, as a fraction of --max-tokens.")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Max LR of every arm. Default: chosen per arm by one rule, a sweep over --lr-grid on the arm's "
                   "first 5% of steps (the report states it).")
@click.option("--lr-grid", default="1e-3,2e-3,4e-3,8e-3", show_default=True, help="LRs the sweep tries, comma-separated.")
@click.option("--grow-optimizer", "optimizers", multiple=True, default=("fresh",), show_default=True,
              type=click.Choice(["fresh", "carry"]),
              help="AdamW state at the growth; repeat to run each operator both ways (carry arms: grown-<op>-carry).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-untrained", is_flag=True, help="Skip growing an untrained base (d = 0).")
@click.option("--no-small", is_flag=True, help="Skip the small model trained alone on the whole budget.")
@console_options
def compare(out, config, data, factor, ops, scratch_tokens, old_tokens, base_fraction, seq_len, batch_size, lr,
            lr_grid, optimizers, seed, no_untrained, no_small):
    """Train base -> grow -> continue, and the target from scratch, at equal FLOPs; plot and tabulate.

    Every arm is one run of hfgrow.continue (a grown arm grows inside its run, --grow OP:g@d).
    Writes OUT/compare.png (loss vs FLOPs), OUT/compare.md and OUT/compare.json with the final
    losses and the speedup sp = FLOPs_scratch / FLOPs_grown - 1 at the scratch run's final loss,
    withheld when the scratch run has not learned (not 0.1 nats below a unigram model's loss).

    \b
    Examples:
      hfgrow compare runs/cmp
      hfgrow compare runs/cmp --op stack --op zero --max-tokens 3M
      hfgrow compare runs/cmp --grow-optimizer fresh --grow-optimizer carry --lr 3e-3
      hfgrow compare runs/cmp --config my-target/config.json --data corpus.jsonl --factor 2
    """
    from hfgrow.cli.options import renamed
    from hfgrow.console import quiet
    from hfgrow.data.token_folder import is_token_folder
    from hfgrow.eval.compare import compare as run_compare, markdown
    from hfgrow.errors import HfgrowError

    scratch_tokens = renamed("--max-tokens", "--tokens", scratch_tokens, old_tokens, default="1M")
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
                         seed=seed, include_untrained=not no_untrained, include_small=not no_small,
                         quiet=quiet())
    click.echo(markdown(report))
    click.echo(f"plot: {Path(out) / 'compare.png'}")


COMMANDS = [compare]
