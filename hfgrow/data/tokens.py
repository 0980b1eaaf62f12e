"""Token folders: text tokenized once, read as memory-mapped fixed-length windows by every rank.

``hfgrow tokenize`` writes, and ``--data TOKEN_FOLDER`` reads, this layout::

    OUT/tokens.json              the index (written last: its presence marks the folder complete)
    OUT/NAME/000000.bin          flat little-endian uint16 token ids (uint32 when the vocabulary
    OUT/NAME/000000.docs.npy     has ≥ 65536 ids); document ends within the shard (int64, after EOS)
    OUT/NAME/000000.json         the shard's record: reader positions before/after it, counts
    OUT/.tokenize.json           the request (data, tokenizer hash, shard size) while unfinished

The tokens are exactly :func:`hfgrow.data.tokenization.token_stream` of each domain's documents (the
one rule: the tokenizer's BOS, if it adds one, before every document and EOS after it); the index
records the token and document counts per domain and shard, the tokenizer's name, a SHA-256 of its
vocabulary (ids, EOS id), the BOS ids put before every document (``bos``), and the dtype.

Why flat memmapped shards (and not ``datasets`` Arrow or litdata): training cuts each domain's
stream into fixed windows and wants window *w* in O(1) without decoding anything; a flat array
gives that with ``numpy.memmap`` and the page cache, no dependency, and the same layout Megatron,
nanoGPT and OLMo read. Arrow stores one row per document (windows then cross rows: offset
arithmetic on top of a heavier format); litdata brings its own chunk shuffling, state and
distributed sampler, which would replace, not serve, the deterministic per-sequence mixture and
the small JSON data position checkpoints save.

**Writing** (:func:`tokenize_to_folder`): the main process reads documents through
:func:`hfgrow.data.specs.open_domain` (one reader for every file type and ``hf:``), cuts them into
shards of about ``shard_chars`` characters and hands each shard to a process pool that tokenizes
it with :class:`hfgrow.data.tokenization.Tokenize` and writes it atomically (temporary names, record
last). Shard boundaries depend only on the text, so the bytes are the same for any worker count.
Interrupted, a rerun of the same command keeps every finished shard and goes on from the reader
position the last contiguous one recorded.

**Reading** (:class:`TokenMixture`): a domain of T tokens has ``T // seq_len`` windows; the first
``eval_sequences`` are held out, the rest are visited once per epoch in a keyed pseudo-random order
(:func:`permute`, a Feistel bijection: O(1) memory at any size, any window computable alone). The
domain of global sequence k is drawn from (seed, k) alone (:func:`hfgrow.data.packing.draw_domains`),
and the j-th sequence a domain gives is window ``permute(j mod n, key=(seed, domain, epoch))``, so
global sequence k is the same for any number of processes and each rank reads only its own
sequences. The data position is ``{"drawn": k, "domains": {NAME: {"taken": j}}}``.

Example:
    >>> tokenize_to_folder(parse_specs(["web=web.jsonl"]), "gpt2", "tok/", workers=8)   # doctest: +SKIP
    >>> folder = TokenFolder("tok/")                                                    # doctest: +SKIP
    >>> folder.domain("web").tokens(0, 5)                                               # doctest: +SKIP
    array([  464,  3797,  3332,   319, 50256], dtype=uint16)
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hfgrow.io.folder import Folder
from hfgrow.io.output import atomic_write
from hfgrow.data.packing import Batch, check_domains, domain_key, draw_domains, reading_position
from hfgrow.data.specs import DomainSpec, open_domain
from hfgrow.data.token_folder import (FORMAT, INDEX_FILE, PROGRESS_FILE, VERSION, TokenDomain, read_index,
                                      tokenizer_fingerprint)
from hfgrow.data.tokenization import Tokenize, tokenizer_vocab_size
from hfgrow.errors import HfgrowError

__all__ = ["tokenize_to_folder", "permute", "TokenMixture"]

SHARD_CHARS = 64_000_000  # text per shard: ~16M tokens, 32 MB of uint16; a worker holds one at a time


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


_WORKER: dict = {}  # the Tokenize of this (worker) process


def _init_worker(tokenizer: Any, single: bool) -> None:
    if not single:  # one Rust thread pool per worker, not N: the pool is the parallelism
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if hasattr(tokenizer, "model_max_length"):
        tokenizer.model_max_length = int(1e30)  # we never truncate; silence the length warning
    _WORKER["tokenize"] = Tokenize(tokenizer)


def _write_shard(base: str, texts: list[str], ends: list[bool], dtype: str, record: dict) -> dict:
    """Tokenize one shard's texts by the token-stream rule and write ``base``.bin/.docs.npy/.json."""
    ids = _WORKER["tokenize"].per_text(texts, ends)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and int(flat.max()) > np.iinfo(dtype).max:
        raise HfgrowError(f"token id {int(flat.max())} does not fit {dtype}; the tokenizer's vocabulary size is wrong.")
    cum = np.cumsum(lengths)
    doc_ends = cum[np.asarray(ends, dtype=bool)] if len(ends) else np.zeros(0, dtype=np.int64)
    final = Path(base)
    docs = io.BytesIO()
    np.save(docs, doc_ends.astype(np.int64))
    record = {**record, "tokens": int(flat.size), "documents": int(doc_ends.size),
              "max_id": int(flat.max()) if flat.size else -1}
    # the record last: its presence marks the shard complete
    atomic_write(final.with_name(final.name + ".bin"), flat.astype(dtype).tobytes())
    atomic_write(final.with_name(final.name + ".docs.npy"), docs.getvalue())
    atomic_write(final.with_name(final.name + ".json"), record)
    return record


def _batches(source, start: list, shard_chars: int) -> Iterator[tuple[list[str], list[bool], list, list]]:
    """(texts, ends, start position, end position) of consecutive shards read from ``start``."""
    texts: list[str] = []
    ends: list[bool] = []
    size, first, pos = 0, list(start), list(start)
    for text, end, pos in source.iter_units(start):
        texts.append(text)
        ends.append(end)
        size += len(text)
        if size >= shard_chars:
            yield texts, ends, first, list(pos)
            texts, ends, size, first = [], [], 0, list(pos)
    if texts:
        yield texts, ends, first, list(pos)


def _request(domains: list[DomainSpec], fingerprint: dict, dtype: str, shard_chars: int, text_field: str) -> dict:
    return {"data": {d.name: d.spec for d in domains}, "tokenizer": fingerprint, "dtype": dtype,
            "shard_chars": shard_chars, "text_field": text_field}


def _same_request(a: dict, b: dict) -> bool:
    keys = ("data", "dtype", "shard_chars", "text_field")
    return all(a.get(k) == b.get(k) for k in keys) and a["tokenizer"]["vocab_hash"] == b["tokenizer"]["vocab_hash"] \
        and a["tokenizer"].get("bos", []) == b["tokenizer"].get("bos", [])


def _done_shards(out: Path, name: str) -> dict[int, dict]:
    """Shard number -> record of the finished shards of domain ``name`` in ``out``; leftover temporaries and
    records that are not ours removed (the shard is then tokenized again)."""
    done: dict[int, dict] = {}
    folder = out / name
    if not folder.is_dir() or folder.is_symlink():
        return done
    files = Folder(out)
    for p in folder.iterdir():
        if ".hfgrow-tmp-" in p.name or ".tmp-" in p.name:
            p.unlink()  # a shard an interrupted run (of this or an earlier hfgrow) was writing
        elif p.name.endswith(".json") and p.name[:-5].isdigit():
            try:
                record = files.read_json(f"{name}/{p.name}", "shard record")
                if all(isinstance(record.get(k), int) and record[k] >= 0 for k in ("shard", "tokens", "documents")):
                    done[int(p.name[:-5])] = record
                    continue
            except HfgrowError:
                pass
            p.unlink()
    return done


def _debug_kill(done: int) -> None:
    """Fault injection for tests: HFGROW_DEBUG_TOKENIZE_KILL_AFTER=N kills the run after N shards."""
    if os.environ.get("HFGROW_DEBUG_TOKENIZE_KILL_AFTER") == str(done):
        os.kill(os.getpid(), signal.SIGKILL)


def tokenize_to_folder(
    domains: list[DomainSpec],
    tokenizer: Any,
    out: str | os.PathLike,
    *,
    tokenizer_name: str | None = None,
    workers: int = 1,
    shard_chars: int = SHARD_CHARS,
    text_field: str = "text",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Tokenize every domain into the token folder ``out``; return its index.

    ``workers`` > 1 tokenizes shards in that many processes (``spawn``: safe beside Rust and CUDA
    thread pools). A rerun after an interruption keeps the finished shards; a finished folder made
    from the same request is returned as is. ``progress(domain, tokens, documents)`` is called as
    shards finish.

    Raises:
        HfgrowError: ``out`` holds another request's tokens or other files, a domain has no text, a
            domain name starts with ".", or a reader error (see :mod:`hfgrow.data.text`).

    Example:
        >>> index = tokenize_to_folder(parse_specs(["web=web.jsonl"]), tok, "tok/", workers=4)   # doctest: +SKIP
        >>> index["domains"]["web"]["tokens"]                                                  # doctest: +SKIP
        1048576
    """
    out = Path(out).expanduser()
    if not domains:
        raise HfgrowError("no data to tokenize: give at least one --data PATH or NAME=PATH.")
    for d in domains:
        if d.part is not None:
            raise HfgrowError(f"'{d.spec}' is a token folder already; give text files, folders or hf: datasets.")
        if d.name.startswith("."):
            raise HfgrowError(f"the domain name '{d.name}' starts with '.'; name it with NAME=PATH.")
    if shard_chars < 1:
        raise HfgrowError(f"the shard size must be positive (got {shard_chars}).")
    fingerprint = tokenizer_fingerprint(tokenizer, tokenizer_name)
    dtype = "uint16" if tokenizer_vocab_size(tokenizer) <= 1 << 16 else "uint32"
    request = _request(domains, fingerprint, dtype, shard_chars, text_field)
    sources = {d.name: open_domain(d, text_field) for d in domains}  # missing files fail before any work

    if (out / INDEX_FILE).is_file():
        index = read_index(out)
        if _same_request(index["request"], request):
            return index
        raise HfgrowError(f"'{out}' holds tokens of other data or another tokenizer; choose another OUT.")
    if (out / PROGRESS_FILE).is_file():
        if not _same_request(Folder(out).read_json(PROGRESS_FILE, "tokenize progress file"), request):
            raise HfgrowError(f"'{out}' holds an unfinished tokenize run of other data or another tokenizer; "
                              "rerun that command or choose another OUT.")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HfgrowError(f"'{out}' exists and is not a token folder; choose a new OUT.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / PROGRESS_FILE, request)

    pool = None
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(tokenizer, False))
    else:
        _init_worker(tokenizer, True)
    finished = 0
    records: dict[str, list[dict]] = {}

    def finish(name: str, done: dict[int, dict], j: int, record: dict) -> None:
        nonlocal finished
        done[j] = record
        finished += 1
        _debug_kill(finished)
        if progress is not None:
            progress(name, record["tokens"], record["documents"])

    try:
        for d in domains:
            folder = out / d.name
            done = _done_shards(out, d.name)
            folder.mkdir(exist_ok=True)
            k = 0  # the first shard missing from the contiguous finished prefix
            while k in done:
                k += 1
            if progress is not None and k:
                progress(d.name, sum(done[i]["tokens"] for i in range(k)), sum(done[i]["documents"] for i in range(k)))
            start = done[k - 1]["end"] if k else sources[d.name].start()
            pending: list = []
            for texts, ends, first, last in _batches(sources[d.name], start, shard_chars):
                old = done.get(k)
                if old is None or old["start"] != first or old["end"] != last:
                    record = {"shard": k, "start": first, "end": last}
                    args = (str(folder / f"{k:06d}"), texts, ends, dtype, record)
                    if pool is None:
                        finish(d.name, done, k, _write_shard(*args))
                    else:
                        pending.append((k, pool.submit(_write_shard, *args)))
                k += 1
                while pending and (pending[0][1].done() or len(pending) >= 2 * workers):  # in order, bounded
                    j, future = pending.pop(0)
                    finish(d.name, done, j, future.result())
            for j, future in pending:
                finish(d.name, done, j, future.result())
            for j in [j for j in done if j >= k]:  # shards of a longer, earlier text: not ours
                for suffix in (".bin", ".docs.npy", ".json"):
                    (folder / f"{j:06d}{suffix}").unlink(missing_ok=True)
                del done[j]
            records[d.name] = [done[j] for j in range(k)]
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    if pool is not None:
        pool.shutdown(wait=True)

    index = {"format": FORMAT, "version": VERSION, "dtype": dtype, "tokenizer": fingerprint,
             "request": request, "domains": {}}
    for d in domains:
        shards = records[d.name]
        tokens = sum(s["tokens"] for s in shards)
        eos_only = tokens == sum(s["documents"] for s in shards)  # nothing but EOS tokens
        if not tokens or eos_only:
            raise HfgrowError(f"domain '{d.name}' ({d.spec}) contains no text.")
        index["domains"][d.name] = {
            "spec": d.spec, "tokens": tokens, "documents": sum(s["documents"] for s in shards),
            "shards": [{"file": f"{d.name}/{s['shard']:06d}.bin", "tokens": s["tokens"], "documents": s["documents"],
                        "max_id": s.get("max_id")} for s in shards],
        }
    atomic_write(out / INDEX_FILE, index)
    (out / PROGRESS_FILE).unlink()
    return index


# ---------------------------------------------------------------------------------------------
# Reading: a keyed permutation, and the mixture of token domains
# ---------------------------------------------------------------------------------------------

_ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a good 64-bit hash, elementwise."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def permute(i: np.ndarray | Sequence[int] | int, n: int, key: Sequence[int]) -> np.ndarray:
    """The image of ``i`` under a keyed pseudo-random bijection of ``[0, n)``.

    A balanced Feistel network on the smallest even number of bits covering n, with
    cycle-walking (values ≥ n are permuted again until they fall inside): a true permutation,
    computed elementwise, so an epoch of a billion windows needs no billion-entry array and any
    position can be looked up alone (exact resume).

    Example:
        >>> sorted(permute(range(10), 10, key=(0, 1)).tolist()) == list(range(10))
        True
    """
    x = np.atleast_1d(np.asarray(i, dtype=np.uint64))
    if n <= 1:
        return np.zeros_like(x, dtype=np.int64)
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = np.random.default_rng([int(k) & 0xFFFFFFFF for k in key]).integers(
        0, 2**63, size=_ROUNDS, dtype=np.int64).astype(np.uint64)

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> half, v & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << half) | right

    with np.errstate(over="ignore"):
        y = once(x)
        outside = y >= np.uint64(n)
        while outside.any():
            y[outside] = once(y[outside])
            outside = y >= np.uint64(n)
    return y.astype(np.int64)


@dataclass
class _Stream:
    domain: TokenDomain
    first: int  # the first training window (the ones before it are held out)
    n: int  # training windows per epoch
    taken: int = 0  # sequences given so far, all epochs


class TokenMixture:
    """The training data of token-folder domains: each rank reads only its own sequences.

    ``next_batch(n, rank, world)`` returns global sequences ``drawn + rank·n/world`` ... of the
    next ``n``; every rank advances the same position, so the global batch is the same for any
    number of processes (see the module docstring).

    Example:
        >>> mix = TokenMixture({"web": (folder.domain("web"), 16)}, {"web": 1.0}, seq_len=2048, seed=0)  # doctest: +SKIP
        >>> [i for i, _, _ in mix.next_batch(8, rank=1, world=2)]                                      # doctest: +SKIP
        [4, 5, 6, 7]
    """

    def __init__(self, domains: dict[str, tuple[TokenDomain, int]], weights: dict[str, float], seq_len: int,
                 seed: int):
        self.names = list(domains)
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.streams: dict[str, _Stream] = {}
        for name, (domain, held_out) in domains.items():
            n = domain.n_windows(seq_len) - held_out
            if n <= 0:
                raise HfgrowError(
                    f"domain '{name}' ({domain.folder.path}) has {domain.n_tokens} tokens: no window of --seq-len "
                    f"{seq_len} is left for training after the {held_out} held-out sequences; add data or lower "
                    "--eval-sequences.")
            self.streams[name] = _Stream(domain, held_out, n)
        self.p = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = self.p / self.p.sum()
        self.drawn = 0

    def _window(self, name: str, j: np.ndarray) -> np.ndarray:
        """Window numbers of the ``j``-th sequences of a domain (epochs run on)."""
        s = self.streams[name]
        epoch, pos = j // s.n, j % s.n
        out = np.empty_like(j)
        for e in np.unique(epoch):
            sel = epoch == e
            out[sel] = s.first + permute(pos[sel], s.n, (self.seed, domain_key(name), int(e)))
        return out

    def next_batch(self, n: int, rank: int = 0, world: int = 1) -> Batch:
        """This rank's sequences of the next ``n`` global ones: (global index, domain, tokens)."""
        if n % world:
            raise HfgrowError(f"a global batch of {n} sequences does not split over {world} processes.")
        choice = draw_domains(self.seed, self.p, self.drawn, n)
        per = n // world
        lo, hi = rank * per, (rank + 1) * per
        out = Batch()
        rows = np.empty((per, self.seq_len), dtype=np.int64)
        for c, name in enumerate(self.names):
            mine = choice == c
            if not mine.any():
                continue
            ordinal = self.streams[name].taken + np.cumsum(mine) - 1  # j of each sequence of this domain
            self.streams[name].taken += int(mine.sum())
            sel = np.flatnonzero(mine[lo:hi]) + lo
            if sel.size:
                windows = self._window(name, ordinal[sel])
                dom = self.streams[name].domain
                for k, w in zip(sel, windows):
                    rows[k - lo] = dom.window(int(w), self.seq_len)
        names = [self.names[int(c)] for c in choice[lo:hi]]
        out.extend((self.drawn + lo + k, names[k], rows[k].tolist()) for k in range(per))
        out.ids = rows
        self.drawn += n
        return out

    def state_dict(self) -> dict:
        return {"kind": "tokens", "drawn": self.drawn,
                "domains": {n: {"taken": s.taken} for n, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "tokens":
            raise HfgrowError("the checkpoint was trained on text data, not a token folder; resume it with the "
                              "same --data it was started with.")
        with reading_position("token"):
            check_domains(state, self.streams)
            self.drawn = int(state["drawn"])
            for name, s in self.streams.items():
                s.taken = int(state["domains"][name]["taken"])
