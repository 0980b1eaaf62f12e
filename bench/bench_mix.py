"""Throughput of `hfgrow mix entropy`'s counting (hfgrow.mix.counts.count_domain), offline.

Builds ~50 MB of text from this Python's own standard library (.py sources plus the pydoc
topics text), repeated if needed, trains a byte-level BPE tokenizer (vocab 32k) on a sample with
`tokenizers`, then measures on the same text in the same run:

  tokenize only (HF __call__)   tokenizer(batch, add_special_tokens=False) — the usual way
  tokenize only (backend)       backend encode_batch_fast + ids lists — what count_domain calls
  count_domain                  reading the file + tokenizing + EOS joining + counting

and prints MB/s and the ratio count_domain / tokenize-only (1.0 = counting is free).

    python bench/bench_mix.py                  # 50 MB, vocab 32k, cache in /tmp/hfgrow-bench-mix
    python bench/bench_mix.py --mb 10 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path


def build_corpus(path: Path, mb: float) -> None:
    std = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in std.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    pieces = []
    try:  # the Python docs' topic texts, prose
        import pydoc_data.topics as topics

        pieces.extend(topics.topics.values())
    except ImportError:
        pass
    for p in files:
        pieces.append(p.read_text(encoding="utf-8", errors="replace"))
    text = "\n".join(pieces)
    target = int(mb * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            chunk = text[: target - written] if len(text.encode()) > target - written else text
            f.write(chunk)
            written += len(chunk.encode())


def build_tokenizer(folder: Path, corpus: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    sample = corpus.read_text(encoding="utf-8")[:8_000_000]
    tok.train_from_iterator([sample[i : i + 100_000] for i in range(0, len(sample), 100_000)], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(str(folder))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="MB of text")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (best is reported)")
    ap.add_argument("--workdir", default="/tmp/hfgrow-bench-mix")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from transformers import AutoTokenizer

    from hfgrow.data.specs import DomainSpec, open_domain
    from hfgrow.mix import counts as mix

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.mb:g}MB.txt"
    if not corpus.exists():
        t = time.perf_counter()
        build_corpus(corpus, args.mb)
        print(f"built {corpus} in {time.perf_counter() - t:.1f}s")
    tok_dir = work / f"bpe-{args.vocab}"
    if not (tok_dir / "tokenizer.json").exists():
        t = time.perf_counter()
        build_tokenizer(tok_dir, corpus, args.vocab)
        print(f"trained tokenizer {tok_dir} in {time.perf_counter() - t:.1f}s")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    mb = corpus.stat().st_size / 1e6
    print(f"text: {mb:.1f} MB, tokenizer: byte-level BPE, {len(tokenizer)} ids, cores: {os.cpu_count()}")

    def texts():
        return open_domain(DomainSpec("corpus", str(corpus))).texts()

    # the exact batches count_domain tokenizes
    batches = list(mix._text_batches(texts(), 1 << 20))
    backend = tokenizer.backend_tokenizer

    def tok_call() -> int:
        return sum(len(ids) for b in batches for ids in tokenizer(b, add_special_tokens=False)["input_ids"])

    def tok_backend() -> int:
        return sum(len(e.ids) for b in batches for e in backend.encode_batch_fast(b, add_special_tokens=False))

    def count() -> int:
        return mix.count_domain(texts(), tokenizer, seq_len=args.seq_len).tokens

    fns = {
        "tokenize only (HF __call__)": tok_call,
        "tokenize only (backend)": tok_backend,
        "count_domain (read+tokenize+count)": count,
    }
    # interleaved repeats, best wall time kept: other processes on the machine add noise
    wall = {name: float("inf") for name in fns}
    cpu = {name: float("inf") for name in fns}
    ntok = {}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeat):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            ntok[name] = fn()
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    for name in fns:
        print(f"{name:36s} {mb / wall[name]:6.2f} MB/s  {ntok[name] / wall[name] / 1e6:5.2f} M tok/s  "
              f"wall {wall[name]:5.1f}s  cpu {cpu[name]:5.1f}s ({cpu[name] / mb * 1000:.0f} cpu-ms/MB)")
    ours = "count_domain (read+tokenize+count)"
    print(f"count_domain / tokenize-only throughput: {wall['tokenize only (backend)'] / wall[ours]:.3f} (backend), "
          f"{wall['tokenize only (HF __call__)'] / wall[ours]:.3f} (HF __call__); "
          f"cpu overhead of counting vs backend: {cpu[ours] / cpu['tokenize only (backend)'] - 1:+.1%}")
    ncpu = os.cpu_count() or 1
    print(f"cpu-bound ceiling on {ncpu} idle cores (perfect scaling): count_domain {ncpu * mb / cpu[ours]:.2f} MB/s, "
          f"tokenize only {ncpu * mb / cpu['tokenize only (backend)']:.2f} MB/s")
    print(f"load average after: {os.getloadavg()[0]:.2f} (wall figures are only meaningful when it is below the core count)")
    counts = mix.count_domain(texts(), tokenizer, seq_len=args.seq_len)
    h = mix.entropies(counts)
    print(f"entropies: SE {h['se']:.4f}  JE {h['je']:.4f}  CE {h['ce']:.4f}; distinct bigrams {counts.bigram_keys.size:,}")


if __name__ == "__main__":
    main()
