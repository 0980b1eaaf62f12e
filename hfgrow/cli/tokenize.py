"""`hfgrow tokenize`: text to a token folder, once, on every CPU core (format: hfgrow.data.tokens)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from hfgrow.cli.options import BYTES, console_options, hub_options
from hfgrow.console import log, progress, quiet


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--data", "data", multiple=True, required=True, metavar="[NAME=]PATH|hf:NAME",
              help="A domain: a .txt/.md, .jsonl or .parquet file (.gz too), a folder of them, or "
                   "hf:DATASET[:CONFIG][:SPLIT]. Repeat for each domain.")
@click.option("--tokenizer", "tokenizer_spec", required=True, metavar="MODEL_OR_FOLDER",
              help="Hub id or local folder of the tokenizer of the model you will train.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Tokenizing processes [default: the CPU cores this process may use].")
@click.option("--shard-size", type=BYTES, default="64MB", show_default=True,
              help="Text per shard (counted in characters); a worker holds one shard at a time.")
@click.option("--text-field", default="text", show_default=True, help="Text field of .jsonl/.parquet/hf: rows.")
@hub_options
@console_options
def tokenize(out, data, tokenizer_spec, workers, shard_size, text_field, revision, token) -> None:
    """Tokenize text once into the token folder OUT, for `--data OUT` in training.

    Every document becomes its tokens followed by EOS, after the tokenizer's BOS where it adds one
    (Gemma, Llama), as in training from text; the index records that BOS (tokens.json). The
    shards are flat uint16 (uint32 for vocabularies of 65536+ ids) arrays that training reads
    memory-mapped. Safe to interrupt: run the same command again and it goes on where it stopped.

    \b
    Examples:
      hfgrow tokenize tok/ --data web=data/web.jsonl --data code=data/code/ --tokenizer ./grown
      hfgrow tokenize tok/ --data hf:roneneldan/TinyStories --tokenizer TinyLlama/TinyLlama_v1.1 -j 32
      hfgrow train --model ./grown --data tok/ --output-dir run --max-tokens 2B
    """
    from hfgrow.data.specs import parse_specs
    from hfgrow.data.tokens import tokenize_to_folder
    from hfgrow.units import format_count, parse_bytes

    specs = parse_specs(list(data))
    tokenizer = _load_tokenizer(tokenizer_spec, revision, token)
    workers = workers or _cores()
    bar = progress(desc="tokenize", unit="tok", unit_scale=True, leave=True)
    totals: dict[str, list[int]] = {}

    def advance(name: str, tokens: int, documents: int) -> None:
        t = totals.setdefault(name, [0, 0])
        t[0] += tokens
        t[1] += documents
        bar.set_postfix_str(name)
        bar.update(tokens)

    start = time.perf_counter()
    try:
        index = tokenize_to_folder(specs, tokenizer, out, tokenizer_name=tokenizer_spec, workers=workers,
                                   shard_chars=parse_bytes(shard_size, "--shard-size"), text_field=text_field,
                                   progress=advance)
    except KeyboardInterrupt:
        bar.close()
        log.error(f"interrupted; the finished shards in {out} are kept: run the same command again to go on.")
        sys.exit(130)
    bar.close()
    if not quiet():
        seconds = time.perf_counter() - start
        for name, entry in index["domains"].items():
            click.echo(f"{name}: {format_count(entry['tokens'])} tokens, {entry['documents']:,} documents, "
                       f"{len(entry['shards'])} shards")
        total = sum(e["tokens"] for e in index["domains"].values())
        done = sum(t[0] for t in totals.values())
        rate = f", {done / seconds:,.0f} tokens/s on {workers} workers" if done and seconds > 0 else ""
        click.echo(f"wrote {out} ({format_count(total)} tokens, {index['dtype']}{rate})")


def _load_tokenizer(spec: str, revision: str | None, token: str | None):
    from hfgrow.io.tokenizer import load_tokenizer

    return load_tokenizer(spec, revision=revision, token=token)


COMMANDS = [tokenize]
