"""Entropy mixtures (BiMix part 1): tokenize each domain, count unigrams and bigrams, take entropies.

Reference implementation of "BiMix: a bivariate data mixing law" (Ge et al., arXiv 2405.14908),
see REFERENCE.md §2. Each domain's text becomes one token stream by the project's one rule
(:mod:`hfgrow.data.tokenization`: ``BOS d1 EOS ... BOS dn EOS``, BOS where the tokenizer adds one); the
stream is cut into
consecutive sequences of ``seq_len`` tokens (the last one may be shorter), and unigrams and
adjacent-token bigrams are counted *within* sequences (no bigram spans a sequence boundary).
From the counts (natural log):

- SE = -Σ p(x) log p(x),             p(x) = c(x) / Σ c              (unigrams)
- JE = -Σ p(x,x') log p(x,x'),       p(x,x') = c(x,x') / Σ c        (bigrams)
- CE = -Σ p(x,x') log p(x'|x),       p(x'|x) = c(x,x') / Σ_x' c(x,x')

The conditional uses the bigram table's own row sums (the count of x *as the first token of a
bigram*), not the unigram count of x: the two differ by the last token of every sequence, and
only the row sums make p(·|x) a distribution, so CE = JE - H(first token of a bigram) exactly.
Proportions are r_i = exp(H_i / τ) / Σ_j exp(H_j / τ) over domains for the chosen measure (CE by
default), with the entropies in nats and τ = 1 unless asked otherwise (:func:`entropy_mixture`); the
mixture object, which records the rule, base and temperature, is written with
:func:`hfgrow.data.mixture.write_mixture`.

Example:
    >>> c = count_ids([[0, 1, 0, 1]], vocab_size=2, seq_len=4)
    >>> round(entropies(c)["se"], 4)
    0.6931
"""

from __future__ import annotations

import bisect
import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hfgrow.data.tokenization import Tokenize, tokenizer_vocab_size
from hfgrow.data.text import DocPart
from hfgrow.errors import HfgrowError

__all__ = [
    "MEASURES",
    "LOG_BASES",
    "DomainCounts",
    "TokenCounter",
    "count_ids",
    "count_domain",
    "entropies",
    "entropy_mixture",
]

#: The entropy measures a mixture can follow: unigram (se), joint bigram (je), conditional (ce).
MEASURES = ("se", "je", "ce")

#: The logarithm bases a mixture's entropies can be taken in: "e" (nats, the default) or "2" (bits).
LOG_BASES = {"e": math.e, "2": 2.0}


@dataclass
class DomainCounts:
    """Unigram and within-sequence bigram counts of one domain's token stream.

    ``bigram_keys`` are ``first * vocab_size + second`` (int64), sorted and unique, with their
    counts in ``bigram_counts``. ``tokens - sequences`` equals the number of bigrams.
    """

    vocab_size: int
    seq_len: int
    unigram: np.ndarray  # int64[vocab_size]
    bigram_keys: np.ndarray  # int64, sorted, unique
    bigram_counts: np.ndarray  # int64
    tokens: int
    sequences: int
    documents: int = 0  # documents whose EOS was counted

    @property
    def n_bigrams(self) -> int:
        """Total number of bigrams counted (with multiplicity)."""
        return int(self.bigram_counts.sum())

    def bigrams(self) -> dict[tuple[int, int], int]:
        """Bigram counts as a plain dict ``{(first, second): count}`` (for small data and tests).

        Example:
            >>> c = count_ids([[1, 2, 1, 2]], vocab_size=3, seq_len=10)
            >>> c.bigrams()
            {(1, 2): 2, (2, 1): 1}
        """
        first, second = np.divmod(self.bigram_keys, self.vocab_size)
        return {(int(a), int(b)): int(n) for a, b, n in zip(first, second, self.bigram_counts)}


def _merge_sorted(keys: np.ndarray, counts: np.ndarray, new_keys: np.ndarray, new_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted unique (key, count) tables, adding counts of equal keys. Linear time."""
    if keys.size == 0:
        return new_keys, new_counts
    idx = np.searchsorted(keys, new_keys)
    hit = idx < keys.size
    hit[hit] = keys[idx[hit]] == new_keys[hit]
    counts = counts.copy()
    counts[idx[hit]] += new_counts[hit]  # new_keys are unique, so idx[hit] has no repeats
    miss = ~hit
    if miss.any():
        keys = np.insert(keys, idx[miss], new_keys[miss])
        counts = np.insert(counts, idx[miss], new_counts[miss])
    return keys, counts


def _unique_counts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encode a sorted array: (unique keys, counts)."""
    if sorted_keys.size == 0:
        return sorted_keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate(([0], starts))
    counts = np.diff(np.concatenate((starts, [sorted_keys.size])))
    return sorted_keys[starts], counts.astype(np.int64)


class TokenCounter:
    """Streaming counter: feed token-id arrays of one stream, get :class:`DomainCounts`.

    Consecutive ``add`` calls continue the same stream; the stream is cut into sequences of
    ``seq_len`` tokens counted from its first token, and bigrams never span a cut. Memory is
    O(vocab_size + distinct bigrams + flush_keys).

    Example:
        >>> tc = TokenCounter(vocab_size=4, seq_len=3)
        >>> tc.add([0, 1, 2, 3]); tc.add([0, 1])      # sequences 0 1 2 | 3 0 1
        >>> c = tc.finish()
        >>> c.tokens, c.sequences, c.bigrams()
        (6, 2, {(0, 1): 2, (1, 2): 1, (3, 0): 1})
    """

    def __init__(self, vocab_size: int, seq_len: int = 1024, flush_keys: int = 1 << 22):
        if seq_len < 2:
            raise HfgrowError(f"seq_len must be at least 2 (got {seq_len}).")
        if vocab_size < 1:
            raise HfgrowError(f"vocab_size must be positive (got {vocab_size}).")
        self.vocab_size = int(vocab_size)
        self.seq_len = int(seq_len)
        self.flush_keys = flush_keys
        # bigram keys are sorted in the smallest dtype that holds V² (uint32 sorts ~2x faster)
        self._key_dtype = np.uint32 if self.vocab_size * self.vocab_size <= 1 << 32 else np.int64
        self.unigram = np.zeros(self.vocab_size, dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self.tokens = 0
        self._last = -1  # last token of the stream so far

    def add(self, ids: Sequence[int] | np.ndarray) -> None:
        """Append token ids to the stream and count them."""
        x = np.asarray(ids, dtype=np.int64)
        n = x.size
        if n == 0:
            return
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= self.vocab_size:
            raise HfgrowError(f"token id {hi if hi >= self.vocab_size else lo} is outside the vocabulary (size {self.vocab_size}).")
        self.unigram += np.bincount(x, minlength=self.vocab_size)
        offset = self.tokens  # stream position of x[0]
        if offset % self.seq_len != 0:
            x = np.concatenate(([self._last], x))  # pair the previous token with x[0]: same sequence
            base = offset - 1
        else:
            base = offset
        self._last = int(x[-1])
        self.tokens += n
        if x.size < 2:
            return
        keys = x[:-1] * self.vocab_size + x[1:]  # keys[j] pairs stream positions base+j, base+j+1
        # drop pairs whose second token starts a sequence: base+j+1 ≡ 0 (mod seq_len)
        first_cut = (-(base + 1)) % self.seq_len
        if first_cut < keys.size:
            keys = np.delete(keys, np.arange(first_cut, keys.size, self.seq_len))
        self._pending.append(keys.astype(self._key_dtype, copy=False))
        self._pending_n += keys.size
        if self._pending_n >= self.flush_keys:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_n = [], 0
        keys.sort()
        new_keys, new_counts = _unique_counts(keys)
        self.keys, self.counts = _merge_sorted(self.keys, self.counts, new_keys.astype(np.int64), new_counts)

    def finish(self, documents: int = 0) -> DomainCounts:
        """Counts of everything added so far (the counter can keep going afterwards)."""
        self._flush()
        return DomainCounts(
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            unigram=self.unigram.copy(),
            bigram_keys=self.keys.copy(),
            bigram_counts=self.counts.copy(),
            tokens=self.tokens,
            sequences=-(-self.tokens // self.seq_len),
            documents=documents,
        )


def count_ids(
    id_chunks: Iterable[Sequence[int] | np.ndarray], vocab_size: int, seq_len: int = 1024, max_tokens: int | None = None
) -> DomainCounts:
    """Count a token stream given as consecutive chunks of ids (no EOS added; chunks concatenate).

    Example:
        >>> c = count_ids([[5, 6, 7], [5, 6]], vocab_size=8, seq_len=2)   # sequences 56|75|6
        >>> c.tokens, c.sequences, c.bigrams()
        (5, 3, {(5, 6): 1, (7, 5): 1})
    """
    counter = TokenCounter(vocab_size, seq_len)
    for chunk in id_chunks:
        chunk = np.asarray(chunk, dtype=np.int64)
        if max_tokens is not None and counter.tokens + chunk.size > max_tokens:
            chunk = chunk[: max_tokens - counter.tokens]
        counter.add(chunk)
        if max_tokens is not None and counter.tokens >= max_tokens:
            break
    return counter.finish()


def _text_batches(texts: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        if not text:
            continue
        batch.append(text)
        size += len(text)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_DONE = object()


def _encoded_batches(
    texts: Iterable[str], encode: Callable[[list[str]], list[list[int]]], batch_chars: int, prefetch: int = 2
) -> Iterator[tuple[list[str], list[list[int]]]]:
    """Yield (batch, ids per text), reading and tokenizing in a background thread.

    The Rust tokenizer releases the GIL, so the next batch is read and tokenized while the caller
    counts the current one. Exceptions (e.g. a bad JSONL line) are re-raised in the caller;
    closing the generator early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in _text_batches(texts, batch_chars):
                if stop.is_set() or not put((batch, encode(batch))):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=work, name="hfgrow-mix-tokenize", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def count_domain(
    texts_iter: Iterable[str],
    tokenizer: Any,
    seq_len: int = 1024,
    max_tokens: int | None = None,
    *,
    batch_chars: int = 1 << 20,
    progress: Callable[[int], None] | None = None,
) -> DomainCounts:
    """Tokenize a domain's documents and count unigrams and within-sequence bigrams.

    The texts become one stream by the token-stream rule (:class:`hfgrow.data.tokenization.Tokenize`:
    EOS after every document, none after a :class:`DocPart`); empty items are skipped. Texts are
    tokenized in batches of about ``batch_chars`` characters (the fast tokenizer parallelises
    within a batch; reading and tokenizing run one batch ahead in a background thread). The
    stream is cut into sequences of ``seq_len`` tokens (the last may be shorter) and stops exactly
    at ``max_tokens`` if given. ``progress(n)`` is called with the number of tokens counted after
    each batch.

    Example:
        >>> tok = AutoTokenizer.from_pretrained("gpt2")                             # doctest: +SKIP
        >>> c = count_domain(open_domain(DomainSpec("code", "data/code")).texts(), tok)  # doctest: +SKIP
        >>> entropies(c)                                                            # doctest: +SKIP
        {'se': 7.1, 'je': 12.0, 'ce': 4.9}
    """
    tokenize = Tokenize(tokenizer)
    counter = TokenCounter(tokenizer_vocab_size(tokenizer), seq_len)
    documents = 0
    if max_tokens is not None and max_tokens <= 0:
        raise HfgrowError(f"max_tokens must be positive (got {max_tokens}).")
    batches = _encoded_batches(texts_iter, tokenize.per_text, batch_chars)
    try:
        for batch, id_lists in batches:
            flat: list[int] = []
            doc_ends: list[int] = []  # length of ``flat`` after each document's EOS
            for text, ids in zip(batch, id_lists):
                flat.extend(ids)
                if not isinstance(text, DocPart):
                    doc_ends.append(len(flat))
            ids_arr = np.array(flat, dtype=np.int64)
            before = counter.tokens
            if max_tokens is not None and before + ids_arr.size > max_tokens:
                ids_arr = ids_arr[: max_tokens - before]
                doc_ends = doc_ends[: bisect.bisect_right(doc_ends, ids_arr.size)]
            documents += len(doc_ends)
            counter.add(ids_arr)
            if progress is not None:
                progress(counter.tokens - before)
            if max_tokens is not None and counter.tokens >= max_tokens:
                break
    finally:
        batches.close()
    return counter.finish(documents=documents)


def _entropy_of_counts(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(np.float64)
    total = c.sum()
    p = c / total
    return float(-(p * np.log(p)).sum())


def entropies(counts: DomainCounts) -> dict[str, float]:
    """SE, JE and CE of a domain's counts, natural log (see the module docstring for definitions).

    CE uses p(x'|x) = c(x,x') / Σ_x' c(x,x'), the bigram table's own row sums.

    Example:
        >>> c = count_ids([[0, 1, 0, 1]], vocab_size=2, seq_len=4)   # bigrams 01, 10, 01
        >>> {k: round(v, 4) for k, v in entropies(c).items()}
        {'se': 0.6931, 'je': 0.6365, 'ce': 0.0}
    """
    if counts.tokens == 0:
        raise HfgrowError("the domain has no tokens.")
    if counts.bigram_counts.size == 0 or counts.n_bigrams == 0:
        raise HfgrowError("the domain has no bigrams (every sequence is a single token).")
    se = _entropy_of_counts(counts.unigram)
    c = counts.bigram_counts.astype(np.float64)
    total = c.sum()
    p = c / total
    je = float(-(p * np.log(p)).sum())
    # row sums of the bigram table: keys are sorted, so equal first tokens are contiguous runs
    first = counts.bigram_keys // counts.vocab_size
    starts = np.concatenate(([0], np.flatnonzero(np.diff(first)) + 1))
    row = np.add.reduceat(counts.bigram_counts, starts)
    row_per_key = np.repeat(row, np.diff(np.concatenate((starts, [first.size])))).astype(np.float64)
    ce = float(-(p * np.log(c / row_per_key)).sum())
    return {"se": se, "je": je, "ce": max(ce, 0.0) + 0.0}  # clamp rounding below 0, no -0.0


def _softmax(values: Sequence[float]) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    e = np.exp(v - v.max())
    return list(e / e.sum())


def entropy_mixture(domains: Mapping[str, DomainCounts | Mapping[str, float]], measure: str = "ce", *,
                    temperature: float = 1.0, log_base: str = "e") -> dict:
    """Proportions r_i = exp(H_i / temperature) / Σ_j exp(H_j / temperature) over domains, H being ``measure``
    in {"se", "je", "ce"} taken to ``log_base`` ("e": nats, "2": bits).

    BiMix's training-free rule (Ge et al., arXiv 2405.14908, the entropy-driven mixtures; REFERENCE.md §2):
    a softmax over the domains' entropies, temperature 1. The base matters: one two-domain case gives
    0.906 / 0.094 in nats and 0.963 / 0.037 in bits, because bits multiply every entropy difference by
    1/ln 2 (the same as a temperature of ln 2 in nats).

    ``domains`` maps names to :class:`DomainCounts` or to already computed ``{"se", "je", "ce", "tokens"}``
    dicts in nats. Returns the mixture object (see :mod:`hfgrow.data.mixture`): the rule, base and
    temperature, and each domain's proportion beside its entropies (in ``log_base``) and token count.

    Example:
        >>> m = entropy_mixture({"a": {"se": 1, "je": 2, "ce": 1.0, "tokens": 10},
        ...                      "b": {"se": 1, "je": 2, "ce": 2.0, "tokens": 10}})
        >>> round(m["domains"]["b"]["proportion"], 4), m["log_base"], m["temperature"]
        (0.7311, 'e', 1.0)
    """
    if measure not in MEASURES:
        raise HfgrowError(f"unknown measure '{measure}': use one of se, je, ce.")
    if log_base not in LOG_BASES:
        raise HfgrowError(f"unknown log base '{log_base}': use e (nats) or 2 (bits).")
    if not (math.isfinite(temperature) and temperature > 0):
        raise HfgrowError(f"the temperature must be a positive number, got {temperature}.")
    if len(domains) < 2:
        raise HfgrowError(f"a mixture needs at least 2 domains (got {len(domains)}).")
    stats: dict[str, dict[str, float]] = {}
    for name, value in domains.items():
        if isinstance(value, DomainCounts):
            if value.tokens == 0:
                raise HfgrowError(f"domain '{name}' is empty (no tokens).")
            try:
                h = entropies(value)
            except HfgrowError as exc:
                raise HfgrowError(f"domain '{name}': {exc}") from None
            stats[name] = {**h, "tokens": int(value.tokens)}
        else:
            if int(value.get("tokens", 1)) <= 0:
                raise HfgrowError(f"domain '{name}' is empty (no tokens).")
            stats[name] = {k: float(value[k]) for k in MEASURES} | {"tokens": int(value.get("tokens", 0))}
    per_nat = 1.0 / math.log(LOG_BASES[log_base])  # entropy in log_base = nats / ln(base)
    converted = {name: {k: s[k] * per_nat for k in MEASURES} for name, s in stats.items()}
    props = _softmax([converted[n][measure] / temperature for n in stats])
    return {
        "measure": measure,
        "rule": "softmax",
        "log_base": log_base,
        "temperature": float(temperature),
        "domains": {
            name: {"proportion": float(r), **converted[name], "tokens": s["tokens"]}
            for (name, s), r in zip(stats.items(), props)
        },
    }
