"""Offline tokenizers and synthetic data for the BiMix tests (no Hub access)."""

from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["<unk>", "</s>"]


def train_tokenizer(texts: list[str], kind: str = "wordlevel", vocab_size: int = 1000):
    """A ``tokenizers.Tokenizer`` trained on ``texts``: "wordlevel" (whitespace words) or "bpe" (byte-level)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        raise ValueError(kind)
    tok.train_from_iterator(texts, trainer)
    return tok


def hf_tokenizer(texts: list[str], kind: str = "wordlevel", vocab_size: int = 1000):
    """The same, wrapped as a transformers fast tokenizer with ``</s>`` as EOS."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(texts, kind, vocab_size), eos_token="</s>", unk_token="<unk>")


def save_tokenizer(folder: Path, texts: list[str], kind: str = "wordlevel", vocab_size: int = 1000) -> Path:
    """Train, wrap and ``save_pretrained`` a tokenizer into ``folder`` (loadable by AutoTokenizer offline)."""
    tok = hf_tokenizer(texts, kind, vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder


def words_text(seed: int, n_words: int, vocab: list[str], zipf: float = 1.1) -> str:
    """Random text over ``vocab`` with a Zipf-like word distribution, lines of ~12 words."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** zipf for i in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=n_words)
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return "\n".join(lines) + "\n"


CODE_SNIPPET = '''import os
import sys


def walk(top, depth=0):
    """Yield (path, depth) for every file under top."""
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        if os.path.isdir(path):
            yield from walk(path, depth + 1)
        else:
            yield path, depth


class Counter(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n
        return self[key]

if __name__ == "__main__":
    for p, d in walk(sys.argv[1]):
        print("  " * d + p)
'''


# --------------------------------------------------------------------------- a known BiMix law

#: True coefficients (A, alpha, B, beta, C) of three domains.
TRUE_LAW = {
    "web": (2.0, 0.08, 30.0, 0.45, 1.0),
    "code": (1.2, 0.20, 12.0, 0.60, 1.3),
    "books": (2.6, 0.05, 50.0, 0.35, 0.8),
}
MIXTURES = [
    (1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.5, 0.4, 0.1),
    (0.1, 0.3, 0.6), (0.4, 0.1, 0.5), (0.7, 0.15, 0.15), (0.15, 0.7, 0.15), (0.3, 0.5, 0.2),
]  # fmt: skip
STEPS = [round(100 * 2 ** (k / 2)) for k in range(19)]  # 100 ... 51200


def true_loss(domain: str, r: float, s: float) -> float:
    """L(r, s) = A / r^alpha * (B / s^beta + C) with the coefficients of :data:`TRUE_LAW`."""
    A, a, B, b, C = TRUE_LAW[domain]
    return A / r**a * (B / s**b + C)


def synthetic_observations(noise: float = 0.01, seed: int = 0) -> list:
    """Every mixture evaluated on every domain at every step, loss × (1 + noise·N(0, 1))."""
    import numpy as np

    from hfgrow.mix.law import Observation

    rng = np.random.default_rng(seed)
    out = []
    for m in MIXTURES:
        mixture = dict(zip(TRUE_LAW, m))
        for s in STEPS:
            for d in TRUE_LAW:
                loss = true_loss(d, mixture[d], s) * (1 + noise * rng.standard_normal())
                out.append(Observation(mixture, float(s), d, float(loss)))
    return out
