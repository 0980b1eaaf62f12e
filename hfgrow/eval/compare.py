"""`hfgrow compare`: the paper's core experiment, at a scale you choose, on your data.

Every arm is one training run of the product's own loop (``python -m hfgrow.continue``), all with the
same total training FLOPs C = 6·N_target·D (FLOPs per token from the shapes), each starting from the
architecture's random initialisation (model folders with a config and a tokenizer, no weights):

* ``grown-<op>``: the small model (L/g layers, same width) for d tokens, grown by the operator inside the
  run (``--grow OP:g@d``), trained on with the FLOPs left (C − 6·N_base·d); ``base`` in the report is
  that run's first stage (its held-out loss when it grew);
* ``scratch``: the target model for D tokens;
* ``grown-untrained`` (optional): ``--grow stack:g@0``, Gstack of an *untrained* base (d = 0 in the
  paper: no gain expected);
* ``small-alone`` (optional): the base model alone for the whole budget C — at toy scale it can beat
  everything, and a fair report has to say so.

Learning rate: every arm's max LR is chosen by one rule (:func:`choose_lr`): the arm's own run, cut to
its first :data:`SWEEP_FRACTION` of steps (at least :data:`MIN_SWEEP_STEPS`), at each LR of a grid;
the LR with the lowest held-out loss at the end of that short run wins — unless no LR has learned by
then (still at the unigram plateau), when the whole arm runs at each LR and the lowest final loss wins.
``lr=`` fixes one LR for all.

Reported: final held-out losses, loss-vs-FLOPs curves (PNG), the regime (does the target beat the
small model trained alone?) and the speedup sp = FLOPs_scratch / FLOPs_grown − 1 at the scratch run's
final loss, as the paper defines it (base phase counted) — only when the scratch arm has learned: its
final held-out loss must be at least :data:`LEARNED_MARGIN` nats below the held-out cross-entropy of a
unigram model of the training data (the best prediction that ignores context). A baseline that sits at
token frequencies makes any speedup meaningless.

``--op upcycle`` (:func:`compare_upcycle`) is the other way to grow: a dense model pre-trained from random
init, then continued dense and, from the same checkpoint, upcycled into a mixture of experts inside its run,
both at equal *active* training FLOPs (6 · parameters a token uses · tokens).
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hfgrow.console import log
from hfgrow.errors import HfgrowError
from hfgrow.io.output import atomic_write
from hfgrow.units import parse_count

PRESETS = {
    # ~1M parameters, 8 layers (base: 2 layers): sized so every run fits ~15 minutes on 2 CPU cores
    "tiny": dict(model_type="llama", hidden_size=96, intermediate_size=256, num_hidden_layers=8,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=512, max_position_embeddings=512,
                 tie_word_embeddings=False),
    # 34.1M parameters, 8 layers (base: 2 layers, 14.8M): the paper's regime on one GPU, where the target beats the
    # small model alone; 5e7 tokens per arm at seq 512 x batch 64 fit ~7 minutes on one H100 (bench/gpu.sh compare)
    "gpu": dict(model_type="llama", hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=8, vocab_size=8192, max_position_embeddings=1024,
                tie_word_embeddings=False),
}
# --op upcycle: the dense model is the tiny preset's 2-layer base (0.32M parameters), which leaves the unigram plateau
# within ~60 steps; the tiny preset itself (8 layers) sits on it for ~20% of a run and would take ~20 minutes here
PRESETS["tiny-dense"] = dict(PRESETS["tiny"], num_hidden_layers=2)
UPCYCLE_PRESET = "tiny-dense"
# 4 experts, top-2: the router has a real choice (6 pairs per token) and learns from the LM loss (Mixtral renormalises
# the top-k weights, so under top-1 every weight is 1 and only the balancing loss would move the router); every
# expert sees half the tokens. The active parameters (one extra MLP per layer) do not depend on E; more experts only
# add memory and the expert loop's per-expert overhead on a CPU.
UPCYCLE_EXPERTS, UPCYCLE_TOP_K = 4, 2
# the dense model is pre-trained on 256k tokens (125 steps of 2,048), then each arm gets half that compute again (the
# dense arm 128k tokens): about the extra budget at which Sparse Upcycling reports beating dense continuation
UPCYCLE_TOKENS = "128k"
UPCYCLE_BASE_FRACTION = 2.0
LR_GRID = (1e-3, 2e-3, 4e-3, 8e-3)  # factor-2 steps: at toy scale the scratch arm is sensitive to the LR
SWEEP_FRACTION = 0.05
MIN_SWEEP_STEPS = 20
LEARNED_MARGIN = 0.1  # nats below the unigram model's held-out loss


@dataclass
class Run:
    """A finished arm: its final model's size, the tokens and FLOPs it trained on, its held-out loss curve."""

    name: str
    params: int
    tokens: int
    total_flops: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs spent, held-out loss)

    @property
    def final_loss(self) -> float:
        return self.curve[-1][1] if self.curve else math.nan


@dataclass(frozen=True)
class Arm:
    """One training run of the comparison: the model folder it starts from, its growth, its length."""

    name: str
    model: str  # "base", "target" or "dense": models/<model>/ (config and tokenizer, no weights)
    steps: int
    grow: str | None = None  # --grow OP:FACTOR@TOKENS
    grow_tokens: int = 0
    optimizer: str = "fresh"
    start: str | None = None  # a trained model folder to start from instead of models/<model>/ (--op upcycle)
    export: bool = False  # write the trained model as RUN/final (the dense model the upcycle arms continue)
    top_k: int | None = None  # --grow-top-k of an upcycling

    def sweep(self, steps: int) -> Arm:
        """The arm cut to its first ``steps`` steps (a growth past them is not made; nothing exported)."""
        keep = self.grow is not None and self.grow_tokens < steps
        return replace(self, steps=steps, grow=self.grow if keep else None, grow_tokens=self.grow_tokens if keep else 0,
                       export=False)


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
    from hfgrow.arch.layout import read_config_file

    path = Path(spec)
    if not (path.is_dir() or path.is_file()):
        raise HfgrowError(f"--config '{spec}' is neither a preset ({', '.join(PRESETS)}) nor a config.json.")
    return read_config_file(path)


def _count_params(config: dict[str, Any]):
    """The :class:`~hfgrow.growth.timing.ParamCount` of a config dict (FLOPs take its ``active`` count)."""
    from hfgrow.arch.layout import hf_config_from_dict
    from hfgrow.growth.timing import count_params

    return count_params(hf_config_from_dict(config))


def _empty_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HfgrowError(f"{out} already exists and is not empty; choose a new folder for the comparison.")
    return out


def _tokens_per_step(seq_len: int, batch_size: int) -> int:
    """Tokens of one optimizer step of every arm, as hfgrow.continue counts them (one process, no accumulation):
    the training config's own count, which also refuses a sequence length or batch it would refuse."""
    from hfgrow.train.config import TrainConfig

    return TrainConfig(model="compare", output_dir="compare", max_steps=1, seq_len=seq_len,
                       batch_size=batch_size).tokens_per_step


def _say(quiet: bool):
    return (lambda msg: None) if quiet else log.info


def _prepare(out: Path, data: list[str] | None, configs: dict[str, dict[str, Any]], settings: dict[str, Any],
             quiet: bool) -> tuple[Trainer, float]:
    """The comparison's folder: the train/held-out split, a tokenizer trained on the training text, a model folder
    per config (config and tokenizer only: each run's own random init); the trainer and the unigram loss."""
    from hfgrow.arch.layout import hf_config_from_dict
    from hfgrow.eval.tiny import make_tokenizer

    train, held_out, tokenizer_text = _split_corpus(data, out / "data", settings["seed"])
    models = out / "models"
    vocab = next(iter(configs.values())).get("vocab_size", 1024)
    tokenizer = make_tokenizer(models / "tokenizer", text=tokenizer_text, vocab_size=vocab)
    for name, cfg in configs.items():
        hf_config_from_dict(cfg).save_pretrained(models / name)
        tokenizer.save_pretrained(models / name)
    unigram = unigram_loss(train, held_out, tokenizer, settings["seq_len"], settings["eval_sequences"])
    return Trainer(models, train, held_out, settings, quiet), unigram


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
    atomic_write(train, "\n\n".join(documents[n_eval:]))
    atomic_write(held_out, "\n\n".join(documents[:n_eval]))
    return train, held_out, "\n".join(documents[n_eval:])[:2_000_000]


def unigram_loss(train: Path, held_out: Path, tokenizer, seq_len: int, eval_sequences: int) -> float:
    """Held-out cross-entropy (nats/token) of a unigram model of ``train``: the loss of predicting every
    token by its frequency alone (add-one smoothed over the vocabulary), on exactly the held-out sequences
    and positions the training runs are evaluated on.

    Example:
        >>> round(unigram_loss(Path("train.txt"), Path("eval.txt"), tok, 128, 64), 3)
        5.291
    """
    from collections import Counter

    from hfgrow.data.loading import build_data, source_tokens
    from hfgrow.data.specs import open_domain, parse_specs

    train_spec, eval_spec = parse_specs([f"text={train}"])[0], parse_specs([f"text={held_out}"])[0]
    counts = Counter(source_tokens(open_domain(train_spec), tokenizer))
    total, vocab = sum(counts.values()), len(tokenizer)
    data = build_data([train_spec], tokenizer, seq_len, eval_sequences=eval_sequences, eval_domains=[eval_spec])
    predicted = [token for seq in data.eval["text"] for token in seq[1:]]  # the positions a causal LM's loss counts
    return -sum(math.log((counts[t] + 1) / (total + vocab)) for t in predicted) / len(predicted)


def collect(name: str, run_dir: Path) -> Run:
    """A finished run as a :class:`Run`: its held-out loss at every evaluation against the FLOPs spent so far
    (6·N·tokens per stage, N the parameters of each stage: a grown run counts its small-model phase).

    Example:
        >>> collect("grown-stack", Path("runs/grown-stack")).curve[0]
        (0.0, 6.25)
    """
    from hfgrow.train.runlog import read_run

    record = read_run(run_dir)
    return Run(name, int(record.n_params or 0), record.trained_tokens, record.flops(record.trained_tokens),
               [(record.flops(tokens), loss) for tokens, loss in record.eval_curve()])


def first_stage(name: str, run_dir: Path) -> Run:
    """The small-model stage of a run with growth, as its own :class:`Run` (up to the held-out loss it grew at)."""
    from hfgrow.train.runlog import read_run

    record = read_run(run_dir)
    stages = record.info.get("stages") or []
    if len(stages) < 2:
        raise HfgrowError(f"{run_dir} did not grow; it has no first stage to report as the base.")
    d = int(stages[1]["start_tokens"])
    curve = [(record.flops(tokens), r["eval_loss"]) for r in record.evals if r.get("stage", 0) == 0
             for tokens in [int(r["tokens"])]]
    return Run(name, int(stages[0]["n_params"]), d, record.flops(d), curve)


class Trainer:
    """Runs arms through ``python -m hfgrow.continue`` with the comparison's shared settings."""

    def __init__(self, models: Path, train: Path, held_out: Path, settings: dict[str, Any], quiet: bool):
        self.models, self.train, self.held_out, self.settings = models, train, held_out, settings
        self.quiet = quiet

    def run(self, arm: Arm, run_dir: Path, lr: float, evals: int) -> Path:
        """Train ``arm`` at max LR ``lr`` into ``run_dir``, evaluating ``evals`` times (and at step 0 and any growth)."""
        s = self.settings
        argv = [sys.executable, "-m", "hfgrow.continue", "--model", arm.start or str(self.models / arm.model),
                "--data", f"text={self.train}", "--eval-data", f"text={self.held_out}",
                "--eval-sequences", str(s["eval_sequences"]), "--output-dir", str(run_dir),
                "--seq-len", str(s["seq_len"]), "--batch-size", str(s["batch_size"]), "--max-steps", str(arm.steps),
                "--eval-steps", str(max(1, arm.steps // evals)), "--save-steps", str(arm.steps),
                "--keep-checkpoints", "1", "--lr", repr(lr), "--warmup-steps", str(max(1, arm.steps // 20)),
                "--seed", str(s["seed"])] + ([] if arm.export else ["--no-export"])
        if arm.grow:
            argv += ["--grow", arm.grow, "--grow-optimizer", arm.optimizer]
        if arm.top_k is not None:
            argv += ["--grow-top-k", str(arm.top_k)]
        result = subprocess.run(argv, stdout=subprocess.DEVNULL if self.quiet else None, stderr=subprocess.PIPE,
                                text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise HfgrowError(f"training run {run_dir.name} failed: {last}")
        return run_dir


def choose_lr(trainer: Trainer, arm: Arm, grid: tuple[float, ...], folder: Path,
              cache: dict[Arm, dict[float, float]], *, unigram: float | None = None,
              evals: int = 1) -> tuple[float, dict[float, float], int, Path | None]:
    """The rule every arm's LR follows: run the arm's first :data:`SWEEP_FRACTION` of steps (at least
    :data:`MIN_SWEEP_STEPS`, at most all) at each LR of ``grid`` (its own warmup and cosine over those steps);
    the LR whose held-out loss is lowest at the end wins (ties: the smaller LR).

    A cut run that has not learned says nothing about the LR: when no LR of the grid ends
    :data:`LEARNED_MARGIN` nats below ``unigram`` (the held-out loss of predicting token frequencies, which
    every run reaches first), the arm is run in full at every LR (``evals`` evaluations) and the best final
    loss wins; that run is then the arm's own. (At toy scale a target trained from scratch sits on the
    unigram plateau for its first ~20% of steps, and the LR that leaves it first is not the one that ends
    lowest: this is what keeps the scratch baseline from getting a poor LR.)

    Returns (chosen LR, held-out loss per LR, sweep steps, the chosen full run's folder or None).
    Arms whose cut runs are identical share them.
    """
    steps = min(arm.steps, max(MIN_SWEEP_STEPS, math.ceil(SWEEP_FRACTION * arm.steps)))
    cut = arm.sweep(steps)
    key = replace(cut, name="", optimizer=cut.optimizer if cut.grow else "fresh")
    if key not in cache:
        losses = {}
        for lr in grid:
            run_dir = trainer.run(cut, folder / f"{arm.name}-lr{lr:g}", lr, evals=1)
            losses[lr] = collect(arm.name, run_dir).final_loss
        cache[key] = losses
    losses, full = cache[key], None
    informative = unigram is None or any(loss <= unigram - LEARNED_MARGIN for loss in losses.values())
    if not informative and steps < arm.steps:
        steps, full = arm.steps, {}
        losses = {}
        for lr in grid:
            full[lr] = trainer.run(arm, folder / f"{arm.name}-full-lr{lr:g}", lr, evals=evals)
            losses[lr] = collect(arm.name, full[lr]).final_loss
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise HfgrowError(f"every LR of the sweep diverged for {arm.name}; give a smaller --lr.")
    chosen = min(finite, key=lambda lr: (finite[lr], lr))
    return chosen, losses, steps, (full[chosen] if full else None)


def plan_arms(n_target: int, n_base: int, *, scratch_tokens: int, base_fraction: float, tokens_per_step: int,
              factor: float, ops: tuple[str, ...], optimizers: tuple[str, ...], include_untrained: bool,
              include_small: bool) -> tuple[list[Arm], dict[str, Any]]:
    """The arms at equal FLOPs, in whole optimizer steps, and the budget they share.

    Example:
        >>> arms, budget = plan_arms(4000, 1000, scratch_tokens=20480, base_fraction=0.25, tokens_per_step=512,
        ...                          factor=4, ops=("stack",), optimizers=("fresh",), include_untrained=False,
        ...                          include_small=False)
        >>> [(a.name, a.steps, a.grow) for a in arms]
        [('grown-stack', 38, 'stack:4@5120'), ('scratch', 40, None)]
    """
    scratch_steps = max(1, scratch_tokens // tokens_per_step)
    budget = 6.0 * n_target * scratch_steps * tokens_per_step
    base_steps = max(1, round(scratch_tokens * base_fraction / tokens_per_step))
    grown_steps = max(1, round((budget - 6.0 * n_base * base_steps * tokens_per_step) / (6.0 * n_target * tokens_per_step)))
    d = base_steps * tokens_per_step
    arms = []
    for op in ops:
        for optimizer in optimizers:
            suffix = "" if optimizer == "fresh" else f"-{optimizer}"
            arms.append(Arm(f"grown-{op}{suffix}", "base", base_steps + grown_steps, f"{op}:{factor:g}@{d}", d,
                            optimizer))
    arms.append(Arm("scratch", "target", scratch_steps))
    if include_untrained:
        arms.append(Arm("grown-untrained", "base", scratch_steps, f"stack:{factor:g}@0", 0))
    if include_small:
        arms.append(Arm("small-alone", "base", max(1, round(budget / (6.0 * n_base * tokens_per_step)))))
    return arms, {"budget_flops": budget, "base_tokens": d, "grown_tokens": grown_steps * tokens_per_step,
                  "scratch_tokens": scratch_steps * tokens_per_step}


def compare(out_dir: str | Path, *, config: str | None = None, data: list[str] | None = None, factor: float = 4,
            ops: tuple[str, ...] = ("stack",), optimizers: tuple[str, ...] = ("fresh",),
            scratch_tokens: int | str | None = None, base_fraction: float | None = None, seq_len: int = 128,
            batch_size: int = 16, lr: float | None = None, lr_grid: tuple[float, ...] = LR_GRID, seed: int = 0,
            eval_points: int = 20, eval_sequences: int = 64, include_untrained: bool = True,
            include_small: bool = True, experts: int = UPCYCLE_EXPERTS, top_k: int = UPCYCLE_TOP_K,
            quiet: bool = False) -> dict[str, Any]:
    """Run the grow-vs-scratch experiment and write compare.json, compare.md and compare.png to ``out_dir``.

    ``scratch_tokens`` is a count (``3M``, ``1e6``, ``3000000``; default 1M); ``base_fraction`` (default 0.25)
    sets d as a fraction of it (the base is trained on d tokens; the grown model gets the FLOPs that are left).
    ``lr=None``: each arm's LR by the sweep rule (:func:`choose_lr`) over ``lr_grid``; a number: that LR for
    every arm. ``optimizers``: the ``--grow-optimizer`` modes to run every operator with (``carry`` arms are named
    ``grown-<op>-carry``). An operator that grows experts (``upcycle``) runs :func:`compare_upcycle` instead,
    with ``experts`` and ``top_k``.

    Example:
        >>> report = compare("runs/cmp", scratch_tokens="1M")
        >>> report["speedup"]["grown-stack"]
        0.31
    """
    from hfgrow.growth import registry
    from hfgrow.train.growth import parse_grow

    ops = tuple(dict.fromkeys(parse_grow(f"{registry.get(op).name}:2@0").op for op in ops))  # the --grow names
    expert_ops = [op for op in ops if "experts" in registry.get(op).names]
    if expert_ops:
        if len(ops) > 1:
            other = next(op for op in ops if op != expert_ops[0])
            raise HfgrowError(f"--op {expert_ops[0]} compares a dense model with its upcycled mixture of experts, "
                              f"an experiment of its own; run it apart from --op {other}.")
        return compare_upcycle(out_dir, config=config or UPCYCLE_PRESET, data=data, op=expert_ops[0],
                               experts=experts, top_k=top_k, dense_tokens=scratch_tokens or UPCYCLE_TOKENS,
                               base_fraction=UPCYCLE_BASE_FRACTION if base_fraction is None else base_fraction,
                               seq_len=seq_len, batch_size=batch_size, lr=lr, lr_grid=lr_grid, seed=seed,
                               eval_points=eval_points, eval_sequences=eval_sequences, quiet=quiet)
    config = config or "tiny"
    base_fraction = 0.25 if base_fraction is None else base_fraction
    out = _empty_folder(out_dir)
    scratch_tokens = parse_count(scratch_tokens or "1M", "token count for --max-tokens", "1M", minimum=1)
    if not 0 < base_fraction < 1:
        raise HfgrowError(f"--base-fraction must be between 0 and 1 (got {base_fraction}).")
    target = _config(config)
    layers = target.get("num_hidden_layers")
    if not isinstance(layers, int):
        raise HfgrowError("the target's config has no num_hidden_layers to grow to.")
    from hfgrow.growth.timing import check_factor

    base_layers = check_factor(layers, factor)
    base = dict(target, num_hidden_layers=base_layers)
    if "layer_types" in target:
        base["layer_types"] = target["layer_types"][:base_layers]
    target_count, base_count = _count_params(target), _count_params(base)
    n_target, n_base = target_count.active, base_count.active  # FLOPs: what a token uses (all of a dense model)
    tokens_per_step = _tokens_per_step(seq_len, batch_size)
    arms, budget = plan_arms(n_target, n_base, scratch_tokens=scratch_tokens, base_fraction=base_fraction,
                             tokens_per_step=tokens_per_step, factor=factor, ops=tuple(ops),
                             optimizers=tuple(optimizers), include_untrained=include_untrained,
                             include_small=include_small)

    settings = dict(seq_len=seq_len, batch_size=batch_size, seed=seed, eval_sequences=eval_sequences)
    trainer, unigram = _prepare(out, data, {"target": target, "base": base}, settings, quiet)
    say = _say(quiet)
    say(f"target {n_target:,} params, base {n_base:,}; budget {budget['budget_flops']:.3g} FLOPs = "
        f"{budget['scratch_tokens']:,} target tokens")

    runs: dict[str, Run] = {}
    chosen, sweeps, cache = {}, {}, {}
    for arm in arms:
        if lr is None:
            chosen[arm.name], losses, steps, ready = choose_lr(trainer, arm, tuple(lr_grid), out / "sweep", cache,
                                                                unigram=unigram, evals=eval_points)
            sweeps[arm.name] = {"steps": steps, "held_out_loss": {f"{k:g}": v for k, v in losses.items()},
                                "full_length": ready is not None}
        else:
            chosen[arm.name], ready = lr, None
        say(f"{arm.name}: {arm.steps * tokens_per_step:,} tokens" + (f", --grow {arm.grow}" if arm.grow else "")
            + f", lr {chosen[arm.name]:g}" + (" (the sweep's full run)" if ready else ""))
        run_dir = ready or trainer.run(arm, out / "runs" / arm.name, chosen[arm.name], eval_points)
        runs[arm.name] = collect(arm.name, run_dir)
        if arm.grow and "base" not in runs and arm.grow_tokens:
            runs = {"base": first_stage("base", run_dir), **runs}

    lr_rule = ({"rule": f"fixed: --lr {lr:g} for every arm"} if lr is not None else
               {"rule": f"per arm, the LR of the grid with the lowest held-out loss after the arm's first "
                        f"{SWEEP_FRACTION:.0%} of steps (at least {MIN_SWEEP_STEPS}), run on its own; when no LR "
                        f"has learned by then ({LEARNED_MARGIN:g} nats below the unigram model), the lowest final "
                        "loss of the whole arm run at each LR",
                "grid": list(lr_grid), "sweeps": sweeps})
    setup = dict(config=config, factor=factor, ops=list(ops), optimizers=list(optimizers),
                 target_params=target_count.total, base_params=base_count.total, seq_len=seq_len,
                 batch_size=batch_size, seed=seed, eval_points=eval_points, eval_sequences=eval_sequences,
                 lr=dict(lr_rule, chosen=chosen), **budget)
    report = make_report(runs, setup, unigram)
    atomic_write(out / "compare.json", report)
    atomic_write(out / "compare.md", markdown(report))
    plot(runs, out / "compare.png", report)
    return report


# --------------------------------------------------------------------------- dense vs upcycled (--op upcycle)


def plan_upcycle_arms(n_dense: int, n_active: int, *, dense_tokens: int, base_fraction: float, tokens_per_step: int,
                      op: str, experts: int, top_k: int) -> tuple[list[Arm], dict[str, Any]]:
    """The dense model's pre-training and the two arms that continue it at equal active FLOPs, in whole steps.

    The budget is the dense arm's: C = 6·N_dense·D (D = ``dense_tokens`` in whole steps). The upcycled arm spends
    the same C at 6·N_active FLOPs per token (N_active: the parameters a token uses, top-k of the E experts), so it
    trains on C / (6·N_active) tokens, rounded to whole steps: fewer tokens when k experts cost more than the MLP.
    The upcycled arm grows at step 0 of its run (``--grow OP:E@0``): its run logs the dense model's held-out loss
    and the upcycled one's at the same point, and counts its FLOPs by active parameters.

    Example:
        >>> arms, budget = plan_upcycle_arms(1000, 1500, dense_tokens=20480, base_fraction=1.0, tokens_per_step=512,
        ...                                  op="upcycle", experts=4, top_k=2)
        >>> [(a.name, a.steps, a.grow) for a in arms]
        [('base', 40, None), ('dense', 40, None), ('upcycled', 27, 'upcycle:4@0')]
    """
    dense_steps = max(1, dense_tokens // tokens_per_step)
    budget = 6.0 * n_dense * dense_steps * tokens_per_step
    moe_steps = max(1, round(budget / (6.0 * n_active * tokens_per_step)))
    base_steps = max(1, round(dense_tokens * base_fraction / tokens_per_step))
    arms = [Arm("base", "dense", base_steps, export=True), Arm("dense", "dense", dense_steps),
            Arm("upcycled", "dense", moe_steps, f"{op}:{experts}@0", 0, top_k=top_k)]
    return arms, {"budget_flops": budget, "base_tokens": base_steps * tokens_per_step,
                  "dense_tokens": dense_steps * tokens_per_step, "upcycled_tokens": moe_steps * tokens_per_step}


def compare_upcycle(out_dir: str | Path, *, config: str = UPCYCLE_PRESET, data: list[str] | None = None,
                    op: str = "upcycle", experts: int = UPCYCLE_EXPERTS, top_k: int = UPCYCLE_TOP_K,
                    dense_tokens: int | str = UPCYCLE_TOKENS, base_fraction: float = UPCYCLE_BASE_FRACTION,
                    seq_len: int = 128, batch_size: int = 16, lr: float | None = None,
                    lr_grid: tuple[float, ...] = LR_GRID, seed: int = 0, eval_points: int = 20,
                    eval_sequences: int = 64, quiet: bool = False) -> dict[str, Any]:
    """Dense continued pre-training vs the upcycled mixture of experts, at equal active training FLOPs.

    ``config`` is the dense model (a preset or a config.json; default the 2-layer ``tiny-dense``). It is
    pre-trained from random initialisation on ``base_fraction`` x ``dense_tokens`` tokens (the ``base`` run), then
    continued twice from that checkpoint with a fresh optimizer: ``dense`` for ``dense_tokens`` tokens, and
    ``upcycled``, every MLP turned into ``experts`` experts with top-``top_k`` routing by the in-run operator
    (``--grow OP:E@0``: sparse upcycling into the family's MoE sibling, the load-balancing loss on), for the same
    active FLOPs (:func:`plan_upcycle_arms`).

    Learning rate: the base run's by the sweep rule (:func:`choose_lr`), and both continuations at that LR, as
    Sparse Upcycling (Komatsuzaki et al. 2023) continues with the dense model's hyperparameters; ``lr`` fixes all.
    Writes compare.json, compare.md and compare.png (held-out loss vs active FLOPs after the dense checkpoint).

    Example:
        >>> report = compare_upcycle("runs/upcycle")
        >>> report["ratio"]["final_loss"]            # the upcycled arm's final held-out loss / the dense arm's
        0.97
    """
    from hfgrow.growth import registry
    from hfgrow.train.growth import grow_spec
    from hfgrow.train.runlog import read_run

    out = _empty_folder(out_dir)
    dense_tokens = parse_count(dense_tokens, "token count for --max-tokens", "1M", minimum=1)
    if not base_fraction > 0:
        raise HfgrowError(f"--base-fraction must be above 0 (got {base_fraction}): the dense model is pre-trained "
                          "on that fraction of --max-tokens before it is upcycled.")
    dense = _config(config)
    spec = grow_spec(registry.get(op).name, experts, seed, top_k=top_k)  # checks E and k, as --grow does
    moe = spec.grown_config(dense)  # refuses a family with no MoE sibling, as the run would
    dense_count, moe_count = _count_params(dense), _count_params(moe)
    tokens_per_step = _tokens_per_step(seq_len, batch_size)
    arms, budget = plan_upcycle_arms(dense_count.active, moe_count.active, dense_tokens=dense_tokens,
                                     base_fraction=base_fraction, tokens_per_step=tokens_per_step, op=op,
                                     experts=experts, top_k=top_k)
    base_arm, *continued = arms

    settings = dict(seq_len=seq_len, batch_size=batch_size, seed=seed, eval_sequences=eval_sequences)
    trainer, unigram = _prepare(out, data, {"dense": dense}, settings, quiet)
    say = _say(quiet)
    say(f"dense {dense_count.total:,} params; upcycled {moe_count.total:,} ({moe_count.active:,} active, {experts} "
        f"experts, top-{top_k}); budget {budget['budget_flops']:.3g} active FLOPs = {budget['dense_tokens']:,} dense "
        f"tokens or {budget['upcycled_tokens']:,} upcycled")

    sweep = None
    if lr is None:
        chosen, losses, steps, ready = choose_lr(trainer, base_arm, tuple(lr_grid), out / "sweep", {},
                                                 unigram=unigram, evals=eval_points)
        sweep = {"steps": steps, "held_out_loss": {f"{k:g}": v for k, v in losses.items()},
                 "full_length": ready is not None}
    else:
        chosen, ready = lr, None
    say(f"base: the dense model, {base_arm.steps * tokens_per_step:,} tokens from random init, lr {chosen:g}")
    base_dir = ready or trainer.run(base_arm, out / "runs" / "base", chosen, eval_points)
    runs = {"base": collect("base", base_dir)}
    for arm in continued:
        arm = replace(arm, start=str(base_dir / "final"))
        say(f"{arm.name}: {arm.steps * tokens_per_step:,} tokens from the base's checkpoint"
            + (f", --grow {arm.grow} --grow-top-k {arm.top_k}" if arm.grow else "") + f", lr {chosen:g}")
        runs[arm.name] = collect(arm.name, trainer.run(arm, out / "runs" / arm.name, chosen, eval_points))

    moe_run = read_run(out / "runs" / "upcycled")
    (growth,) = moe_run.growths
    last = moe_run.train[-1] if moe_run.train else {}
    lr_rule = ({"rule": f"fixed: --lr {lr:g} for every run"} if lr is not None else
               {"rule": "the base run's LR by compare's sweep rule (the grid's lowest held-out loss after its first "
                        f"{SWEEP_FRACTION:.0%} of steps, at least {MIN_SWEEP_STEPS}; the whole run at each LR when "
                        f"none has learned by then), and both continuations at that LR",
                "grid": list(lr_grid), "sweep": sweep})
    setup = dict(kind="upcycle", config=config, op=op, experts=experts, top_k=top_k, target=moe.get("model_type"),
                 dense_params=dense_count.total, upcycled_params=moe_count.total,
                 upcycled_active_params=moe_count.active, seq_len=seq_len, batch_size=batch_size, seed=seed,
                 eval_points=eval_points, eval_sequences=eval_sequences, base_fraction=base_fraction,
                 lr=dict(lr_rule, chosen=chosen),
                 flops_rule="C = 6·N_dense·D for the dense arm; the upcycled arm trains C / (6·N_active) tokens "
                            "(whole steps), N_active = the parameters a token uses (top-k of the experts)", **budget)
    report = upcycle_report(runs, setup, unigram, growth_loss=growth.get("eval_loss_after"),
                            expert_load=last.get("expert_load"), aux_loss=last.get("aux_loss"))
    atomic_write(out / "compare.json", report)
    atomic_write(out / "compare.md", markdown(report))
    plot_upcycle(runs, out / "compare.png", report)
    return report


def upcycle_report(runs: dict[str, Run], setup: dict[str, Any], unigram: float, *, growth_loss: float | None,
                   expert_load: list[float] | None = None, aux_loss: float | None = None) -> dict[str, Any]:
    """Final losses and FLOPs of the base, dense and upcycled runs; the upcycled arm against the dense arm: its final
    loss as a ratio and a difference, the share of the dense arm's FLOPs at which it reaches the dense arm's final
    loss (and sp = FLOPs_dense / FLOPs_upcycled - 1 there, as compare defines a speedup), withheld when the dense arm
    has not learned (:func:`baseline_check`); the step-0 losses of both arms (``growth_loss``: the upcycled model's
    held-out loss at its growth)."""
    dense, moe = runs["dense"], runs["upcycled"]
    baseline = baseline_check(dense, unigram)
    reached = flops_to_reach(moe.curve, dense.final_loss) if baseline["learned"] else None
    return {
        "kind": "upcycle",
        "setup": setup,
        "final_loss": {name: run.final_loss for name, run in runs.items()},
        "total_flops": {name: run.total_flops for name, run in runs.items()},
        "step0_loss": {"dense": dense.curve[0][1] if dense.curve else math.nan, "upcycled": growth_loss},
        "ratio": {"final_loss": moe.final_loss / dense.final_loss, "loss_difference": moe.final_loss - dense.final_loss,
                  "flops_to_dense_final_loss": None if reached is None else reached / dense.total_flops},
        "speedup": None if reached is None or reached == 0 else dense.total_flops / reached - 1.0,
        "baseline": baseline,
        "expert_load": expert_load,
        "aux_loss": aux_loss,
        "curves": {name: run.curve for name, run in runs.items()},
        "runs": {name: {k: v for k, v in asdict(run).items() if k != "curve"} for name, run in runs.items()},
    }


def markdown_upcycle(report: dict[str, Any]) -> str:
    setup, ratio, baseline = report["setup"], report["ratio"], report["baseline"]
    reach = ratio["flops_to_dense_final_loss"]
    if not baseline["learned"]:
        reach_text = "withheld (the dense arm did not learn)"
    elif reach is None:
        reach_text = "never reaches the dense arm's final loss"
    else:
        reach_text = f"reaches the dense arm's final loss at {reach:.0%} of its FLOPs (sp {report['speedup']:+.1%})"
    lines = [
        f"Dense {setup['dense_params']:,} params; upcycled ({setup['target']}, {setup['experts']} experts, "
        f"top-{setup['top_k']}) {setup['upcycled_params']:,} params, {setup['upcycled_active_params']:,} active per "
        f"token. Base: the dense model pre-trained on {setup['base_tokens']:,} tokens; both arms continue it with "
        f"{setup['budget_flops']:.3g} active FLOPs ({setup['flops_rule']}): dense {setup['dense_tokens']:,} tokens, "
        f"upcycled {setup['upcycled_tokens']:,}.",
        f"Learning rate: {setup['lr']['rule']}; chosen: {setup['lr']['chosen']:g}.",
        "",
        "| run | final held-out loss | active FLOPs | vs dense |",
        "|---|---|---|---|",
        f"| base (dense pre-training) | {report['final_loss']['base']:.4f} | {report['total_flops']['base']:.3g} "
        "| — |",
        f"| dense (continued) | {report['final_loss']['dense']:.4f} | {report['total_flops']['dense']:.3g} | — |",
        f"| upcycled | {report['final_loss']['upcycled']:.4f} | {report['total_flops']['upcycled']:.3g} | "
        f"loss x{ratio['final_loss']:.4f} ({ratio['loss_difference']:+.4f} nats); {reach_text} |",
        "",
        f"Step 0 (the dense checkpoint): dense {report['step0_loss']['dense']:.4f}, upcycled "
        f"{report['step0_loss']['upcycled']:.4f} held-out loss.",
    ]
    if report.get("expert_load"):
        lines.append("Expert load at the last step (share of routed token slots, 1/E when balanced): "
                     + ", ".join(f"{x:.3f}" for x in report["expert_load"])
                     + (f"; load-balancing loss {report['aux_loss']:.4g}." if report.get("aux_loss") is not None
                        else "."))
    lines += ["", f"Baseline: unigram model {baseline['unigram_loss']:.4f}, dense arm "
                  f"{baseline['scratch_final_loss']:.4f}"
                  + (": the dense arm has learned." if baseline["learned"] else
                     ": the dense arm has NOT learned, so no FLOPs ratio is reported."), ""]
    return "\n".join(lines)


def plot_upcycle(runs: dict[str, Run], path: Path, report: dict[str, Any]) -> Path:
    """Held-out loss vs active FLOPs after the dense checkpoint, dense and upcycled arms (both start at its loss)."""
    from hfgrow.train.runlog import Curve, plot_curves

    setup, reach = report["setup"], report["ratio"]["flops_to_dense_final_loss"]
    label = {"dense": "dense, continued", "upcycled": f"upcycled: {setup['experts']} experts, top-{setup['top_k']}"}
    curves = [Curve(f"{label[name]} ({runs[name].final_loss:.3f})", runs[name].curve, width=1.6)
              for name in ("dense", "upcycled")]
    title = "dense vs upcycled at equal active FLOPs" + (
        f" — upcycled reaches dense's loss at {reach:.0%} of its FLOPs" if reach is not None else "")
    return plot_curves(curves, path, xlabel="active training FLOPs after the dense checkpoint (6 · active params · "
                                            "tokens)", title=title, ylabel="held-out loss (nats/token)")


def baseline_check(scratch: Run, unigram: float) -> dict[str, Any]:
    """Has the scratch arm learned? Its final held-out loss must be at least :data:`LEARNED_MARGIN` nats below
    the unigram model's held-out loss (token frequencies: what a model learns first, without using context).

    Example:
        >>> baseline_check(Run("scratch", 10, 100, 6000.0, [(0, 6.2), (6000.0, 5.3)]), 5.31)["learned"]
        False
    """
    learned = scratch.final_loss <= unigram - LEARNED_MARGIN
    return {"learned": bool(learned), "unigram_loss": unigram, "scratch_final_loss": scratch.final_loss,
            "rule": f"scratch's final held-out loss at least {LEARNED_MARGIN:g} nats below the held-out loss of a "
                    "unigram model of the training data"}


def make_report(runs: dict[str, Run], setup: dict[str, Any], unigram: float) -> dict[str, Any]:
    """Final losses, FLOPs, speedups vs scratch (withheld when scratch has not learned), the best run and the
    regime (does the target beat the small model trained alone on the same FLOPs?) of a set of runs that
    includes ``scratch``; ``unigram`` is the held-out loss of a unigram model (:func:`unigram_loss`)."""
    scratch = runs["scratch"]
    baseline = baseline_check(scratch, unigram)
    grown = {name: run for name, run in runs.items() if name.startswith("grown")}
    speedups = {name: speedup(scratch, run) for name, run in grown.items()} if baseline["learned"] else {}
    best = min(runs.values(), key=lambda r: r.final_loss)
    grown_best = min((r.final_loss for n, r in grown.items() if n != "grown-untrained"), default=math.nan)
    if "small-alone" not in runs:
        regime = ("regime not measured: the small model trained alone was skipped (--no-small), so whether the "
                  "target beats it on these FLOPs is unknown.")
    elif runs["small-alone"].final_loss < min(scratch.final_loss, grown_best):
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
        "baseline": baseline,
        "best_run": best.name,
        "regime": regime,
        "curves": {name: run.curve for name, run in runs.items()},
        "runs": {name: {k: v for k, v in asdict(run).items() if k != "curve"} for name, run in runs.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    if report.get("kind") == "upcycle":
        return markdown_upcycle(report)
    setup, baseline = report["setup"], report["baseline"]
    lines = [
        f"Target {setup['target_params']:,} params, base {setup['base_params']:,} (g = {setup['factor']:g}); "
        f"budget {setup['budget_flops']:.3g} FLOPs ({setup['scratch_tokens']:,} target tokens); "
        f"base trained on d = {setup['base_tokens']:,} tokens.",
        f"Learning rate: {setup['lr']['rule']}; chosen: "
        + ", ".join(f"{name} {value:g}" for name, value in setup["lr"]["chosen"].items()) + ".",
        "",
        "| run | final held-out loss | FLOPs | speedup vs scratch |",
        "|---|---|---|---|",
    ]
    for name, loss in report["final_loss"].items():
        if not name.startswith("grown"):
            shown = "—"
        elif not baseline["learned"]:
            shown = "withheld (scratch did not learn)"
        else:
            sp = report["speedup"].get(name)
            shown = "never reaches scratch's loss" if sp is None else f"{sp:+.1%}"
        lines.append(f"| {name} | {loss:.4f} | {report['total_flops'][name]:.3g} | {shown} |")
    lines += ["", f"Baseline: unigram model {baseline['unigram_loss']:.4f}, scratch {baseline['scratch_final_loss']:.4f}: "
                  + ("scratch has learned" if baseline["learned"] else
                     "scratch has NOT learned, so no speedup is reported")
                  + f" (test: {baseline['rule']}).",
              "", f"Regime: {report['regime']}", ""]
    return "\n".join(lines)


def plot(runs: dict[str, Run], path: Path, report: dict[str, Any]) -> Path:
    """Held-out loss vs FLOPs of every run (the small model's runs dashed), through the project's loss plot."""
    from hfgrow.train.runlog import Curve, plot_curves

    curves = [Curve(f"{name} ({run.final_loss:.3f})", run.curve, style="--" if name in ("base", "small-alone") else "-",
                    width=1.6) for name, run in runs.items()]
    sp = report["speedup"].get("grown-stack")
    title = "grow vs scratch at equal FLOPs" + (f" — Gstack speedup {sp:+.0%}" if sp is not None else "")
    return plot_curves(curves, path, xlabel="training FLOPs (base phase included for grown runs)", title=title,
                       ylabel="held-out loss (nats/token)")
