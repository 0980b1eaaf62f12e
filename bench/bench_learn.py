"""LiGO learn-phase step time vs a plain forward/backward of the grown model, same batch, same run.

Usage:
    python bench/bench_learn.py [--layers 4 --hidden 256 --factor 4 --seq-len 128 --batch-size 4 --steps 10]

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

from hfgrow.layout import open_model
from hfgrow.ligo import learn_coefficients
from hfgrow.ops.depth import stack_plan
from hfgrow.tiny import make_model, make_tokenizer, python_docs_corpus, tiny_llama_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
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
        layer_map = [i % args.layers for i in range(args.layers * args.factor)]
        config = stack_plan(layout, checkpoint.tensors, layer_map).config
        hfgrow.stack(str(src), root / "grown", factor=args.factor, quiet=True)
        grown = AutoModelForCausalLM.from_pretrained(root / "grown", dtype=torch.float32)
        batch = torch.randint(0, 512, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))

        def plain() -> float:
            start = time.perf_counter()
            for _ in range(args.steps):
                grown.zero_grad(set_to_none=True)
                grown(batch, labels=batch, use_cache=False).loss.backward()
            return (time.perf_counter() - start) / args.steps

        def ligo() -> float:
            start = time.perf_counter()
            learn_coefficients(src, layout, config, layer_map, [str(data)], steps=args.steps, seq_len=args.seq_len,
                               batch_size=args.batch_size, progress=False, eval_sequences=0)
            return (time.perf_counter() - start) / args.steps

        plain(), ligo()  # warm-up
        plains, ligos = [], []
        for _ in range(args.repeats):
            plains.append(plain())
            ligos.append(ligo())
        p, l = statistics.median(plains), statistics.median(ligos)
        print(json.dumps({
            "grown_layers": len(layer_map), "grown_params": grown.num_parameters(),
            "batch": [args.batch_size, args.seq_len],
            "plain_fwd_bwd_s_per_step": round(p, 4), "ligo_s_per_step": round(l, 4), "ratio": round(l / p, 3),
        }, indent=2))


if __name__ == "__main__":
    main()
