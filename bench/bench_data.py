#!/usr/bin/env python
"""Training data throughput: a token folder vs the raw-text path, one process, same run, offline.

Builds ~``--mb`` MB of JSON-lines text from this Python's own standard library (one .py file or
pydoc topic per document, repeated if needed), trains a byte-level BPE tokenizer (vocab 32000,
like TinyLlama's) on a sample, tokenizes the corpus once with ``hfgrow tokenize`` (timed: the
one-off cost), then measures the tokens/s that ``data.train.next_batch`` delivers to the training
loop, exactly as continue.py calls it, for sequences of ``--seq-len`` tokens:

  raw text        build_data on the .jsonl: read, shuffle, tokenize, pack, 1 process x 8 sequences,
                  and as rank 0 of 8 (it tokenizes all 64 sequences of the global batch and keeps 8)
  token folder    build_data on the token folder, 1 process x 8 sequences (memory-mapped windows)
  token folder    the same as rank 0 of 8 processes (global batch 64: it reads its 8, draws all 64)

and compares them with what one H100 consumes for the TinyLlama-1.1B shape at 40% MFU,
0.4 · 989e12 / (6 · 1.1e9) ≈ 6e4 tokens/s; the issue's goal is ≥ 50x that per process from the
token folder. The page cache is warm for the token folder (it was just written), as it is for a
training run after its first pass.

    python bench/bench_data.py                  # 30 MB, cache in /tmp/hfgrow-bench-data
    python bench/bench_data.py --mb 100 --seconds 20

Prints one table and writes bench/results_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

H100_TOKENS_PER_S = 0.4 * 989e12 / (6 * 1.1e9)  # TinyLlama-1.1B at 40% MFU on one H100 SXM
GOAL = 50


def build_corpus(path: Path, mb: float) -> None:
    """JSON lines of real text: the standard library's .py files and the pydoc topics, repeated to ``mb`` MB."""
    std = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    try:
        import pydoc_data.topics as topics

        docs.extend(topics.topics.values())
    except ImportError:
        pass
    for p in sorted(std.rglob("*.py")):
        if "site-packages" not in p.parts and "test" not in p.parts:
            docs.append(p.read_text(encoding="utf-8", errors="replace"))
    docs = [d for d in docs if d.strip()]
    target, written = int(mb * 1e6), 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            for d in docs:
                line = json.dumps({"text": d}) + "\n"
                fh.write(line)
                written += len(line)
                if written >= target:
                    break


def build_tokenizer(folder: Path, corpus: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    sample = corpus.read_text(encoding="utf-8")[:4_000_000]
    tok.train_from_iterator([sample[i : i + 100_000] for i in range(0, len(sample), 100_000)], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)


def delivered(train, per_call: int, rank: int, world: int, seconds: float) -> dict:
    """Tokens/s that ``train.next_batch`` hands this process, over about ``seconds`` seconds."""
    global_n = per_call * world
    tokens, calls = 0, 0
    start = time.perf_counter()
    while True:
        batch = train.next_batch(global_n, rank, world)
        tokens += sum(len(seq) for _, _, seq in batch)
        calls += 1
        took = time.perf_counter() - start
        if took >= seconds:
            break
    return {"tokens_per_s": tokens / took, "tokens": tokens, "calls": calls, "seconds": took}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=30.0, help="corpus size")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per process per call")
    p.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    p.add_argument("--cache", default="/tmp/hfgrow-bench-data")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / f"corpus-{a.mb:g}mb.jsonl"
    if not corpus.exists():
        build_corpus(corpus, a.mb)
    tok_dir = cache / f"tokenizer-{a.vocab}"
    if not (tok_dir / "tokenizer.json").exists():
        build_tokenizer(tok_dir, corpus, a.vocab)
    tokens_dir = cache / f"tokens-{a.mb:g}mb-{a.vocab}"
    if tokens_dir.exists():
        import shutil

        shutil.rmtree(tokens_dir)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hfgrow.cli.main", "tokenize", str(tokens_dir), "--data",
                    f"text={corpus}", "--tokenizer", str(tok_dir), "-q", "-j", str(cores)],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    tokenize_s = time.perf_counter() - start

    from transformers import AutoTokenizer

    from hfgrow.data.loading import build_data
    from hfgrow.data.specs import parse_specs
    from hfgrow.data.token_folder import TokenFolder

    n_tokens = TokenFolder(tokens_dir).domain("text").n_tokens
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = {}
    raw = build_data(parse_specs([f"text={corpus}"]), tok, a.seq_len, eval_sequences=0)
    rows["raw text, 1 process"] = delivered(raw.train, a.batch_size, 0, 1, a.seconds)
    raw = build_data(parse_specs([f"text={corpus}"]), tok, a.seq_len, eval_sequences=0)
    rows["raw text, rank 0 of 8"] = delivered(raw.train, a.batch_size, 0, 8, a.seconds)
    folder = build_data(parse_specs([str(tokens_dir)]), tok, a.seq_len, eval_sequences=0)
    rows["token folder, 1 process"] = delivered(folder.train, a.batch_size, 0, 1, a.seconds)
    folder = build_data(parse_specs([str(tokens_dir)]), tok, a.seq_len, eval_sequences=0)
    rows["token folder, rank 0 of 8"] = delivered(folder.train, a.batch_size, 0, 8, a.seconds)

    base = rows["raw text, 1 process"]["tokens_per_s"]
    print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB of JSON lines, {n_tokens:,} tokens (BPE vocab {a.vocab}); "
          f"seq {a.seq_len}, {a.batch_size} sequences per process per call; {cores} CPU cores")
    print(f"hfgrow tokenize (one-off, {cores} workers): {tokenize_s:.1f} s, {n_tokens / tokenize_s:,.0f} tokens/s "
          "(process start-up included)")
    print(f"{'path':<28}{'tokens/s':>14}{'vs raw text':>13}{'vs H100 need (6e4)':>20}")
    for label, r in rows.items():
        print(f"{label:<28}{r['tokens_per_s']:>14,.0f}{r['tokens_per_s'] / base:>12.1f}x"
              f"{r['tokens_per_s'] / H100_TOKENS_PER_S:>19.1f}x")
    worst = min(r["tokens_per_s"] for k, r in rows.items() if k.startswith("token"))
    verdict = "met" if worst >= GOAL * H100_TOKENS_PER_S else "missed"
    print(f"goal >= {GOAL}x the H100 need per process from the token folder: {verdict} "
          f"({worst / H100_TOKENS_PER_S:.0f}x at the slower of the two)")
    out = Path(__file__).with_name("results_data.json")
    out.write_text(json.dumps({"config": vars(a), "cores": cores, "tokens": n_tokens, "tokenize_s": tokenize_s,
                               "h100_need_tokens_per_s": H100_TOKENS_PER_S, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
