"""`hfgrow mix`: BiMix data mixtures — entropy mixtures, fitting the mixing law, optimising it."""

from __future__ import annotations

import math

import click

from hfgrow.cli.options import console_options
from hfgrow.console import log, progress
from hfgrow.errors import HfgrowError

# the choices of --measure, here so `hfgrow --help` imports no numpy; tests check they equal
# hfgrow.mix.counts.MEASURES
MEASURE_CHOICES = ("se", "je", "ce")


@click.group("mix")
def mix() -> None:
    """Data mixtures for pre-training (BiMix, arXiv 2405.14908).

    \b
    entropy   training-free mixture: r_i = softmax(entropy of domain i / T), nats, T = 1
    fit       fit L_i(r_i, s) = A_i / r_i^alpha_i * (B_i / s^beta_i + C_i) to eval logs
    optimize  the mixture that minimises the fitted law's total loss at a step budget

    \b
    Examples:
      hfgrow mix entropy --data web=data/web.jsonl --data code=data/code/ \\
          --tokenizer TinyLlama/TinyLlama_v1.1 --out mix.json
      hfgrow mix fit runs/*/eval.jsonl --holdout 0.2 --out law.json
      hfgrow mix optimize law.json --steps 50000 --out mix.json
    """


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def _load_tokenizer(spec: str):
    from hfgrow.io.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(spec)
    if not getattr(tokenizer, "is_fast", False):
        log.warning(f"'{spec}' is not a fast tokenizer; counting will be slow.")
    return tokenizer


@mix.command("entropy", short_help="Training-free mixture from each domain's token entropy.")
@click.option("--data", "domain_args", multiple=True, metavar="NAME=PATH",
              help="A domain: a .txt/.md, .jsonl or .parquet file (.gz too), a folder of them, hf:DATASET[:CONFIG][:SPLIT], or a token folder (hfgrow tokenize; its domains). Repeat for each domain (as in every command).")
@click.option("--domain", "old_domain_args", multiple=True, hidden=True, metavar="NAME=PATH",
              help="The old spelling of --data (hfgrow 0.2); accepted with a warning for one release.")
@click.option("--tokenizer", "tokenizer_spec", required=True, metavar="MODEL_OR_FOLDER",
              help="Hub id or local folder of the tokenizer of the model you will train.")
@click.option("--measure", type=click.Choice(MEASURE_CHOICES), default="ce", show_default=True,
              help="Entropy that sets the proportions: unigram (se), joint bigram (je) or conditional (ce).")
@click.option("--seq-len", type=click.IntRange(min=2), default=1024, show_default=True,
              help="Tokens per sequence; bigrams are counted within sequences only.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Count at most this many tokens per domain (default: all).")
@click.option("--text-field", default="text", show_default=True, help="Text field of .jsonl/.parquet/hf: rows.")
@click.option("--log-base", type=click.Choice(["e", "2"]), default="e", show_default=True,
              help="Base of the entropies' logarithm: e (nats) or 2 (bits). Bits sharpen the mixture: they "
                   "divide every entropy by ln 2.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Softmax temperature: proportions are softmax(H / T). BiMix uses 1.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the mixture JSON here.")
@console_options
def entropy(domain_args, old_domain_args, tokenizer_spec, measure, seq_len, max_tokens, text_field, log_base,
            temperature, out) -> None:
    """Training-free mixture from each domain's token entropy.

    Tokenizes each domain, joins documents with EOS, cuts the stream into sequences of --seq-len
    tokens, counts unigrams and within-sequence bigrams, and computes SE, JE and CE (nats, or bits
    with --log-base 2). The proportions are softmax(H / --temperature) over domains for --measure
    (BiMix's rule: nats, temperature 1); the mixture JSON records the base and the temperature.

    \b
    Examples:
      hfgrow mix entropy --data web=data/web.jsonl --data code=data/code/ \\
          --tokenizer TinyLlama/TinyLlama_v1.1 --out mix.json
      hfgrow mix entropy --data wiki=hf:wikitext:wikitext-103-raw-v1 --data books=books.txt \\
          --tokenizer ./my-model --measure se --max-tokens 50000000
    """
    from hfgrow.data.specs import LocalSource, open_domain, parse_specs

    if old_domain_args:
        log.warning("--domain is now --data, as in every other command; --domain goes in the next release.")
    specs = parse_specs([*domain_args, *old_domain_args], require_name=True)
    if len(specs) < 2:
        raise HfgrowError(f"a mixture needs at least 2 domains (got {len(specs)}): repeat --data NAME=PATH.")
    sources = {spec.name: open_domain(spec, text_field) for spec in specs}
    for name, source in sources.items():  # catch empty files before the (slow) tokenizing
        if isinstance(source, LocalSource) and all(f.stat().st_size == 0 for f in source.files):
            raise HfgrowError(f"domain '{name}' is empty: '{source.spec}' holds no text.")
    tokenizer = _load_tokenizer(tokenizer_spec)

    from hfgrow.data.token_folder import TokenSource
    from hfgrow.data.tokenization import tokenizer_vocab_size
    from hfgrow.mix.counts import count_domain, count_ids, entropies, entropy_mixture

    stats = {}
    for name, source in sources.items():
        with progress(total=max_tokens, desc=name, unit="tok", unit_scale=True) as bar:
            if isinstance(source, TokenSource):  # a token folder: the stored stream, no tokenizing
                source.check_tokenizer(tokenizer)
                counts = count_ids(source.domain.chunks(max_tokens), tokenizer_vocab_size(tokenizer), seq_len)
            else:
                counts = count_domain(source.texts(), tokenizer, seq_len=seq_len, max_tokens=max_tokens,
                                      progress=bar.update)
        if counts.tokens == 0:
            raise HfgrowError(f"domain '{name}' is empty: '{source.spec}' holds no text.")
        try:
            stats[name] = {**entropies(counts), "tokens": counts.tokens}
        except HfgrowError as exc:
            raise HfgrowError(f"domain '{name}': {exc}") from None
    mixture = entropy_mixture(stats, measure, temperature=temperature, log_base=log_base)
    rows = [
        [name, f"{d['tokens']:,}", f"{d['se']:.4f}", f"{d['je']:.4f}", f"{d['ce']:.4f}", f"{d['proportion']:.4f}"]
        for name, d in mixture["domains"].items()
    ]
    unit = "nats" if log_base == "e" else "bits"
    click.echo(_table(["domain", "tokens", f"SE ({unit})", f"JE ({unit})", f"CE ({unit})",
                       f"r ({measure}, T={temperature:g})"], rows))
    if out:
        from hfgrow.data.mixture import write_mixture

        write_mixture(mixture, out)
        click.echo(f"wrote {out}")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


@mix.command("fit", short_help="Fit the BiMix law to per-domain eval logs.")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the fitted law JSON here.")
@click.option("--holdout", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=None,
              help="Keep this fraction out of the fit and report the error on it.")
@click.option("--holdout-by", type=click.Choice(["mixture", "step", "random"]), default="mixture", show_default=True,
              help="Hold out whole mixtures (unseen mixtures), the latest steps (extrapolation) or random points.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout choice.")
@console_options
def fit(logs, out, holdout, holdout_by, seed) -> None:
    """Fit the BiMix law to per-domain eval logs.

    LOGS are JSONL files, one observation a line:
    {"mixture": {"web": 0.7, "code": 0.3}, "step": 1000, "domain": "code", "loss": 2.31}.
    Needs, per domain, at least 5 observations at 2+ proportions and 3+ steps.

    \b
    Examples:
      hfgrow mix fit runs/mix-a/eval.jsonl runs/mix-b/eval.jsonl runs/mix-c/eval.jsonl --out law.json
      hfgrow mix fit runs/*/eval.jsonl --holdout 0.25 --holdout-by step
    """
    from hfgrow.mix.law import fit_law, load_observations, save_law

    observations = load_observations(logs)
    law = fit_law(observations, holdout=holdout or 0.0, holdout_by=holdout_by, seed=seed)
    header = ["domain", "n", "steps", "alpha", "beta", "A*B", "A*C (floor)", "R2", "mean rel err"]
    if holdout:
        header += ["holdout n", "holdout R2", "holdout rel err"]
    rows = []
    for name, d in law.domains.items():
        first, last = d.fit["steps"]
        row = [name, str(d.fit["n"]), f"{first:g}-{last:g}", _fmt(d.alpha), _fmt(d.beta), _fmt(d.scale),
               _fmt(d.floor), f"{d.fit['r2']:.4f}", f"{d.fit['mre']:.3%}"]
        if holdout:
            h = d.fit.get("holdout")
            row += [str(h["n"]), f"{h['r2']:.4f}", f"{h['mre']:.3%}"] if h else ["0", "-", "-"]
        rows.append(row)
    click.echo(_table(header, rows))
    click.echo("A, B and C are fixed only up to (A*k, B/k, C/k), so each is shown through A*B and A*C (the loss at "
               "r = 1 as s -> inf): compare those with the paper's tables (its A times its B and C); the law file "
               "keeps A, B, C with C = 1.")
    for warning in law.warnings():
        log.warning(f"{warning}.")
    skipped = sum(d.fit.get("skipped_r0", 0) for d in law.domains.values())
    if skipped:
        click.echo(f"left out {skipped} observations of domains with proportion 0 (the law is undefined there)")
    if out:
        save_law(law, out)
        click.echo(f"wrote {out}")


@mix.command("optimize", short_help="Mixture minimising the fitted law's total loss at --steps.")
@click.argument("law_path", metavar="LAW", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.FloatRange(min=0, min_open=True), required=True, help="Training steps of the target run.")
@click.option("--floor", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Smallest proportion a domain may get.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the mixture JSON here.")
@console_options
def optimize(law_path, steps, floor, out) -> None:
    """The mixture minimising the law's summed loss after --steps steps.

    r* = argmin sum_i L_i(r_i, S) subject to sum r_i = 1, r_i >= --floor (solved exactly).

    \b
    Examples:
      hfgrow mix optimize law.json --steps 50000 --out mix.json
      hfgrow mix optimize law.json --steps 2e5 --floor 0.02
    """
    from hfgrow.mix.law import load_law
    from hfgrow.mix.optimize import extrapolation_warning, law_mixture, optimize_mixture

    law = load_law(law_path)
    steps = int(steps) if float(steps).is_integer() else steps
    for warning in [*law.warnings(), extrapolation_warning(law, steps)]:
        if warning:
            log.warning(f"{warning}.")
    r = optimize_mixture(law, steps, floor=floor)
    uniform = {name: 1.0 / len(law.domains) for name in law.domains}
    rows = [
        [name, f"{r[name]:.4f}", f"{law.predict(name, r[name], steps):.4f}", f"{law.predict(name, uniform[name], steps):.4f}"]
        for name in law.domains
    ]
    rows.append(["total", "1.0000", f"{law.total(r, steps):.4f}", f"{law.total(uniform, steps):.4f}"])
    click.echo(_table(["domain", "r*", "loss at r*", "loss uniform"], rows))
    if out:
        from hfgrow.data.mixture import write_mixture

        write_mixture(law_mixture(law, steps, r, floor), out)
        click.echo(f"wrote {out}")


COMMANDS = [mix]
