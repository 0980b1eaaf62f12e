"""Helpers shared by the benchmarks: a TinyLlama-shaped random checkpoint and child-process timing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def make_checkpoint(folder: Path, scale: float) -> int:
    """A random bf16 Llama with TinyLlama's shape (hidden/FFN/vocab scaled). Run in a child process."""
    import torch
    from transformers import LlamaConfig

    from hfgrow.io.executor import save_state_dict

    heads, kv_heads = 32, 4
    hidden = int(2048 * scale) // heads * heads
    ffn, vocab = int(5632 * scale), int(32000 * scale)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=22, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=2048,
                         dtype="bfloat16", tie_word_embeddings=False)
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(22):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
            p + "mlp.down_proj.weight": (hidden, ffn), p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        })
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    gen = torch.Generator().manual_seed(0)
    total = 0
    state = {}
    for name, shape in shapes.items():
        state[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        total += state[name].numel()
    save_state_dict(state, folder, max_shard_size="5GB")
    print(json.dumps({"params": total, "hidden": hidden, "ffn": ffn, "vocab": vocab}))
    return total


def timed(argv: list[str], stdout=None, env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (GB) and CPU seconds (user + sys) of one child process, via wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout or subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed")
    return elapsed, usage.ru_maxrss * 1024 / 1e9, usage.ru_utime + usage.ru_stime
