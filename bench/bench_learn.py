"""LiGO learn-phase step time vs a plain forward/backward of the grown model, same batch, same run.

Three learn modes, each against the plain step of the model it grows into:
  depth        D only (Gstack-shaped model), everything in memory
  depth+width  D and the width matrices B (direct-widened model), everything in memory
  offload      depth+width with the frozen source offloaded to disk by accelerate
               (--device-map disk): blocks are re-run in the backward pass

Usage:
    python bench/bench_learn.py [--layers 4 --hidden 256 --factor 4 --seq-len 128 --batch-size 4 --steps 5]

Target (issue 6): the overhead of parametrising the grown weights stays under 1.5x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hfgrow.growth.ligo.fit import FitSettings, learn_growth
from hfgrow.growth.ligo.placement import Placement
from hfgrow.arch.layout import open_model
from hfgrow.growth.ops.depth import stack_plan
from hfgrow.growth.ops.learn import WidthExpansion
from hfgrow.growth.ops.width import resolve_sizes, widen_config
from hfgrow.arch.roles import derive_roles
from hfgrow.eval.tiny import make_model, make_tokenizer, python_docs_corpus, tiny_llama_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import hfgrow
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        make_model(src, tiny_llama_config(layers=args.layers, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                                          num_attention_heads=8, num_key_value_heads=4, vocab_size=512),
                   tokenizer=False)
        docs = python_docs_corpus(max_chars=200_000)
        make_tokenizer(src, text="\n".join(docs[:40]), vocab_size=512)
        data = root / "data.txt"
        data.write_text("\n\n".join(docs))
        checkpoint, layout = open_model(src)
        roles = derive_roles(layout, checkpoint.tensors)
        layer_map = [i % args.layers for i in range(args.layers * args.factor)]
        base = stack_plan(layout, checkpoint.tensors, layer_map)
        sizes = resolve_sizes(roles, hidden_size=2 * args.hidden)
        wide_config = widen_config(base.config, roles, sizes, "learn").config
        hfgrow.stack(str(src), root / "deep", factor=args.factor, quiet=True)
        hfgrow.grow(str(src), root / "wide", factor=args.factor, hidden_size=2 * args.hidden, quiet=True)
        models = {name: AutoModelForCausalLM.from_pretrained(root / name, dtype=torch.float32)
                  for name in ("deep", "wide")}
        batch = torch.randint(0, 512, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))

        def plain(name: str) -> float:
            model = models[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                model.zero_grad(set_to_none=True)
                model(batch, labels=batch, use_cache=False).loss.backward()
            return (time.perf_counter() - start) / args.steps

        def ligo(mode: str) -> float:
            width = mode != "depth"
            placement = Placement("disk", offload_folder=root / "offload") if mode == "offload" else None
            settings = FitSettings(steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size, eval_sequences=0)
            report = learn_growth(checkpoint, layout, wide_config if width else base.config, layer_map, [str(data)],
                                  settings, roles=roles, expansion=WidthExpansion(roles, sizes) if width else None,
                                  placement=placement, progress=False)
            return statistics.median(report.step_seconds)

        modes = {"depth": "deep", "depth+width": "wide", "offload": "wide"}
        for mode, model in modes.items():  # warm-up
            plain(model), ligo(mode)
        times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # alternate so machine noise hits both sides alike
            for mode, model in modes.items():
                times[mode].append((plain(model), ligo(mode)))
        result = {"source": {"layers": args.layers, "hidden": args.hidden}, "factor": args.factor,
                  "batch": [args.batch_size, args.seq_len]}
        for mode, pairs in times.items():
            p = statistics.median(a for a, _ in pairs)
            g = statistics.median(b for _, b in pairs)
            result[mode] = {"grown_params": models[modes[mode]].num_parameters(),
                            "plain_fwd_bwd_s_per_step": round(p, 4), "ligo_s_per_step": round(g, 4),
                            "ratio": round(g / p, 3)}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
