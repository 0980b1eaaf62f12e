"""`hfgrow eval`: measure a model — sliding-window loss on your text, and lm-evaluation-harness tasks."""

from __future__ import annotations

import json

import click

from hfgrow.cli.options import console_options

from hfgrow.errors import HfgrowError


def _format_eval_table(result, tasks: dict | None, label: str = "all") -> str:
    lines: list[str] = []
    if result is not None:
        lines.append(f"sliding window: seq_len {result.seq_len}, stride {result.stride}")
        rows = list(result.domains.items()) + [(label, result)]
        width = max(len(name) for name, _ in rows)
        lines.append(f"  {'domain':<{width}}  {'loss':>8}  {'ppl':>10}  {'tokens':>10}")
        for name, r in rows:
            lines.append(f"  {name:<{width}}  {r.loss:8.4f}  {r.perplexity:10.3f}  {r.tokens:>10}")
    if tasks:
        if lines:
            lines.append("")
        lines.append("tasks (lm-evaluation-harness)")
        for task, metrics in tasks.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "stderr" not in k)
            lines.append(f"  {task}: {shown}")
    return "\n".join(lines)


def _check_window_options(seq_len: int | None, stride: int | None, batch_size: int, max_tokens: int | None) -> None:
    """Every cheap check of the loss options, before the model is loaded."""
    from hfgrow.eval.loss import window_plan

    if seq_len is not None:
        window_plan(0, seq_len, stride if stride is not None else max(seq_len // 2, 1))
    elif stride is not None and stride < 1:
        raise HfgrowError(f"--stride must be at least 1 (got {stride}).")
    if batch_size < 1:
        raise HfgrowError(f"--batch-size must be at least 1 (got {batch_size}).")
    if max_tokens is not None and max_tokens < 2:
        raise HfgrowError(f"--max-tokens must be at least 2 (got {max_tokens}).")


@click.command("eval")
@click.argument("model")
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Text to score: .txt/.md, .jsonl (\"text\" field), .parquet (\"text\" column), .gz of the first two, a "
    "folder of them, hf:DATASET[:CONFIG][:SPLIT], or a token folder from hfgrow tokenize (its domains, made with "
    "MODEL's tokenizer). Repeat for several domains; NAME defaults to the file name without its suffix "
    "(web.jsonl.gz -> web).",
)
@click.option("--text-field", default="text", show_default=True, help="Text field of .jsonl/.parquet/hf: rows.")
@click.option("--seq-len", type=int, default=None, help="Window length [default: min(model context, 2048)].")
@click.option("--stride", type=int, default=None, help="Tokens between window starts [default: seq-len/2].")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Windows per forward pass.")
@click.option("--max-tokens", type=int, default=None, help="Score at most this many tokens per domain.")
@click.option(
    "--tasks",
    default=None,
    metavar="A,B",
    help="lm-evaluation-harness tasks (needs `pip install 'hfgrow[eval]'`); 'paper' = the paper's "
    "suite: lambada_openai, arc_challenge, arc_easy, logiqa, piqa, sciq, winogrande, wikitext.",
)
@click.option("--limit", type=float, default=None, help="Examples per task (for a quick --tasks run).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@click.option("--dtype", default=None, help="auto, float32, bfloat16, float16 [default: float32 on CPU].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@console_options
def eval_(
    model: str,
    data: tuple[str, ...],
    text_field: str,
    seq_len: int | None,
    stride: int | None,
    batch_size: int,
    max_tokens: int | None,
    tasks: str | None,
    limit: float | None,
    device: str | None,
    dtype: str | None,
    as_json: bool,
) -> None:
    """Measure MODEL: token-level loss and perplexity on your text, and benchmark tasks.

    Loss uses a sliding window (the Hugging Face perplexity guide's method): windows of --seq-len
    tokens every --stride tokens, each token scored exactly once with the previous window's tokens
    as context. --stride equal to --seq-len gives the plain chunked loss. Documents are tokenized
    as in training: each after the tokenizer's BOS (where it adds one) and followed by EOS. With several
    --data inputs the loss is reported
    per domain and in total (token-weighted).

    \b
    Examples:
      hfgrow eval out/grown --data valid.txt
      hfgrow eval out/grown --data web=web.jsonl --data code=code.parquet --seq-len 2048 --stride 1024
      hfgrow eval out/grown --tasks paper            # lm-evaluation-harness, the paper's suite
      hfgrow eval out/grown --data valid.txt --tasks piqa,arc_easy --limit 100 --json
    """
    if not data and not tasks:
        raise HfgrowError("nothing to do: give --data FILE and/or --tasks (e.g. --tasks paper).")
    if tasks:  # fail fast, before the (maybe long) loss evaluation
        from hfgrow.eval.tasks import require_lm_eval

        require_lm_eval()

    result = None
    label = "data"
    if data:
        from hfgrow.data.loading import source_tokens
        from hfgrow.data.specs import open_domain, parse_specs
        from hfgrow.eval.loss import evaluate_loss, load_model

        _check_window_options(seq_len, stride, batch_size, max_tokens)
        specs = parse_specs(list(data))
        sources = {spec.name: open_domain(spec, text_field) for spec in specs}  # missing files: before the model
        loaded, tokenizer = load_model(model, device=device, dtype=dtype)
        # tokenized here (or read from a token folder), so a document's text is never taken for a file name
        streams = {name: source_tokens(src, tokenizer, max_tokens) for name, src in sources.items()}
        streams = {name: s.tolist() if hasattr(s, "tolist") else s for name, s in streams.items()}
        result = evaluate_loss(
            loaded,
            streams,
            seq_len=seq_len,
            stride=stride,
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=not as_json,
        )
        label = specs[0].name if len(specs) == 1 else "all"
        del loaded
    task_results = None
    if tasks:
        from hfgrow.eval.tasks import run_tasks

        if limit is not None and float(limit).is_integer():
            limit = int(limit)  # the harness reads a float < 1 as a fraction, an int as a count
        task_results = run_tasks(model, tasks, batch_size=batch_size, device=device, dtype=dtype, limit=limit)

    if as_json:
        payload: dict = {"model": model}
        if result is not None:
            payload.update(result.to_dict())
        if task_results is not None:
            payload["tasks"] = task_results
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(_format_eval_table(result, task_results, label))


COMMANDS = [eval_]
