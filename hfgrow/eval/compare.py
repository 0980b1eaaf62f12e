"""`hfgrow compare`: the paper's core experiment, at a scale you choose, on your data.

Runs, all with the same total training FLOPs C = 6·N_target·D (FLOPs per token from the shapes):

* ``base``: the small model (L/g layers, same width) from random init for d tokens;
* ``grown-<op>``: the base grown by each operator, trained on with the FLOPs left (C − 6·N_base·d);
* ``scratch``: the target model from random init for D tokens;
* ``grown-untrained`` (optional): Gstack of an *untrained* base (d = 0 in the paper: no gain expected);
* ``small-alone`` (optional): the base model trained alone for the whole budget C — at toy scale it
  can beat everything, and a fair report has to say so.

Every run is ``python -m hfgrow.continue`` (the one training loop of the project), read back and
plotted through :mod:`hfgrow.train.runlog`. Reported: final held-out losses, loss-vs-FLOPs curves
(PNG), and the speedup sp = FLOPs_scratch / FLOPs_grown − 1 at the scratch run's final loss, as the
paper defines it (base phase counted).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.units import parse_count

PRESETS = {
    # ~1M parameters, 8 layers (base: 2 layers): sized so every run fits ~15 minutes on 2 CPU cores
    "tiny": dict(model_type="llama", hidden_size=96, intermediate_size=256, num_hidden_layers=8,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=512, max_position_embeddings=512,
                 tie_word_embeddings=False),
}


@dataclass
class Run:
    name: str
    params: int
    tokens: int
    flops_offset: float = 0.0  # FLOPs spent before this run started (the base phase of a grown run)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs incl. offset, held-out loss)

    @property
    def final_loss(self) -> float:
        return self.curve[-1][1] if self.curve else math.nan

    @property
    def total_flops(self) -> float:
        return self.flops_offset + 6.0 * self.params * self.tokens


def flops_to_reach(curve: list[tuple[float, float]], loss: float) -> float | None:
    """First FLOPs at which ``curve`` reaches ``loss`` (linear interpolation); None if it never does.

    Example:
        >>> flops_to_reach([(0, 5.0), (10, 4.0), (20, 3.0)], 3.5)
        15.0
    """
    previous = None
    for flops, value in curve:
        if value <= loss:
            if previous is None or previous[1] == value:
                return flops
            f0, l0 = previous
            return f0 + (l0 - loss) / (l0 - value) * (flops - f0)
        previous = (flops, value)
    return None


def speedup(scratch: Run, grown: Run) -> float | None:
    """sp = FLOPs_scratch / FLOPs_grown − 1 at the scratch run's final loss (None: never reached)."""
    reached = flops_to_reach(grown.curve, scratch.final_loss)
    return None if reached is None else scratch.total_flops / reached - 1.0


def _config(spec: str) -> dict[str, Any]:
    if spec in PRESETS:
        return dict(PRESETS[spec])
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise HfgrowError(f"--config '{spec}' is neither a preset ({', '.join(PRESETS)}) nor a config.json.")
    return json.loads(path.read_text())


def _count_params(config: dict[str, Any]) -> int:
    from hfgrow.growth.timing import count_params
    from hfgrow.arch.layout import hf_config_from_dict

    return count_params(hf_config_from_dict(config)).total


def _split_corpus(data: list[str] | None, folder: Path, seed: int) -> tuple[Path, Path, str]:
    """Train/held-out text files (by document) and the text the tokenizer is trained on."""
    from hfgrow.data.text import read_documents
    from hfgrow.eval.tiny import python_docs_corpus

    documents = [doc for path in data for doc in read_documents(path)] if data else python_docs_corpus()
    documents = [d for d in documents if d.strip()]
    if len(documents) < 10:
        raise HfgrowError("--data has fewer than 10 documents; compare needs enough text for a held-out split.")
    random.Random(seed).shuffle(documents)
    n_eval = max(1, len(documents) // 20)
    folder.mkdir(parents=True, exist_ok=True)
    train, held_out = folder / "train.txt", folder / "eval.txt"
    train.write_text("\n\n".join(documents[n_eval:]))
    held_out.write_text("\n\n".join(documents[:n_eval]))
    return train, held_out, "\n".join(documents[n_eval:])[:2_000_000]


def collect(name: str, run_dir: Path, params: int, flops_offset: float = 0.0) -> Run:
    """A finished run as a :class:`Run`: its held-out loss at every evaluation, against the FLOPs spent.

    FLOPs are ``flops_offset`` (the base phase of a grown run) + 6·params·tokens seen.

    Example:
        >>> collect("grown-direct", Path("runs/grown-direct"), 4_000_000, flops_offset=1.2e12).curve[0]
        (1200000000000.0, 5.91)
    """
    from hfgrow.train.runlog import read_run

    record = read_run(run_dir)
    return Run(name, params, record.trained_tokens, flops_offset,
               [(flops_offset + 6.0 * params * tokens, loss) for tokens, loss in record.eval_curve()])


def _train(model: Path, run_dir: Path, train: Path, held_out: Path, tokens: int, args: dict[str, Any],
           quiet: bool) -> Path:
    steps = max(1, tokens // (args["seq_len"] * args["batch_size"]))
    eval_steps = max(1, steps // args["eval_points"])
    argv = [sys.executable, "-m", "hfgrow.continue", "--model", str(model), "--data", f"text={train}",
            "--eval-data", f"text={held_out}", "--eval-sequences", str(args["eval_sequences"]),
            "--output-dir", str(run_dir), "--seq-len", str(args["seq_len"]), "--batch-size", str(args["batch_size"]),
            "--max-steps", str(steps), "--eval-steps", str(eval_steps), "--save-steps", str(steps),
            "--keep-checkpoints", "1", "--lr", str(args["lr"]), "--warmup-steps", str(max(1, steps // 20)),
            "--seed", str(args["seed"])]
    result = subprocess.run(argv, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise HfgrowError(f"training run {run_dir.name} failed: {last}")
    return run_dir / "final"


def compare(out_dir: str | Path, *, config: str = "tiny", data: list[str] | None = None, factor: int = 4,
            ops: tuple[str, ...] = ("direct",), scratch_tokens: int | str = 1_000_000, base_fraction: float = 0.25,
            seq_len: int = 128, batch_size: int = 16, lr: float = 2e-3, seed: int = 0, eval_points: int = 20,
            eval_sequences: int = 64, include_untrained: bool = True, include_small: bool = True,
            quiet: bool = False) -> dict[str, Any]:
    """Run the grow-vs-scratch experiment and write compare.json, compare.md and compare.png to ``out_dir``.

    ``scratch_tokens`` is a count (``3M``, ``1e6``, ``3000000``); ``base_fraction`` sets d as a fraction of
    it (the base is trained on d tokens; the grown model gets the FLOPs that are left).

    Example:
        >>> report = compare("runs/cmp", scratch_tokens="1M")
        >>> report["speedup"]["grown-direct"]
        0.31
    """
    from hfgrow.arch.layout import hf_config_from_dict
    from hfgrow.eval.tiny import make_model, make_tokenizer

    import hfgrow

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HfgrowError(f"{out} already exists and is not empty; choose a new folder for the comparison.")
    scratch_tokens = parse_count(scratch_tokens, "token count for --tokens", "1M", minimum=1)
    if not 0 < base_fraction < 1:
        raise HfgrowError(f"--base-fraction must be between 0 and 1 (got {base_fraction}).")
    target = _config(config)
    layers = target.get("num_hidden_layers")
    if not isinstance(layers, int) or layers % factor:
        raise HfgrowError(f"the target's {layers} layers are not divisible by --factor {factor}.")
    base = dict(target, num_hidden_layers=layers // factor)
    if "layer_types" in target:
        base["layer_types"] = target["layer_types"][: layers // factor]
    n_target, n_base = _count_params(target), _count_params(base)
    budget = 6.0 * n_target * scratch_tokens
    base_tokens = int(scratch_tokens * base_fraction)
    grown_tokens = int((budget - 6.0 * n_base * base_tokens) / (6.0 * n_target))
    args = dict(seq_len=seq_len, batch_size=batch_size, lr=lr, seed=seed, eval_points=eval_points,
                eval_sequences=eval_sequences)

    train, held_out, tokenizer_text = _split_corpus(data, out / "data", seed)
    models = out / "models"
    make_tokenizer(models / "tokenizer", text=tokenizer_text, vocab_size=target.get("vocab_size", 1024))
    for name, cfg in (("target-init", target), ("base-init", base)):
        make_model(models / name, hf_config_from_dict(cfg), seed=seed, tokenizer=False)
        for item in (models / "tokenizer").iterdir():
            (models / name / item.name).write_bytes(item.read_bytes())

    runs: dict[str, Run] = {}
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"target {n_target:,} params, base {n_base:,}; budget {budget:.3g} FLOPs = {scratch_tokens:,} target tokens")
    say(f"[1] base: {base_tokens:,} tokens")
    base_final = _train(models / "base-init", out / "runs" / "base", train, held_out, base_tokens, args, quiet)
    runs["base"] = collect("base", out / "runs" / "base", n_base)
    base_flops = runs["base"].total_flops
    for op in ops:
        grown = models / f"grown-{op}"
        if op == "direct":
            hfgrow.stack(str(base_final), grown, factor=factor, quiet=True)
        else:
            hfgrow.grow(str(base_final), grown, op=op, factor=factor, seed=seed, quiet=True)
        say(f"[2] grown-{op}: {grown_tokens:,} tokens after growth")
        run_dir = out / "runs" / f"grown-{op}"
        _train(grown, run_dir, train, held_out, grown_tokens, args, quiet)
        runs[f"grown-{op}"] = collect(f"grown-{op}", run_dir, n_target, base_flops)
    say(f"[3] scratch: {scratch_tokens:,} tokens")
    _train(models / "target-init", out / "runs" / "scratch", train, held_out, scratch_tokens, args, quiet)
    runs["scratch"] = collect("scratch", out / "runs" / "scratch", n_target)
    if include_untrained:
        hfgrow.stack(str(models / "base-init"), models / "grown-untrained", factor=factor, quiet=True)
        say(f"[4] grown-untrained (d = 0): {scratch_tokens:,} tokens")
        _train(models / "grown-untrained", out / "runs" / "grown-untrained", train, held_out, scratch_tokens, args,
               quiet)
        runs["grown-untrained"] = collect("grown-untrained", out / "runs" / "grown-untrained", n_target)
    if include_small:
        small_tokens = int(budget / (6.0 * n_base))
        say(f"[5] small-alone: {small_tokens:,} tokens (the whole budget on the base model)")
        _train(models / "base-init", out / "runs" / "small-alone", train, held_out, small_tokens, args, quiet)
        runs["small-alone"] = collect("small-alone", out / "runs" / "small-alone", n_base)

    report = make_report(runs, dict(config=config, factor=factor, ops=list(ops), target_params=n_target,
                                base_params=n_base, budget_flops=budget, scratch_tokens=scratch_tokens,
                                base_tokens=base_tokens, grown_tokens=grown_tokens, **args))
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(report))
    plot(runs, out / "compare.png", report)
    return report


def make_report(runs: dict[str, Run], setup: dict[str, Any]) -> dict[str, Any]:
    """Final losses, FLOPs, speedups vs scratch, the best run and the regime (does the target beat the small
    model trained alone on the same FLOPs?) of a set of runs that includes ``scratch``."""
    scratch = runs["scratch"]
    speedups = {name: speedup(scratch, run) for name, run in runs.items() if name.startswith("grown")}
    best = min(runs.values(), key=lambda r: r.final_loss)
    grown_best = min((r.final_loss for n, r in runs.items() if n.startswith("grown-") and n != "grown-untrained"),
                     default=math.nan)
    if "small-alone" in runs and runs["small-alone"].final_loss < min(scratch.final_loss, grown_best):
        regime = ("small-model regime: the base model trained alone on the whole budget beats the target model, "
                  "grown or not; at this budget the target is too big, and growth mostly buys a cheaper model "
                  "trained longer. The paper's claim is about budgets where the target wins.")
    else:
        regime = "target regime: the target model beats the small model trained alone on the same FLOPs."
    return {
        "setup": setup,
        "final_loss": {name: run.final_loss for name, run in runs.items()},
        "total_flops": {name: run.total_flops for name, run in runs.items()},
        "speedup": speedups,
        "best_run": best.name,
        "regime": regime,
        "curves": {name: run.curve for name, run in runs.items()},
        "runs": {name: {k: v for k, v in asdict(run).items() if k != "curve"} for name, run in runs.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"Target {setup['target_params']:,} params, base {setup['base_params']:,} (g = {setup['factor']}); "
        f"budget {setup['budget_flops']:.3g} FLOPs ({setup['scratch_tokens']:,} target tokens); "
        f"base trained on d = {setup['base_tokens']:,} tokens.",
        "",
        "| run | final held-out loss | FLOPs | speedup vs scratch |",
        "|---|---|---|---|",
    ]
    for name, loss in report["final_loss"].items():
        sp = report["speedup"].get(name)
        shown = "—" if name not in report["speedup"] else ("never reaches scratch's loss" if sp is None else f"{sp:+.1%}")
        lines.append(f"| {name} | {loss:.4f} | {report['total_flops'][name]:.3g} | {shown} |")
    lines += ["", f"Regime: {report['regime']}", ""]
    return "\n".join(lines)


def plot(runs: dict[str, Run], path: Path, report: dict[str, Any]) -> Path:
    """Held-out loss vs FLOPs of every run (the small model's runs dashed), through the project's loss plot."""
    from hfgrow.train.runlog import Curve, plot_curves

    curves = [Curve(f"{name} ({run.final_loss:.3f})", run.curve, style="--" if name in ("base", "small-alone") else "-",
                    width=1.6) for name, run in runs.items()]
    sp = report["speedup"].get("grown-direct")
    title = "grow vs scratch at equal FLOPs" + (f" — Gstack speedup {sp:+.0%}" if sp is not None else "")
    return plot_curves(curves, path, xlabel="training FLOPs (base phase included for grown runs)", title=title,
                       ylabel="held-out loss (nats/token)")
