"""Packed training data from text: documents shuffled, tokenized by :mod:`hfgrow.data.tokenization`, cut into sequences.

**Packing.** A domain's documents are shuffled in seeded buffers (:class:`DomainStream`) and
their stream is cut into full ``seq_len`` sequences: no padding anywhere. Several domains are
mixed by drawing, for every sequence slot, a domain with probability equal to its mixture weight.
The draw for global sequence number k depends only on (seed, k) (:func:`draw_domains`), so a run
is deterministic whatever the number of processes, and the whole data position is a small JSON
dict (``state_dict()``): sequences drawn so far plus, per domain, the epoch, the shuffle block
being read (its reader position, see :mod:`hfgrow.data.specs`, and how much of it was used) and
the few tokens waiting in the packing buffer. ``next_batch(n, rank, world)`` returns this rank's
part of the next n global sequences. At scale, a token folder (:mod:`hfgrow.data.tokens`) does
the same from memory-mapped tokens, and each rank reads only its own part.

Held-out evaluation data: the first documents of each domain, enough for ``eval_sequences``
sequences, are set aside and never trained on (unless the domain has explicit eval data).

Example:
    >>> tok = AutoTokenizer.from_pretrained("out/")                                   # doctest: +SKIP
    >>> domains = parse_specs(["web=data/web.jsonl", "code=data/code/"])              # doctest: +SKIP
    >>> data = build_data(domains, tok, seq_len=2048, seed=0, eval_sequences=16)      # doctest: +SKIP
    >>> batch = data.train.next_batch(8)   # 8 (global index, domain, token list)     # doctest: +SKIP
    >>> mine = data.train.next_batch(8, rank=1, world=2)   # global sequences 12..15  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib

import itertools
import zlib

import numpy as np

from hfgrow.data.tokenization import READ_BATCH_UNITS, Tokenize
from hfgrow.errors import HfgrowError

SHUFFLE_DOCS = 4096  # documents per shuffle buffer of the text path
SHUFFLE_CHARS = 32_000_000  # ... and at most about this much text in it (memory stays bounded)
DRAW_BLOCK = 1024  # domain draws are made in fixed blocks of global sequence numbers


# ---------------------------------------------------------------------------------------------
# The token-stream rule
# ---------------------------------------------------------------------------------------------


def domain_key(name: str) -> int:
    """A stable 32-bit number for a domain name: it seeds the domain's own shuffles.

    Example:
        >>> domain_key("web")
        365508689
    """
    return zlib.crc32(name.encode())


def check_domains(state: dict, names) -> None:
    """Refuse a checkpoint's data position whose domains are not this run's (text and token-folder samplers).

    Example:
        >>> check_domains({"domains": {"web": {}}}, ["web", "code"])
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the checkpoint's data domains (web) differ from this run's (code, web).
    """
    if sorted(state["domains"]) != sorted(names):
        raise HfgrowError(f"the checkpoint's data domains ({', '.join(sorted(state['domains']))}) differ from this "
                          f"run's ({', '.join(sorted(names))}).")


@contextlib.contextmanager
def reading_position(kind: str):
    """Inside the block, a data position that lacks a field or holds one of the wrong type is one sentence (a
    checkpoint's position is a file from disk, checked for ranges by hfgrow.train.checkpoints)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        field = f"'{exc.args[0]}' is missing" if isinstance(exc, KeyError) else "a field has the wrong type"
        raise HfgrowError(f"the checkpoint's {kind} data position is damaged ({field}); resume from another "
                          "checkpoint.") from None


def draw_domains(seed: int, p: np.ndarray, start: int, n: int) -> np.ndarray:
    """The domain (index into ``p``) of global sequences ``start .. start+n-1``.

    Sequence k's draw depends only on (seed, k): draws are made in fixed blocks of
    ``DRAW_BLOCK`` sequences, block b with ``default_rng([seed, b])``, so it does not matter how
    the sequences are grouped into batches or split over processes.

    Example:
        >>> d = draw_domains(0, np.array([0.5, 0.5]), 0, 8)
        >>> bool((draw_domains(0, np.array([0.5, 0.5]), 3, 5) == d[3:]).all())
        True
    """
    if len(p) == 1 or n <= 0:
        return np.zeros(max(n, 0), dtype=np.int64)
    first, last = start // DRAW_BLOCK, (start + n - 1) // DRAW_BLOCK
    blocks = [np.random.default_rng([int(seed) & 0xFFFFFFFF, b]).choice(len(p), size=DRAW_BLOCK, p=p)
              for b in range(first, last + 1)]
    flat = np.concatenate(blocks)
    lo = start - first * DRAW_BLOCK
    return flat[lo : lo + n].astype(np.int64)


class DomainStream:
    """Endless stream of packed ``seq_len`` sequences from one opened domain (loops over epochs).

    Documents are shuffled in a seeded buffer: consecutive blocks of ``shuffle_docs`` documents (at
    most about ``SHUFFLE_CHARS`` of text) are read, and block b of epoch e is put in the order
    ``default_rng([seed, domain_key(name), e, b]).permutation``. A document longer than the buffer
    passes through alone, in order, piece by piece. ``shuffle_docs=1`` keeps the file order.

    The position (``state_dict``) is the epoch, where the current block starts, its number, how
    many of its units (documents or pieces) were tokenized, and the tokens waiting: a resumed
    stream re-reads the block, puts it in the same order and skips what was used, so resuming is
    exact and the state stays small.
    """

    def __init__(self, name: str, source, tokenize: Tokenize, seq_len: int, train_start: list,
                 prefix: list[int] | None = None, *, seed: int = 0, shuffle_docs: int = SHUFFLE_DOCS):
        self.name = name
        self.prefix = list(prefix or [])  # tokens left over from the eval split: start of every epoch
        self.source = source
        self.tokenize = tokenize
        self.seq_len = seq_len
        self.train_start = list(train_start)
        self.seed = int(seed)
        self.shuffle_docs = max(1, int(shuffle_docs))
        self.epoch = 0
        self.block_start = list(train_start)
        self.block = 0  # blocks finished this epoch
        self.taken = 0  # units of the current block already tokenized
        self.buffer: list[int] = list(self.prefix)
        self._units = None  # the current block's (text, end) units in order, from ``taken`` on
        self._reader = None  # the source, read up to where the blocks read so far ended
        self._carry: list = []  # units read past the end of the last block (they start the next)
        self._next_start: list | None = None  # the position after the current block

    # -- reading blocks

    def _next_unit(self):
        if self._carry:
            return self._carry.pop(0)
        return next(self._reader, None)

    def _load_block(self) -> bool:
        """Read the block at ``block_start`` and put it in order; False when the epoch is over."""
        if self._reader is None:
            self._reader = iter(self.source.iter_units(self.block_start))
            self._carry = []
        docs: list[list] = []
        doc: list = []
        size = 0
        while len(docs) < self.shuffle_docs and size <= SHUFFLE_CHARS:
            unit = self._next_unit()
            if unit is None:
                break
            doc.append(unit)
            size += len(unit[0])
            if unit[1]:
                docs.append(doc)
                doc = []
        if doc and docs:  # a document cut by the size limit starts the next block
            self._carry = doc + self._carry
            doc = []
        if not docs and not doc:
            return False
        if doc:  # the first document alone is longer than the buffer: it streams through in order
            self._units = self._stream(doc)
        else:
            order = np.random.default_rng([self.seed, domain_key(self.name), self.epoch, self.block]).permutation(
                len(docs)) if len(docs) > 1 else [0]
            units = [(text, end) for i in order for text, end, _ in docs[int(i)]]
            self._next_start = list(docs[-1][-1][2])
            self._units = iter(units[self.taken :])
        return True

    def _stream(self, head: list):
        """The units of one long document from its first pieces ``head`` on, skipping ``taken``."""
        skip = self.taken

        def units():
            for text, end, pos in head:
                yield text, end, pos
            while True:
                unit = self._next_unit()
                if unit is None:
                    return
                yield unit
                if unit[1]:
                    return

        for n, (text, end, pos) in enumerate(units()):
            self._next_start = list(pos)
            if n >= skip:
                yield text, end

    def _fill(self) -> None:
        while len(self.buffer) < self.seq_len:
            if self._units is None and not self._load_block():
                if self.block == 0 and not self.prefix:  # a whole epoch without a document
                    raise HfgrowError(f"domain {self.name!r} has no training data left after the eval split.")
                self.epoch += 1
                self.block, self.taken = 0, 0
                self.block_start = list(self.train_start)
                self.buffer.extend(self.prefix)
                self._reader = None
                continue
            batch = list(itertools.islice(self._units, READ_BATCH_UNITS))
            if batch:
                self.buffer.extend(self.tokenize([t for t, _ in batch], [e for _, e in batch]))
                self.taken += len(batch)
            if len(batch) < READ_BATCH_UNITS:  # the block is used up
                self._units = None
                self.block_start = list(self._next_start)
                self.block += 1
                self.taken = 0

    def next_sequence(self) -> list[int]:
        self._fill()
        seq = self.buffer[: self.seq_len]
        del self.buffer[: self.seq_len]
        return seq

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "block_start": list(self.block_start), "block": self.block,
                "taken": self.taken, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        if "block_start" not in state:
            raise HfgrowError("the checkpoint's data position is from an older hfgrow (documents were not "
                              "shuffled then); start a new run.")
        self.epoch = int(state["epoch"])
        self.block_start = list(state["block_start"])
        self.block = int(state["block"])
        self.taken = int(state["taken"])
        self.buffer = [int(t) for t in state["buffer"]]
        self._units = self._reader = None
        self._carry = []


def take_eval(source, tokenize: Tokenize, seq_len: int, n_sequences: int, name: str,
              need_rest: bool) -> tuple[list[list[int]], list, list[int]]:
    """Read the first documents of ``source`` until ``n_sequences`` packed sequences are filled.

    Returns the sequences, the reader position after the documents read, and the tokens read but
    not used for eval (they start the training stream). Raises when the source is empty, or when
    ``need_rest`` and nothing is left for training.
    """
    need = n_sequences * seq_len
    tokens: list[int] = []
    pos = source.start()
    it = source.iter_units(pos)
    texts, ends = [], []
    got_any = False
    for text, end, pos in it:
        got_any = True
        texts.append(text)
        ends.append(end)
        if len(texts) >= READ_BATCH_UNITS:
            tokens.extend(tokenize(texts, ends))
            texts, ends = [], []
            if len(tokens) >= need:
                break
    if texts:
        tokens.extend(tokenize(texts, ends))
    if not got_any or len(tokens) <= len(tokenize.bos) + 1:  # nothing, or only an empty document's BOS and EOS
        raise HfgrowError(f"domain {name!r} ({source.spec}) contains no text.")
    n_full = len(tokens) // seq_len
    if n_full == 0 and n_sequences > 0:
        raise HfgrowError(
            f"domain {name!r} ({source.spec}) has only {len(tokens)} tokens, fewer than one "
            f"sequence of --seq-len {seq_len}."
        )
    n_eval = min(n_full, n_sequences)
    seqs = [tokens[i * seq_len : (i + 1) * seq_len] for i in range(n_eval)]
    leftover = tokens[n_eval * seq_len :]
    if need_rest and not leftover and next(iter(source.iter_units(pos)), None) is None:
        raise HfgrowError(
            f"domain {name!r} ({source.spec}) is too small: its {len(tokens)} tokens all go to "
            f"the {n_sequences} held-out eval sequences; add data or lower --eval-sequences."
        )
    return seqs, pos, leftover


class Batch(list):
    """This rank's part of a global batch: (global index, domain, token list) items.

    ``ids`` holds the same tokens as one int64 array (rows in item order), ready for
    ``torch.from_numpy`` without building a tensor from Python lists.

    Example:
        >>> batch = data.train.next_batch(8, rank=0, world=2)      # doctest: +SKIP
        >>> batch.ids.shape, [i for i, _, _ in batch]                 # doctest: +SKIP
        ((4, 2048), [0, 1, 2, 3])
    """

    ids: np.ndarray


class Mixture:
    """Draw sequences from several text domains in fixed proportions, deterministically.

    The domain of global sequence k depends only on (seed, k) (:func:`draw_domains`), so the data
    never depend on how many processes share them. Every process tokenizes the whole global batch
    (the streams must advance alike) and keeps its part; a token folder
    (:class:`hfgrow.data.tokens.TokenMixture`) reads only its own part.
    """

    def __init__(self, streams: dict[str, DomainStream], weights: dict[str, float], seed: int):
        self.streams = streams
        self.names = list(streams)
        self.p = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = self.p / self.p.sum()
        self.seed = int(seed)
        self.drawn = 0

    def next_batch(self, n: int, rank: int = 0, world: int = 1) -> Batch:
        """This rank's part of the next ``n`` global sequences, as (global index, domain name, tokens).

        Rank r of ``world`` gets global sequences ``drawn + r·n/world`` .. ``drawn + (r+1)·n/world - 1``.
        """
        if n % world:
            raise HfgrowError(f"a global batch of {n} sequences does not split over {world} processes.")
        choice = draw_domains(self.seed, self.p, self.drawn, n)
        out = []
        for j, c in enumerate(choice):
            name = self.names[int(c)]
            out.append((self.drawn + j, name, self.streams[name].next_sequence()))
        self.drawn += n
        per = n // world
        mine = Batch(out[rank * per : (rank + 1) * per])
        mine.ids = np.array([seq for _, _, seq in mine], dtype=np.int64).reshape(len(mine), -1)
        return mine

    def state_dict(self) -> dict:
        return {"kind": "text", "drawn": self.drawn, "domains": {n: s.state_dict() for n, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind", "text") != "text":
            raise HfgrowError("the checkpoint was trained on a token folder, not text data; resume it with the "
                              "same --data it was started with.")
        with reading_position("text"):
            check_domains(state, self.streams)
            self.drawn = int(state["drawn"])
            for n, s in self.streams.items():
                s.load_state_dict(state["domains"][n])
