"""Gstack x4 of a TinyLlama-shaped (1.1B, bf16) checkpoint vs `cat` copying the same bytes.

Usage:
    python bench/bench_stack.py                 # full TinyLlama shape: 2.2 GB in, 8.8 GB out
    python bench/bench_stack.py --scale 0.25    # smaller hidden/FFN/vocab for a quick look
    python bench/bench_stack.py --workdir /big/disk --repeats 3

Prints wall time and peak RSS of `hfgrow stack` (a fresh child process each run, imports
included) and of `cat src x4 > file` in the same run on the same disk, and their ratio. cat
writes the source g times while Gstack writes the embeddings and LM head once, so cat's time is
scaled to the byte count hfgrow wrote. Runs alternate
(cat, hfgrow, cat, hfgrow, ...) and the median of each is reported, since this machine is noisy.
Targets (issue 2): peak RSS < 0.5 GB, wall time within 1.2x of cat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def make_checkpoint(folder: Path, scale: float) -> int:
    """A random bf16 Llama with TinyLlama's shape (scaled). Run in a child process (see main)."""
    import torch
    from transformers import LlamaConfig

    from hfgrow.executor import save_state_dict

    hidden, ffn, vocab = int(2048 * scale), int(5632 * scale), int(32000 * scale)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=22, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=2048, dtype="bfloat16")
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    kv = hidden // 32 * 4
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
    state = {name: (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16) for name, shape in shapes.items()}
    save_state_dict(state, folder, max_shard_size="5GB")
    return sum(t.numel() for t in state.values())


def timed(argv: list[str], stdout=None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout or subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed")
    return elapsed, usage.ru_maxrss * 1024 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="scale of hidden/FFN/vocab (1.0 = TinyLlama)")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--make-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_only:
        print(make_checkpoint(args.make_only, args.scale))
        return

    root = Path(tempfile.mkdtemp(prefix="hfgrow-bench-", dir=args.workdir))
    try:
        src = root / "src"
        # made in a child so this process stays small: a forked child's peak RSS counts the parent's pages
        params = int(subprocess.run([sys.executable, __file__, "--make-only", str(src), "--scale", str(args.scale)],
                                    check=True, capture_output=True, text=True).stdout.split()[-1])
        files = sorted(str(p) for p in src.glob("*.safetensors"))
        cat_out, grown = root / "cat.bin", root / "grown"
        hfgrow = [sys.executable, "-m", "hfgrow_cli.main", "stack", str(src), str(grown),
                  "--factor", str(args.factor), "--quiet"]
        cats, grows = [], []
        for _ in range(args.repeats):
            os.sync()  # start each run with no dirty pages left by the previous one
            with open(cat_out, "wb") as sink:
                cats.append(timed(["cat"] + files * args.factor, stdout=sink))
            cat_bytes = cat_out.stat().st_size
            cat_out.unlink()
            os.sync()
            grows.append(timed(hfgrow))
            written = sum(p.stat().st_size for p in grown.iterdir())
            shutil.rmtree(grown)
        # cat copies the source g times; Gstack writes embeddings/LM head once, so compare per byte
        cat_s = statistics.median(t for t, _ in cats) * written / cat_bytes
        grow_s = statistics.median(t for t, _ in grows)
        result = {
            "source_params": params,
            "bytes_written": written,
            "cat_bytes": cat_bytes,
            "cat_seconds_for_same_bytes": round(cat_s, 2),
            "hfgrow_seconds": round(grow_s, 2),
            "time_ratio_vs_cat": round(grow_s / cat_s, 3),
            "hfgrow_peak_rss_gb": round(max(r for _, r in grows), 3),
            "cat_peak_rss_gb": round(max(r for _, r in cats), 3),
            "runs": {"cat": [round(t, 2) for t, _ in cats], "hfgrow": [round(t, 2) for t, _ in grows]},
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
