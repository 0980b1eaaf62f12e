"""BiMix data mixing: entropy-driven mixtures and the bivariate mixing law.

Reference implementation of "BiMix: a bivariate data mixing law" (Ge et al., arXiv 2405.14908),
see REFERENCE.md §2. Three parts:

1. **Entropy mixtures** (training-free). Each domain's text is tokenized, documents are joined with
   EOS into one token stream (``d1 EOS d2 EOS ... dn EOS``), the stream is cut into consecutive
   sequences of ``seq_len`` tokens (the last one may be shorter), and unigrams and adjacent-token
   bigrams are counted *within* sequences (no bigram spans a sequence boundary). From the counts
   (natural log):

   - SE = -Σ p(x) log p(x),             p(x) = c(x) / Σ c              (unigrams)
   - JE = -Σ p(x,x') log p(x,x'),       p(x,x') = c(x,x') / Σ c        (bigrams)
   - CE = -Σ p(x,x') log p(x'|x),       p(x'|x) = c(x,x') / Σ_x' c(x,x')

   The conditional uses the bigram table's own row sums (the count of x *as the first token of a
   bigram*), not the unigram count of x: the two differ by the last token of every sequence, and
   only the row sums make p(·|x) a distribution, so CE = JE - H(first token of a bigram) exactly.
   Proportions are r_i = softmax(H_i) over domains for the chosen measure (CE by default).

2. **The law**: L_i(r_i, s) = A_i / r_i^α_i · (B_i / s^β_i + C_i), fitted per domain by
   trust-region-reflective least squares on the log of the loss (i.e. relative error).
   The five coefficients are one too many: (A·k, B/k, C/k) gives the same law for any k > 0, so
   fitted laws are reported in the gauge C = 1 (A is then the loss at r = 1 as s → ∞).

3. **Mixture optimisation**: r* = argmin Σ_i L_i(r_i, S) subject to Σ r_i = 1, r_i ≥ floor,
   solved exactly from the KKT conditions (every term is convex in r_i for α_i ≥ 0).

File formats (all JSON):

- mixture: ``{"measure": "ce", "domains": {"name": {"proportion": r, "se": .., "je": .., "ce": ..,
  "tokens": n}}}``; optimised mixtures use ``"measure": "law"`` and carry ``predicted_loss``
  instead of the entropies. Readers only need ``domains.<name>.proportion``.
- observations (JSONL, one per line): ``{"mixture": {"domain": r, ...}, "step": s,
  "domain": "name", "loss": L}``.
- law: ``{"law": "bimix", "domains": {"name": {"A":.., "alpha":.., "B":.., "beta":.., "C":..,
  "fit": {...}}}}``.

Bad input raises :class:`hfgrow.errors.HfgrowError` with one sentence.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfgrow.data import text as _text
from hfgrow.errors import HfgrowError
from hfgrow.data.text import DocPart, iter_documents

MEASURES = ("se", "je", "ce")
MIN_OBSERVATIONS = 5
SUM_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------
# Reading domain text
# ---------------------------------------------------------------------------------------------

# Local files are read by hfgrow.data.text; these names stay importable from here.
TEXT_SUFFIXES = _text.TEXT_SUFFIXES
iter_txt, iter_jsonl, iter_parquet = _text.iter_txt, _text.iter_jsonl, _text.iter_parquet
domain_files = _text.list_files


def parse_hf_source(source: str) -> tuple[str, str | None, str]:
    """Split ``hf:NAME[:CONFIG][:SPLIT]`` into (name, config or None, split; default "train").

    Example:
        >>> parse_hf_source("hf:wikitext:wikitext-2-raw-v1:validation")
        ('wikitext', 'wikitext-2-raw-v1', 'validation')
        >>> parse_hf_source("hf:roneneldan/TinyStories")
        ('roneneldan/TinyStories', None, 'train')
    """
    parts = source[3:].split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts[1:]):
        raise HfgrowError(f"'{source}' is not of the form hf:DATASET[:CONFIG][:SPLIT].")
    name = parts[0]
    config = parts[1] if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 else "train"
    return name, config, split


def iter_hf_dataset(source: str, text_field: str = "text") -> Iterator[str]:
    """Stream ``hf:NAME[:CONFIG][:SPLIT]`` with ``datasets`` (optional dependency), one document a row.

    Example:
        >>> next(iter_hf_dataset("hf:roneneldan/TinyStories"))   # doctest: +SKIP
        'One day, a little girl named Lily ...'
    """
    name, config, split = parse_hf_source(source)
    try:
        import datasets
    except ImportError:
        raise HfgrowError(f"Reading '{source}' needs the datasets package: pip install datasets.") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # datasets raises many types; the user needs the message, not the type
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HfgrowError(f"Could not open dataset '{source}': {first}") from None
    for row in ds:
        if text_field not in row:
            raise HfgrowError(f"Dataset '{source}' has no '{text_field}' column.")
        text = row[text_field]
        if text:
            yield text


def iter_domain_texts(source: str, *, text_field: str = "text", piece_chars: int = 1 << 16) -> Iterator[str]:
    """Documents of one domain: a file, a folder of files, or ``hf:DATASET[:CONFIG][:SPLIT]``.

    The source is checked at once (missing path, unknown file type raise HfgrowError here); the
    text is then streamed, so memory does not grow with the domain's size. Folders are read
    recursively in sorted order, skipping hidden entries and unsupported files (see
    :mod:`hfgrow.data.text` for the file types).

    Example:
        >>> docs = iter_domain_texts("data/code")                # doctest: +SKIP
        >>> next(docs)[:20]                                      # doctest: +SKIP
        'import os\\nimport sys'
    """
    if source.startswith("hf:"):
        parse_hf_source(source)  # validate now
        return iter_hf_dataset(source, text_field)
    files = domain_files(source)

    def generate() -> Iterator[str]:
        for path in files:
            yield from iter_documents(path, text_field, piece_chars=piece_chars)

    return generate()


def parse_domain_arg(arg: str) -> tuple[str, str]:
    """Split a ``NAME=PATH_OR_DATASET`` command-line value.

    Example:
        >>> parse_domain_arg("code=data/code/")
        ('code', 'data/code/')
    """
    name, sep, source = arg.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise HfgrowError(f"--domain '{arg}' is not of the form NAME=PATH (or NAME=hf:DATASET).")
    return name, source


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


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
            raise HfgrowError(f"Token id {hi if hi >= self.vocab_size else lo} is outside the vocabulary (size {self.vocab_size}).")
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


def _batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """A function list[str] -> list of id lists, identical to ``tokenizer(texts, add_special_tokens=False)``.

    For Hugging Face fast tokenizers (and raw ``tokenizers.Tokenizer`` objects) this calls the Rust
    backend's ``encode_batch_fast`` directly (no offsets, no BatchEncoding), with the same
    special-token handling as ``__call__``; anything else goes through ``__call__``.
    """
    backend = None
    if hasattr(tokenizer, "encode_batch_fast"):  # a tokenizers.Tokenizer
        backend = tokenizer
    elif getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = tokenizer.backend_tokenizer
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
    if backend is not None and hasattr(backend, "encode_batch_fast"):

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

        return encode

    def encode_slow(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    return encode_slow


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """One more than the largest id a tokenizer can produce (added tokens included).

    Not simply ``len(tokenizer)``: a vocabulary may have holes in its ids.

    Example:
        >>> tokenizer_vocab_size(AutoTokenizer.from_pretrained("gpt2"))   # doctest: +SKIP
        50257
    """
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        vocab = tokenizer.get_vocab(with_added_tokens=True)
    else:
        size = int(len(tokenizer))
        vocab = tokenizer.get_vocab()
    return max(size, max(vocab.values(), default=-1) + 1)


def tokenizer_eos_id(tokenizer: Any) -> int:
    """The EOS id used to join documents; HfgrowError if the tokenizer has none."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None and hasattr(tokenizer, "token_to_id"):
        for name in ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>"):
            eos = tokenizer.token_to_id(name)
            if eos is not None:
                break
    if eos is None:
        raise HfgrowError("The tokenizer has no EOS token to join documents with; give it one (eos_token).")
    return int(eos)


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
    eos_id: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DomainCounts:
    """Tokenize a domain's documents and count unigrams and within-sequence bigrams.

    Documents (plain ``str`` items) are each followed by EOS; :class:`DocPart` items continue into
    the next item with no EOS; empty items are skipped. Texts are tokenized in batches of about
    ``batch_chars`` characters with ``add_special_tokens=False`` (the fast tokenizer parallelises
    within a batch; reading and tokenizing run one batch ahead in a background thread). The stream is cut into sequences of ``seq_len`` tokens (the last may be
    shorter) and stops exactly at ``max_tokens`` if given. ``progress(n)`` is called with the
    number of tokens counted after each batch.

    Example:
        >>> from transformers import AutoTokenizer                         # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained("gpt2")                    # doctest: +SKIP
        >>> c = count_domain(iter_domain_texts("data/code"), tok)          # doctest: +SKIP
        >>> entropies(c)                                                   # doctest: +SKIP
        {'se': 7.1, 'je': 12.0, 'ce': 4.9}
    """
    encode = _batch_encoder(tokenizer)
    eos = tokenizer_eos_id(tokenizer) if eos_id is None else int(eos_id)
    counter = TokenCounter(tokenizer_vocab_size(tokenizer), seq_len)
    documents = 0
    if max_tokens is not None and max_tokens <= 0:
        raise HfgrowError(f"max_tokens must be positive (got {max_tokens}).")
    batches = _encoded_batches(texts_iter, encode, batch_chars)
    try:
        for batch, id_lists in batches:
            flat: list[int] = []
            doc_ends: list[int] = []  # length of ``flat`` after each document's EOS
            for text, ids in zip(batch, id_lists):
                flat.extend(ids)
                if not isinstance(text, DocPart):
                    flat.append(eos)
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


# ---------------------------------------------------------------------------------------------
# Entropies and entropy mixtures
# ---------------------------------------------------------------------------------------------


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
        raise HfgrowError("The domain has no tokens.")
    if counts.bigram_counts.size == 0 or counts.n_bigrams == 0:
        raise HfgrowError("The domain has no bigrams (every sequence is a single token).")
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


def entropy_mixture(domains: Mapping[str, DomainCounts | Mapping[str, float]], measure: str = "ce") -> dict:
    """Proportions r_i = softmax(H_i) over domains for ``measure`` in {"se", "je", "ce"}.

    ``domains`` maps names to :class:`DomainCounts` or to already computed
    ``{"se", "je", "ce", "tokens"}`` dicts. Returns the mixture JSON object.

    Example:
        >>> m = entropy_mixture({"a": {"se": 1, "je": 2, "ce": 1.0, "tokens": 10},
        ...                      "b": {"se": 1, "je": 2, "ce": 2.0, "tokens": 10}})
        >>> round(m["domains"]["b"]["proportion"], 4)
        0.7311
    """
    if measure not in MEASURES:
        raise HfgrowError(f"Unknown measure '{measure}': use one of se, je, ce.")
    if len(domains) < 2:
        raise HfgrowError(f"A mixture needs at least 2 domains (got {len(domains)}).")
    stats: dict[str, dict[str, float]] = {}
    for name, value in domains.items():
        if isinstance(value, DomainCounts):
            if value.tokens == 0:
                raise HfgrowError(f"Domain '{name}' is empty (no tokens).")
            try:
                h = entropies(value)
            except HfgrowError as exc:
                raise HfgrowError(f"Domain '{name}': {exc}") from None
            stats[name] = {**h, "tokens": int(value.tokens)}
        else:
            if int(value.get("tokens", 1)) <= 0:
                raise HfgrowError(f"Domain '{name}' is empty (no tokens).")
            stats[name] = {k: float(value[k]) for k in MEASURES} | {"tokens": int(value.get("tokens", 0))}
    props = _softmax([stats[n][measure] for n in stats])
    mixture = {
        "measure": measure,
        "domains": {
            name: {"proportion": float(r), "se": s["se"], "je": s["je"], "ce": s["ce"], "tokens": s["tokens"]}
            for (name, s), r in zip(stats.items(), props)
        },
    }
    return validate_mixture(mixture)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_object(line: bytes | str, where: str) -> Any:
    try:
        return json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise HfgrowError(f"{where} is not valid JSON ({exc.msg}).") from None
    except _DuplicateKey as exc:
        raise HfgrowError(f"{where} names '{exc.args[0]}' twice.") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_mixture(mixture: Any, where: str = "mixture") -> dict:
    """Check a mixture object; return it. ≥2 domains, proportions > 0 summing to 1 within 1e-6.

    Example:
        >>> validate_mixture({"measure": "ce", "domains": {"a": {"proportion": 0.5}}})
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: The mixture needs at least 2 domains (got 1).
    """
    if not isinstance(mixture, dict) or not isinstance(mixture.get("domains"), dict):
        raise HfgrowError(f'The {where} is not a mixture: it needs a "domains" object.')
    if not isinstance(mixture.get("measure", ""), str):
        raise HfgrowError(f'The {where} has a "measure" that is not a string.')
    domains = mixture["domains"]
    if len(domains) < 2:
        raise HfgrowError(f"The {where} needs at least 2 domains (got {len(domains)}).")
    total = 0.0
    for name, entry in domains.items():
        if not name:
            raise HfgrowError(f"The {where} has a domain with an empty name.")
        r = entry.get("proportion") if isinstance(entry, dict) else None
        if not _number(r) or r <= 0:
            raise HfgrowError(f"The {where} gives domain '{name}' no positive proportion.")
        total += r
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise HfgrowError(f"The {where}'s proportions sum to {total:.9g}, not 1.")
    return mixture


def _write_json(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise HfgrowError(f"{what.capitalize()} file '{path}' does not exist.")
    return _json_object(path.read_bytes(), f"{what.capitalize()} file '{path}'")


def save_mixture(mixture: dict, path: str | os.PathLike) -> None:
    """Validate and write a mixture JSON (atomically).

    Example:
        >>> save_mixture(entropy_mixture(counts), "mix.json")          # doctest: +SKIP
    """
    _write_json(validate_mixture(mixture), path)


def load_mixture(path: str | os.PathLike) -> dict:
    """Read and validate a mixture JSON (unique names, ≥2 domains, proportions > 0 summing to 1).

    Example:
        >>> load_mixture("mix.json")["domains"]["code"]["proportion"]  # doctest: +SKIP
        0.41
    """
    return validate_mixture(_read_json(path, "mixture"), f"mixture in '{path}'")


def mixture_proportions(mixture: dict) -> dict[str, float]:
    """``{name: proportion}`` of a mixture object.

    Example:
        >>> mixture_proportions({"domains": {"a": {"proportion": 0.25}, "b": {"proportion": 0.75}}})
        {'a': 0.25, 'b': 0.75}
    """
    return {name: float(entry["proportion"]) for name, entry in mixture["domains"].items()}


# ---------------------------------------------------------------------------------------------
# The BiMix law: observations, fitting, prediction
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One evaluation: the loss on ``domain`` after ``step`` steps of training on ``mixture``."""

    mixture: dict[str, float]
    step: float
    domain: str
    loss: float

    @property
    def proportion(self) -> float:
        """r of the observed domain in its mixture."""
        return self.mixture[self.domain]

    def to_json(self) -> dict:
        return {"mixture": self.mixture, "step": self.step, "domain": self.domain, "loss": self.loss}


def parse_observation(obj: Any, where: str = "observation") -> Observation:
    """Validate one observation object (see the module docstring for the format).

    Example:
        >>> parse_observation({"mixture": {"a": 0.5, "b": 0.5}, "step": 100, "domain": "a", "loss": 3.2}).proportion
        0.5
    """
    if not isinstance(obj, dict):
        raise HfgrowError(f"{where} is not a JSON object.")
    missing = [k for k in ("mixture", "step", "domain", "loss") if k not in obj]
    if missing:
        raise HfgrowError(f"{where} has no \"{missing[0]}\" field.")
    mixture, step, domain, loss = obj["mixture"], obj["step"], obj["domain"], obj["loss"]
    if not isinstance(mixture, dict) or not mixture:
        raise HfgrowError(f'{where}: "mixture" is not a non-empty object of proportions.')
    for name, r in mixture.items():
        if not _number(r) or r < 0:
            raise HfgrowError(f"{where}: the proportion of '{name}' is not a number ≥ 0.")
    total = float(sum(mixture.values()))
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise HfgrowError(f"{where}: the mixture's proportions sum to {total:.9g}, not 1.")
    if not isinstance(domain, str) or domain not in mixture:
        raise HfgrowError(f"{where}: domain {domain!r} is not in its mixture.")
    if not _number(step) or step <= 0:
        raise HfgrowError(f"{where}: step must be a positive number.")
    if not _number(loss) or loss <= 0:
        raise HfgrowError(f"{where}: loss must be a positive number.")
    return Observation({k: float(v) for k, v in mixture.items()}, float(step), domain, float(loss))


def load_observations(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Observation]:
    """Read observation JSONL files (blank lines skipped).

    Example:
        >>> obs = load_observations(["run1/eval.jsonl", "run2/eval.jsonl"])   # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Observation] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise HfgrowError(f"Observation log '{path}' does not exist.")
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    where = f"{path}:{lineno}"
                    out.append(parse_observation(_json_object(line, where), where))
    return out


def save_observations(observations: Iterable[Observation], path: str | os.PathLike) -> None:
    """Write observations as JSONL (the format ``load_observations`` and the trainer use)."""
    with open(path, "w", encoding="utf-8") as f:
        for ob in observations:
            f.write(json.dumps(ob.to_json()) + "\n")


def split_holdout(
    observations: Sequence[Observation], fraction: float, by: str = "mixture", seed: int = 0
) -> tuple[list[Observation], list[Observation]]:
    """Split observations into (train, held out).

    ``by="mixture"``: hold out round(fraction × #mixtures) whole mixtures (at least 1), chosen at
    random with ``seed`` — the paper's "unseen mixtures" test. ``by="step"``: hold out the latest
    fraction of distinct steps (extrapolation in s). ``by="random"``: random observations.

    Example:
        >>> train, held = split_holdout(obs, 0.25)                          # doctest: +SKIP
    """
    if not 0 < fraction < 1:
        raise HfgrowError(f"The holdout fraction must be between 0 and 1 (got {fraction}).")
    rng = random.Random(seed)
    if by == "mixture":
        keys = sorted({tuple(sorted(o.mixture.items())) for o in observations})
        if len(keys) < 2:
            raise HfgrowError("Holding out mixtures needs observations from at least 2 mixtures.")
        n = min(len(keys) - 1, max(1, round(fraction * len(keys))))
        held_keys = set(rng.sample(keys, n))
        is_held = [tuple(sorted(o.mixture.items())) in held_keys for o in observations]
    elif by == "step":
        steps = sorted({o.step for o in observations})
        n = min(len(steps) - 1, max(1, round(fraction * len(steps))))
        cut = steps[-n]
        is_held = [o.step >= cut for o in observations]
    elif by == "random":
        idx = list(range(len(observations)))
        held = set(rng.sample(idx, max(1, round(fraction * len(idx)))))
        is_held = [i in held for i in idx]
    else:
        raise HfgrowError(f"Unknown holdout split '{by}': use mixture, step or random.")
    train = [o for o, h in zip(observations, is_held) if not h]
    held = [o for o, h in zip(observations, is_held) if h]
    return train, held


@dataclass
class DomainLaw:
    """L(r, s) = A / r^alpha · (B / s^beta + C) for one domain, with fit diagnostics in ``fit``."""

    A: float
    alpha: float
    B: float
    beta: float
    C: float
    fit: dict[str, Any] = field(default_factory=dict)

    def predict(self, r: float | np.ndarray, s: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss at proportion ``r`` after ``s`` steps (numpy broadcasting).

        Example:
            >>> DomainLaw(A=2.0, alpha=0.1, B=4.0, beta=0.5, C=1.0).predict(1.0, 100.0)
            2.8
        """
        r = np.asarray(r, dtype=np.float64)
        s = np.asarray(s, dtype=np.float64)
        out = self.A * r ** (-self.alpha) * (self.B * s ** (-self.beta) + self.C)
        return float(out) if out.ndim == 0 else out

    def to_json(self) -> dict:
        return {"A": self.A, "alpha": self.alpha, "B": self.B, "beta": self.beta, "C": self.C, "fit": self.fit}


@dataclass
class Law:
    """A fitted BiMix law: one :class:`DomainLaw` per domain."""

    domains: dict[str, DomainLaw]

    def predict(self, domain: str, r: float | np.ndarray, s: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss of ``domain`` at proportion ``r`` after ``s`` steps.

        Example:
            >>> law = Law({"a": DomainLaw(2.0, 0.1, 4.0, 0.5, 1.0)})
            >>> law.predict("a", 1.0, 100.0)
            2.8
        """
        if domain not in self.domains:
            raise HfgrowError(f"The law has no domain '{domain}' (it has {', '.join(self.domains)}).")
        return self.domains[domain].predict(r, s)

    def total(self, proportions: Mapping[str, float], steps: float) -> float:
        """Σ_i L_i(r_i, steps), the quantity :func:`optimize_mixture` minimises."""
        return float(sum(self.predict(name, proportions[name], steps) for name in self.domains))

    def to_json(self) -> dict:
        return {
            "law": "bimix",
            "formula": "L(r, s) = A / r**alpha * (B / s**beta + C)",
            "domains": {name: d.to_json() for name, d in self.domains.items()},
        }


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - pred) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else float("-inf"))


def _metrics(law: DomainLaw, r: np.ndarray, s: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    pred = law.predict(r, s)
    return {"n": int(loss.size), "r2": _r2(loss, pred), "mre": float(np.mean(np.abs(pred - loss) / loss))}


# parameter vector θ = (alpha, beta, u = log(A·B), v = log(A·C));  log L = -α log r + logaddexp(u - β log s, v)
_LOWER = np.array([0.0, 0.0, -60.0, -60.0])
_UPPER = np.array([10.0, 10.0, 60.0, 60.0])


def _log_model(theta: np.ndarray, log_r: np.ndarray, log_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alpha, beta, u, v = theta
    t = u - beta * log_s
    lse = np.logaddexp(t, v)
    return -alpha * log_r + lse, np.exp(t - lse), np.exp(v - lse)


def _initial_guesses(log_r: np.ndarray, log_s: np.ndarray, loss: np.ndarray, keep: int = 4) -> list[np.ndarray]:
    """Grid over (α, β); (A·B, A·C) by linear least squares in relative error for each; best ``keep``."""
    alphas = np.array([0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0])
    betas = np.geomspace(0.01, 3.0, 25)
    log_loss = np.log(loss)
    found: list[tuple[float, np.ndarray]] = []
    for alpha in alphas:
        target = loss * np.exp(alpha * log_r)  # = b s^-β + c  if α is right
        for beta in betas:
            x = np.exp(-beta * log_s)
            w = 1.0 / target  # relative error weights
            X = np.stack([x * w, w], axis=1)
            coef, *_ = np.linalg.lstsq(X, target * w, rcond=None)
            b, c = coef
            if c <= 0:  # keep both terms positive: refit with the other term only
                b, c = max(float((x * target).sum() / (x * x).sum()), 1e-12), 1e-12 * target.mean()
            elif b <= 0:
                b, c = 1e-12 * target.mean(), float(target.mean())
            theta = np.array([alpha, beta, math.log(b), math.log(c)])
            theta = np.clip(theta, _LOWER, _UPPER)
            pred, _, _ = _log_model(theta, log_r, log_s)
            found.append((float(((pred - log_loss) ** 2).sum()), theta))
    found.sort(key=lambda t: t[0])
    return [theta for _, theta in found[:keep]]


def fit_domain(r: Sequence[float], s: Sequence[float], loss: Sequence[float], name: str = "domain") -> DomainLaw:
    """Fit one domain's law to arrays of proportions, steps and losses.

    Least squares on log L (relative error) with ``scipy.optimize.least_squares(method="trf")``,
    bounds α, β ∈ [0, 10], an analytic Jacobian, and restarts from the best points of an (α, β)
    grid. Needs ≥5 observations, ≥2 distinct proportions and ≥3 distinct steps. The result is in
    the gauge C = 1.

    Example:
        >>> law = fit_domain(r, s, loss, "code")                        # doctest: +SKIP
        >>> law.fit["mre"] < 0.01                                       # doctest: +SKIP
        True
    """
    from scipy.optimize import least_squares

    r_arr, s_arr, l_arr = (np.asarray(v, dtype=np.float64) for v in (r, s, loss))
    if r_arr.size < MIN_OBSERVATIONS:
        raise HfgrowError(f"Domain '{name}' has {r_arr.size} observations; fitting needs at least {MIN_OBSERVATIONS}.")
    if np.unique(r_arr).size < 2:
        raise HfgrowError(f"Domain '{name}' is observed at a single proportion; fitting alpha needs at least 2 mixtures that differ in it.")
    if np.unique(s_arr).size < 3:
        raise HfgrowError(f"Domain '{name}' is observed at {np.unique(s_arr).size} distinct steps; fitting needs at least 3.")
    log_r, log_s, log_l = np.log(r_arr), np.log(s_arr), np.log(l_arr)

    def residuals(theta: np.ndarray) -> np.ndarray:
        return _log_model(theta, log_r, log_s)[0] - log_l

    def jacobian(theta: np.ndarray) -> np.ndarray:
        _, pb, pc = _log_model(theta, log_r, log_s)
        return np.stack([-log_r, -log_s * pb, pb, pc], axis=1)

    best = None
    for theta0 in _initial_guesses(log_r, log_s, l_arr):
        theta0 = np.clip(theta0, _LOWER + 1e-9, _UPPER - 1e-9)
        res = least_squares(
            residuals, theta0, jac=jacobian, bounds=(_LOWER, _UPPER), method="trf",
            x_scale="jac", ftol=1e-14, xtol=1e-14, gtol=1e-14, max_nfev=2000,
        )  # fmt: skip
        if best is None or res.cost < best.cost:
            best = res
    alpha, beta, u, v = (float(x) for x in best.x)
    law = DomainLaw(A=math.exp(v), alpha=alpha, B=math.exp(u - v), beta=beta, C=1.0)
    law.fit = _metrics(law, r_arr, s_arr, l_arr)
    return law


def fit_law(
    observations: Sequence[Observation], *, holdout: float = 0.0, holdout_by: str = "mixture", seed: int = 0
) -> Law:
    """Fit the BiMix law for every domain that has observations.

    Observations whose domain has proportion 0 in its mixture are left out (the law is infinite at
    r = 0); their number is in ``law.domains[name].fit["skipped_r0"]``. With ``holdout`` > 0 a
    part of the observations (see :func:`split_holdout`) is kept out of the fit and each domain's
    ``fit["holdout"]`` gives n, R² and mean relative error on it.

    Example:
        >>> law = fit_law(load_observations("eval.jsonl"), holdout=0.2)   # doctest: +SKIP
        >>> law.domains["code"].fit                                        # doctest: +SKIP
        {'n': 40, 'r2': 0.998, 'mre': 0.002, 'holdout': {'n': 10, 'r2': 0.99, 'mre': 0.004}}
    """
    usable = [o for o in observations if o.proportion > 0]
    skipped: dict[str, int] = {}
    for o in observations:
        if o.proportion <= 0:
            skipped[o.domain] = skipped.get(o.domain, 0) + 1
    if not usable:
        raise HfgrowError("There are no observations to fit (none with a positive proportion of its domain).")
    train, held = (usable, []) if not holdout else split_holdout(usable, holdout, holdout_by, seed)
    names = list(dict.fromkeys(o.domain for o in usable))
    domains: dict[str, DomainLaw] = {}
    for name in names:
        rows = [o for o in train if o.domain == name]
        if held and len(rows) < MIN_OBSERVATIONS:
            raise HfgrowError(
                f"Domain '{name}' keeps {len(rows)} observations after the holdout; fitting needs at least {MIN_OBSERVATIONS}."
            )
        law = fit_domain([o.proportion for o in rows], [o.step for o in rows], [o.loss for o in rows], name)
        if held:
            hrows = [o for o in held if o.domain == name]
            if hrows:
                law.fit["holdout"] = _metrics(
                    law, np.array([o.proportion for o in hrows]), np.array([o.step for o in hrows]), np.array([o.loss for o in hrows])
                )
        if skipped.get(name):
            law.fit["skipped_r0"] = skipped[name]
        domains[name] = law
    return Law(domains)


def save_law(law: Law, path: str | os.PathLike) -> None:
    """Write a law JSON (atomically)."""
    _write_json(law.to_json(), path)


def load_law(path: str | os.PathLike) -> Law:
    """Read and validate a law JSON: each domain needs finite A > 0, alpha ≥ 0, B ≥ 0, beta ≥ 0, C ≥ 0.

    Example:
        >>> law = load_law("law.json")                                     # doctest: +SKIP
        >>> law.predict("code", 0.3, 10_000)                               # doctest: +SKIP
        2.41
    """
    obj = _read_json(path, "law")
    if not isinstance(obj, dict) or not isinstance(obj.get("domains"), dict) or not obj["domains"]:
        raise HfgrowError(f'Law file \'{path}\' has no "domains" object.')
    domains: dict[str, DomainLaw] = {}
    for name, d in obj["domains"].items():
        if not isinstance(d, dict):
            raise HfgrowError(f"Law file '{path}': domain '{name}' is not an object.")
        for key in ("A", "alpha", "B", "beta", "C"):
            if not _number(d.get(key)) or d[key] < 0 or (key == "A" and d[key] == 0):
                raise HfgrowError(f"Law file '{path}': domain '{name}' needs a finite {key} {'> 0' if key == 'A' else '≥ 0'}.")
        if d["B"] + d["C"] <= 0:
            raise HfgrowError(f"Law file '{path}': domain '{name}' has B = C = 0.")
        domains[name] = DomainLaw(float(d["A"]), float(d["alpha"]), float(d["B"]), float(d["beta"]), float(d["C"]), dict(d.get("fit", {})))
    return Law(domains)


# ---------------------------------------------------------------------------------------------
# Optimising the mixture
# ---------------------------------------------------------------------------------------------


def optimize_mixture(law: Law, steps: float, floor: float = 1e-3) -> dict[str, float]:
    """r* = argmin Σ_i L_i(r_i, steps) subject to Σ r_i = 1 and r_i ≥ floor > 0.

    With K_i = B_i·S^-β_i + C_i each term A_i·K_i·r^-α_i is convex, so the KKT conditions give the
    exact optimum: r_i(λ) = max(floor, (α_i·A_i·K_i / λ)^(1/(1+α_i))) with λ chosen (by a bracketed
    root search on log λ) so that Σ r_i(λ) = 1. Domains with α_i = 0 gain nothing from data and
    get the floor; if every α_i = 0 the objective is flat and the uniform mixture is returned.

    Example:
        >>> law = Law({"a": DomainLaw(1.0, 0.5, 1.0, 0.5, 1.0), "b": DomainLaw(4.0, 0.5, 1.0, 0.5, 1.0)})
        >>> {k: round(v, 4) for k, v in optimize_mixture(law, 1000).items()}   # r ∝ A^(2/3)
        {'a': 0.2841, 'b': 0.7159}
    """
    from scipy.optimize import brentq

    names = list(law.domains)
    n = len(names)
    if n < 2:
        raise HfgrowError(f"Optimising a mixture needs a law with at least 2 domains (got {n}).")
    if not (_number(steps) and steps > 0):
        raise HfgrowError(f"steps must be a positive number (got {steps}).")
    if not (_number(floor) and 0 < floor and floor * n < 1):
        raise HfgrowError(f"The floor must be above 0 and below 1/{n} for {n} domains (got {floor}).")
    alpha = np.array([law.domains[k].alpha for k in names])
    K = np.array([law.domains[k].B * steps ** (-law.domains[k].beta) + law.domains[k].C for k in names])
    weight = alpha * np.array([law.domains[k].A for k in names]) * K
    active = weight > 0
    if not active.any():
        return {k: 1.0 / n for k in names}
    log_w = np.log(weight[active])
    a1 = alpha[active] + 1.0
    lo_floor = math.log(floor)

    def proportions(log_lam: float) -> np.ndarray:
        r = np.full(n, floor)
        r[active] = np.exp(np.clip((log_w - log_lam) / a1, lo_floor, 0.0))
        return r

    def excess(log_lam: float) -> float:
        return float(proportions(log_lam).sum() - 1.0)

    lo = float(log_w.min()) - 1.0  # every active r_i clipped at 1: sum ≥ 1
    hi = float((log_w - a1 * lo_floor).max()) + 1.0  # every r_i at the floor: sum = n·floor < 1
    log_lam = brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    r = proportions(log_lam)
    free = r > floor
    r[free] += (1.0 - r.sum()) / free.sum()  # remove the root-finder's last ~1e-15
    return {k: float(v) for k, v in zip(names, r)}


def law_mixture(law: Law, steps: float, proportions: Mapping[str, float], floor: float | None = None) -> dict:
    """The mixture JSON for optimised proportions (``"measure": "law"``, with predicted losses).

    Example:
        >>> m = law_mixture(law, 10_000, optimize_mixture(law, 10_000))     # doctest: +SKIP
        >>> save_mixture(m, "mix.json")                                      # doctest: +SKIP
    """
    out: dict[str, Any] = {"measure": "law", "steps": steps}
    if floor is not None:
        out["floor"] = floor
    out["domains"] = {
        name: {"proportion": float(proportions[name]), "predicted_loss": float(law.predict(name, proportions[name], steps))}
        for name in law.domains
    }
    return validate_mixture(out)
