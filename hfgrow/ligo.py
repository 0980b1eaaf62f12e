"""The learning phase of G↑learn (LiGO, depth): fit the growth coefficients D on real text.

Only D is trained; the source weights stay frozen. Each step builds the grown model's block
weights as ``W'_l = Σ_j D[l, j]·W_j`` (one einsum per weight kind), runs the grown model
through :func:`torch.func.functional_call` on a batch, and back-propagates the language-modeling
loss into D. At the end D goes into a plan (:mod:`hfgrow.ops.learn`) that the executor
streams to disk, and into the recipe so a replay rebuilds the same model without training.

Memory: the frozen source model (float32) + the grown model's block weights, activations and
their gradients for one batch — about (1 + 2·N/L)·4 bytes per source parameter plus activations.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hfgrow.errors import HfgrowError
from hfgrow.layout import Layout, _layer_modules, _quiet_transformers, context_length, hf_config_from_dict
from hfgrow.ops.learn import Coefficients, initial_coefficients


@dataclass
class LearnReport:
    coefficients: Coefficients
    losses: list[float] = field(default_factory=list)  # training loss per step
    eval_before: float = math.nan  # held-out loss at step 0 (= Gstack)
    eval_after: float = math.nan


def _block_list_name(model, num_layers: int, hint: str) -> tuple[str, Any]:
    blocks = _layer_modules(model, num_layers, hint)
    if blocks is None:
        raise HfgrowError("could not find the decoder block list in the model; --op learn cannot run.")
    for name, module in model.named_modules():
        if module is blocks:
            return name, blocks
    raise AssertionError("unreachable")


def _sequences(folder: Path, data: list[str], seq_len: int) -> torch.Tensor:
    from transformers import AutoTokenizer

    from hfgrow.evaluate import read_documents, token_stream

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        raise HfgrowError(f"{folder} has no tokenizer; --op learn needs one to read --data.") from None
    documents = [doc for path in data for doc in read_documents(path)]
    ids = token_stream(tokenizer, documents)
    count = len(ids) // seq_len
    if count < 2:
        raise HfgrowError(
            f"--data has {len(ids)} tokens, fewer than two sequences of --seq-len {seq_len}; give more text."
        )
    return torch.tensor(ids[: count * seq_len]).view(count, seq_len)


def learn_coefficients(folder: Path, layout: Layout, grown_config: dict, layer_map: list[int], data: list[str], *,
                       steps: int = 100, lr: float = 1e-3, seq_len: int = 256, batch_size: int = 4, seed: int = 0,
                       progress: bool = True, eval_sequences: int = 64) -> LearnReport:
    """Train LiGO depth coefficients D for ``layer_map`` on ``data``; D starts as the stacking map.

    Example:
        >>> report = learn_coefficients(Path("small"), layout, plan.config, [0, 1, 0, 1], ["corpus.txt"], steps=50)
        >>> report.eval_after < report.eval_before
        True
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    if steps < 0:
        raise HfgrowError(f"--learn-steps must be 0 or more, got {steps}.")
    torch.manual_seed(seed)
    with _quiet_transformers():
        source = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with init_empty_weights():
            grown = AutoModelForCausalLM.from_config(hf_config_from_dict(grown_config)).eval()
    source.requires_grad_(False)
    max_len = context_length(source.config)
    if max_len and seq_len > max_len:
        raise HfgrowError(f"--seq-len {seq_len} is longer than the model's context ({max_len} tokens).")

    hint = layout.prefix.rstrip(".").split(".")[-1]
    src_name, src_blocks = _block_list_name(source, layout.num_layers, hint)
    out_name, _ = _block_list_name(grown, len(layer_map), hint)

    # weight kinds in memory; they must be the checkpoint's names to write D back out
    members: dict[str, list[int]] = {}
    for index, block in enumerate(src_blocks):
        for rest, _ in block.named_parameters():
            members.setdefault(rest, []).append(index)
    disk_names = {rest for names in layout.layers for rest in names}
    unknown = sorted(set(members) - disk_names)
    if unknown:
        raise HfgrowError(
            f"{layout.model_type} stores block weights differently in memory ('{unknown[0]}') than on disk; "
            "--op learn supports models whose in-memory and checkpoint names agree."
        )
    stacked = {rest: torch.stack([src_blocks[j].get_parameter(rest) for j in idx]) for rest, idx in members.items()}
    coefficients: dict[str, torch.nn.Parameter] = {}
    for rest, idx in members.items():
        init = torch.zeros(len(layer_map), len(idx))
        for position, src in enumerate(layer_map):
            if src in idx:
                init[position, idx.index(src)] = 1.0
        coefficients[rest] = torch.nn.Parameter(init)
    present = {rest: [p for p, src in enumerate(layer_map) if src in idx] for rest, idx in members.items()}

    block_prefix = src_name + "."
    globals_ = {name: value for name, value in source.state_dict().items() if not name.startswith(block_prefix)}

    def grown_params() -> dict[str, torch.Tensor]:
        params = dict(globals_)
        for rest, d in coefficients.items():
            weights = torch.einsum("nl,l...->n...", d, stacked[rest])
            for position in present[rest]:
                params[f"{out_name}.{position}.{rest}"] = weights[position]
        return params

    def loss_on(batch: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(grown, grown_params(), (batch,), {"labels": batch, "use_cache": False}).loss

    sequences = _sequences(folder, data, seq_len)
    rng = random.Random(seed)
    order = list(range(len(sequences)))
    rng.shuffle(order)
    n_eval = min(max(1, len(order) // 10), eval_sequences)  # held-out: a tenth of the data, capped
    eval_set, train_set = sequences[order[:n_eval]], sequences[order[n_eval:]]

    def evaluate() -> float:
        if not len(eval_set):
            return math.nan
        with torch.no_grad():
            return sum(loss_on(eval_set[i: i + batch_size]).item() * len(eval_set[i: i + batch_size])
                       for i in range(0, len(eval_set), batch_size)) / len(eval_set)

    report = LearnReport(coefficients={})
    report.eval_before = evaluate()
    optimizer = torch.optim.AdamW(coefficients.values(), lr=lr, weight_decay=0.0)
    bar = None
    if progress and steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="learning growth (LiGO)", leave=False)
    for step in range(steps):
        picks = [rng.randrange(len(train_set)) for _ in range(batch_size)]
        loss = loss_on(train_set[picks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        report.losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    report.eval_after = evaluate()

    # rows of layers that lack a kind (dense vs MoE) stay zero; layout order of members is the same
    report.coefficients = {rest: d.detach().tolist() for rest, d in coefficients.items()}
    stacking = initial_coefficients(layout, layer_map)
    for rest in disk_names - set(members):  # buffers stored in the checkpoint: plain stacking copies
        report.coefficients[rest] = stacking[rest]
    return report


def learn(src: str, out: str | Path | None, *, data: list[str] | None = None, factor: float | None = None,
          layers: int | None = None, pattern: str | None = None, order: str = "stack", learn_steps: int = 100,
          learn_lr: float = 1e-3, seq_len: int = 256, batch_size: int = 4, seed: int = 0,
          coefficients: Coefficients | None = None, dtype: str = "keep", revision: str | None = None, token=None,
          max_shard_size: int | str = "5GB", dry_run: bool = False, overwrite: bool = False, quiet: bool = False,
          push_to: str | None = None):
    """G↑learn: grow depth with LiGO coefficients learned on ``data`` (or given, for a replay).

    Example:
        >>> result = learn("./small", "./big", data=["corpus.txt"], factor=4, learn_steps=100)
        >>> result.plan.notes[0]
        'LiGO: 100 steps on corpus.txt; held-out loss 3.912 at Gstack init -> 3.701 learned'
    """
    from hfgrow.grow import depth_map, grow_model, resolve_dtype
    from hfgrow.ops.depth import stack_plan
    from hfgrow.ops.learn import learned_plan

    out_dtype = resolve_dtype(dtype)
    if coefficients is None and not dry_run and not data:
        raise HfgrowError("--op learn needs --data: text to learn the growth coefficients on.")

    def make_plan(layout, checkpoint):
        layer_map = depth_map(layout, factor, layers, pattern, order)
        notes = []
        learned = coefficients
        if learned is None and dry_run:
            learned = initial_coefficients(layout, layer_map)
            notes.append(f"dry run: D shown at its initial value (Gstack); {learn_steps} learning steps would follow")
        elif learned is None:
            base = stack_plan(layout, checkpoint.tensors, layer_map, out_dtype)
            report = learn_coefficients(checkpoint.folder, layout, base.config, layer_map, list(data), steps=learn_steps,
                                        lr=learn_lr, seq_len=seq_len, batch_size=batch_size, seed=seed,
                                        progress=not quiet)
            learned = report.coefficients
            notes.append(f"LiGO: {learn_steps} steps on {', '.join(map(str, data))}; held-out loss "
                         f"{report.eval_before:.4f} at Gstack init -> {report.eval_after:.4f} learned")
        else:
            missing = sorted(set(initial_coefficients(layout, layer_map)) - set(learned))
            if missing or any(len(rows) != len(layer_map) for rows in learned.values()):
                raise HfgrowError("the recipe's LiGO coefficients do not fit this source model and layer map.")
        plan = learned_plan(layout, checkpoint.tensors, layer_map, learned, out_dtype)
        plan.notes.extend(notes)
        return plan

    options = {"op": "learn", "pattern": None, "data": ",".join(map(str, data or [])) or None,
               "learn_steps": learn_steps, "learn_lr": learn_lr, "seq_len": seq_len, "batch_size": batch_size,
               "seed": seed, "dtype": None if out_dtype is None else dtype}
    return grow_model(src, out, make_plan, command_name="grow", options=options, revision=revision, token=token,
                      max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                      push_to=push_to)
