"""How LiGO's learning rate was chosen: a sweep of --learn-lr on briefly pretrained Llamas of two widths.

Why a sweep over widths: LiGO trains the depth coefficients D (one per grown layer, source layer and weight
kind: O(1) entries, a few per grown weight) and the width matrices B ([new, old] per space). Adam moves every
entry by about the LR per step; a grown unit sums ``old`` entries of its row of B, so with one LR for all,
the relative change of a grown weight grows with the model's width. A default picked on a small model then
blows up a real one (issue 15: a bf16 model, default 1e-3, held-out loss 8.11 -> 13.72 in 5 steps). With
B's LR divided by its fan-in (``old``), the relative step no longer depends on the width, so the optimum
found here should carry over to wider models. The sweep checks that on two widths.

Three studies, each on a Llama (4 layers, head_dim 16, GQA 2:1, vocab 512) pretrained for --pretrain-steps
steps on Python's pydoc topics, as a float32 and as a bf16 checkpoint:

  depth   x2 layers (Gstack start), D learned
  width   x2 hidden size (direct start: function-preserving), B learned, one LR for all ("same", the old
          rule) vs B's LR divided by its fan-in ("fan-in", the new rule)
  both    x2 layers and x2 hidden with the chosen defaults vs the old default (1e-3, "same")

Every run starts from the same operator and sees the same batches; the figure is the held-out loss (the
fit's own held-out split) after --steps steps and the best seen, minus the step-0 loss (negative: better).

A fourth study (``--study deep``) re-chose the rule for D on deep sources (issue 25: at 3e-2 a 30-layer
SmolLM2 grown to 60 got worse over 20 steps, and Gemma 3 after one): a row of D mixes the L source layers
of one weight kind, so Adam moves a grown weight by up to L·lr per step. On a Llama of --deep-layers
layers (hidden --deep-hidden) pretrained --deep-pretrain-steps steps, and on a 2-layer one, depth x2 (Gstack
start) is fitted for --deep-steps steps (the `--learn-steps 20` of the issue) with D at lr ("same", the
old rule) and at lr / L ("fan-in", the new one); the figure is the held-out loss after those steps minus
step 0's, i.e. minus Gstack's.

Usage:
    python bench/bench_ligo_lr.py [--study shallow|deep|all] [--widths 64,256] [--steps 30] [--out bench/ligo_lr.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

#: LR grids (half-decades around each arm's optimum; "same" needs lower LRs as the width grows)
GRIDS = {
    "depth": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "width-same": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3],
    "width-fan-in": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "both-fan-in": [3e-3, 1e-2, 3e-2],
    "deep-same": [1e-3, 3e-3, 1e-2, 3e-2],
    "deep-fan-in": [1e-2, 3e-2, 1e-1, 3e-1, 1.0],
}


def make_source(root: Path, hidden: int, layers: int, docs: list[str], steps: int,
                batch_size: int = 16) -> dict[str, Path]:
    """A pretrained Llama of ``hidden`` width, saved as float32 and as bf16."""
    from transformers import AutoModelForCausalLM

    from hfgrow.eval.tiny import make_model, make_tokenizer, pretrain_tiny, tiny_llama_config

    f32 = root / f"h{hidden}-float32"
    tokenizer = make_tokenizer(f32, text="\n".join(docs[:60]), vocab_size=512)
    config = tiny_llama_config(layers=layers, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 16 * 16,
                               num_attention_heads=hidden // 16, num_key_value_heads=hidden // 32,
                               vocab_size=512, max_position_embeddings=256)
    make_model(f32, config, tokenizer=False)
    loss = pretrain_tiny(f32, docs, steps=steps, seq_len=64, batch_size=batch_size, lr=3e-3)
    bf16 = root / f"h{hidden}-bfloat16"
    model = AutoModelForCausalLM.from_pretrained(f32, dtype=torch.float32).to(torch.bfloat16)
    model.save_pretrained(bf16)
    tokenizer.save_pretrained(bf16)
    print(f"source h{hidden}: {model.num_parameters():,} params, last pretraining loss {loss:.3f}", flush=True)
    return {"float32": f32, "bfloat16": bf16}


def run(folder: Path, sequences: torch.Tensor, mode: str, lr: float, fan_in: bool, steps: int, batch: int,
        width_scale: float = 1.0, evals: int = 1, eval_sequences: int = 32, depth_fan_in: bool = False) -> dict:
    """One fit on ``sequences`` (the text tokenized once); returns the held-out losses it saw (step -> loss) and
    its median step time."""
    from hfgrow.arch.layout import open_model
    from hfgrow.arch.roles import derive_roles
    from hfgrow.growth.ligo.fit import FitSettings, GrownModel, fit, split_sequences
    from hfgrow.growth.ops.depth import stack_plan
    from hfgrow.growth.ops.learn import WidthExpansion
    from hfgrow.growth.ops.width import resolve_sizes, widen_config

    torch.manual_seed(0)
    checkpoint, layout = open_model(folder)
    depth, width = mode in ("depth", "both"), mode in ("width", "both")
    layer_map = [i % layout.num_layers for i in range(layout.num_layers * (2 if depth else 1))]
    config = stack_plan(layout, checkpoint.tensors, layer_map).config
    roles = expansion = None
    if width:
        roles = derive_roles(layout, checkpoint.tensors)
        sizes = resolve_sizes(roles, hidden_size=2 * roles.hidden_size)
        expansion = WidthExpansion(roles, sizes, init="direct", seed=0)
        config = widen_config(config, roles, sizes, "learn").config
    settings = FitSettings(steps=steps, lr=lr, seq_len=sequences.shape[1], batch_size=batch, seed=0, evals=evals,
                           eval_sequences=eval_sequences, fan_in_scaling=fan_in, width_lr_scale=width_scale,
                           depth_fan_in=depth_fan_in)
    eval_set, train_set = split_sequences(sequences, 0, settings.eval_sequences)
    model = GrownModel.build(checkpoint, layout, config, layer_map, roles=roles, expansion=expansion,
                             learn_depth=depth)
    try:
        report = fit(model, train_set, eval_set, settings, progress=False)
    finally:
        model.close()
        checkpoint.close()
    times = sorted(report.step_seconds)
    return {"evals": report.evals, "s_per_step": times[len(times) // 2] if times else 0.0}


def summary(result: dict) -> tuple[float, float]:
    """(final - step 0, best - step 0) held-out loss; NaN/inf count as +inf (diverged)."""
    evals = result["evals"]
    start, final = evals[0], evals[max(evals)]
    finite = [v for v in evals.values() if math.isfinite(v)]
    delta = final - start if math.isfinite(final) else math.inf
    return delta, min(finite) - start


def deep_study(root: Path, docs: list[str], data: Path, args) -> list[dict]:
    """Depth x2 on a deep and a 2-layer source with D at lr ("same") and at lr / L ("fan-in")."""
    from hfgrow.growth.ligo.fit import read_sequences

    rows = []
    for layers in (args.deep_layers, 2):
        sources = make_source(root / f"deep{layers}", args.deep_hidden, layers, docs, args.deep_pretrain_steps,
                              batch_size=8)
        sequences = read_sequences(sources["float32"], [str(data)], args.seq_len)
        arms = [(False, lr) for lr in GRIDS["deep-same"]] + [(True, lr) for lr in GRIDS["deep-fan-in"]]
        for depth_fan_in, lr in arms:
            started = time.perf_counter()
            result = run(sources["float32"], sequences, "depth", lr, True, args.deep_steps, args.batch_size,
                         evals=4, eval_sequences=args.eval_sequences, depth_fan_in=depth_fan_in)
            final, best = summary(result)
            row = {"layers": layers, "hidden": args.deep_hidden, "dtype": "float32", "mode": "depth",
                   "rule": "fan-in" if depth_fan_in else "same", "lr": lr, "steps": args.deep_steps,
                   "step0": result["evals"][0], "final_minus_step0": final, "best_minus_step0": best,
                   "evals": {str(k): v for k, v in result["evals"].items()},
                   "s_per_step": round(result["s_per_step"], 4), "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            print(f"L{layers} depth D {row['rule']:6s} lr {lr:<7g} step0 {row['step0']:.4f} final {final:+.4f} "
                  f"best {best:+.4f} ({row['s_per_step']:.3f} s/step)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=["shallow", "deep", "all"], default="all")
    parser.add_argument("--widths", default="64,256", help="source hidden sizes")
    parser.add_argument("--bf16-widths", default="64", help="of those, the ones also run as a bf16 source")
    parser.add_argument("--layers", type=int, default=2, help="source layers (grown x2 in depth)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-sequences", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--deep-layers", type=int, default=24, help="layers of the deep study's source")
    parser.add_argument("--deep-hidden", type=int, default=32, help="hidden size of the deep study's sources")
    parser.add_argument("--deep-pretrain-steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--deep-steps", type=int, default=20, help="LiGO steps of the deep study")
    parser.add_argument("--out", type=Path, default=None,
                        help="write every run's held-out losses here (JSON; a study not run keeps its rows)")
    args = parser.parse_args()

    from hfgrow.eval.tiny import python_docs_corpus
    from hfgrow.growth.ligo.fit import DEFAULT_LR, WIDTH_LR_SCALE, read_sequences

    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    docs = python_docs_corpus()
    rows: list[dict] = []
    deep_rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "pydoc.txt"
        data.write_text("\n\n".join(docs))
        if args.study in ("deep", "all"):
            deep_rows = deep_study(root, docs, data, args)
        for hidden in [int(w) for w in args.widths.split(",")] if args.study in ("shallow", "all") else []:
            sources = make_source(root, hidden, args.layers, docs, args.pretrain_steps)
            sequences = read_sequences(sources["float32"], [str(data)], args.seq_len)  # one tokenizer for both
            dtypes = ["float32"] + (["bfloat16"] if str(hidden) in args.bf16_widths.split(",") else [])
            for dtype in dtypes:
                arms = [("depth", True, lr, 1.0) for lr in GRIDS["depth"]]
                arms += [("width", False, lr, 1.0) for lr in GRIDS["width-same"]]
                arms += [("width", True, lr, 1.0) for lr in GRIDS["width-fan-in"]]
                arms += [("both", False, 1e-3, 1.0)]  # hfgrow <= 0.2's default
                arms += [("both", True, lr, WIDTH_LR_SCALE) for lr in sorted({*GRIDS["both-fan-in"], DEFAULT_LR})]
                for mode, fan_in, lr, scale in arms:
                    result = run(sources[dtype], sequences, mode, lr, fan_in, args.steps, args.batch_size, scale,
                                 eval_sequences=args.eval_sequences)
                    final, best = summary(result)
                    row = {"hidden": hidden, "dtype": dtype, "mode": mode,
                           "rule": "fan-in" if fan_in else "same", "lr": lr, "step0": result["evals"][0],
                           "final_minus_step0": final, "best_minus_step0": best,
                           "evals": {str(k): v for k, v in result["evals"].items()},
                           "s_per_step": round(result["s_per_step"], 4)}
                    rows.append(row)
                    print(f"h{hidden} {dtype:8s} {mode:5s} {row['rule']:6s} lr {lr:<7g} step0 {row['step0']:.4f} "
                          f"final {final:+.4f} best {best:+.4f} ({row['s_per_step']:.3f} s/step)", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out:
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        result = {"args": previous.get("args", {}), "runs": previous.get("runs", []),
                  "deep_args": previous.get("deep_args", {}), "deep_runs": previous.get("deep_runs", [])}
        settings = {k: str(v) for k, v in vars(args).items()}
        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        if rows:
            result.update(args=settings, runs=rows, versions=versions)
        if deep_rows:
            result.update(deep_args=settings, deep_runs=deep_rows, deep_versions=versions)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
