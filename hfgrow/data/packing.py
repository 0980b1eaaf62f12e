"""Token streams and packed training data: the one rule that turns documents into tokens.

**The token-stream rule** (used by training, ``hfgrow eval``, ``hfgrow mix entropy`` and LiGO):
every document is tokenized without special tokens and followed by EOS; no BOS is added::

    d1 EOS d2 EOS ... dN EOS

A :class:`~hfgrow.data.text.DocPart` (a piece of a long plain-text file) goes on in the next
item, so it gets no EOS. Why no BOS: training cuts this stream into fixed-length sequences, so a
BOS would not mark where the model's inputs start anyway; EOS between documents is the signal the
model learns, and measuring loss (or entropies) on the same stream the model trains on keeps the
numbers comparable. :func:`token_stream` is the rule for a list of documents, :class:`Tokenize`
the same rule for batches of a longer stream.

**Packing.** A domain's stream is cut into full ``seq_len`` sequences: no padding anywhere.
Several domains are mixed by drawing, for every sequence slot, a domain with probability equal
to its mixture weight. The draw for global sequence number k depends only on (seed, k), so a
run is deterministic and the whole data position is a small JSON dict (``state_dict()``):
sequences drawn so far plus, per domain, the epoch, the reader position (see
:mod:`hfgrow.data.specs`) and the few tokens waiting in the packing buffer.

Held-out evaluation data: the first documents of each domain, enough for ``eval_sequences``
sequences, are set aside and never trained on (unless the domain has explicit eval data).

Example:
    >>> tok = AutoTokenizer.from_pretrained("out/")                                   # doctest: +SKIP
    >>> domains = parse_specs(["web=data/web.jsonl", "code=data/code/"])              # doctest: +SKIP
    >>> data = build_data(domains, tok, seq_len=2048, seed=0, eval_sequences=16)      # doctest: +SKIP
    >>> batch = data.train.next_batch(8)   # 8 (global index, domain, token list)     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfgrow.data.mixture import read_mixture
from hfgrow.data.specs import DomainSpec, open_domain
from hfgrow.data.text import DocPart
from hfgrow.errors import HfgrowError

READ_BATCH_UNITS = 16  # documents tokenized together (fast tokenizers batch in Rust)
_EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")  # for a bare tokenizers.Tokenizer


# ---------------------------------------------------------------------------------------------
# The token-stream rule
# ---------------------------------------------------------------------------------------------


def eos_id(tokenizer: Any) -> int:
    """The EOS id that ends every document.

    A Hugging Face tokenizer's ``eos_token_id``; a bare ``tokenizers.Tokenizer`` (which has no
    such attribute) gets the first of ``</s>``, ``<|endoftext|>``, ``<eos>``, ``<|end_of_text|>``
    it knows.

    Raises:
        HfgrowError: the tokenizer has no EOS token.

    Example:
        >>> eos_id(AutoTokenizer.from_pretrained("gpt2"))                 # doctest: +SKIP
        50256
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None and hasattr(tokenizer, "token_to_id"):
        eos = next((i for i in map(tokenizer.token_to_id, _EOS_NAMES) if i is not None), None)
    if eos is None:
        raise HfgrowError("the tokenizer has no EOS token to end documents with; give it one (eos_token).")
    return int(eos)


def batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """A function list[str] -> id lists, identical to ``tokenizer(texts, add_special_tokens=False)``.

    For Hugging Face fast tokenizers (and bare ``tokenizers.Tokenizer`` objects) this calls the
    Rust backend's ``encode_batch_fast`` directly (no offsets, no BatchEncoding), with the same
    special-token handling as ``__call__``; a backend with truncation or padding switched on, and
    anything else, goes through ``__call__``.

    Example:
        >>> batch_encoder(tok)(["a b", "c"])                                # doctest: +SKIP
        [[64, 275], [66]]
    """
    backend = None
    if hasattr(tokenizer, "encode_batch_fast"):  # a tokenizers.Tokenizer
        backend = tokenizer
    elif getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = tokenizer.backend_tokenizer
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
    # __call__ switches a backend's own truncation/padding off for the call; the fast path cannot
    if backend is not None and hasattr(backend, "encode_batch_fast") and backend.truncation is None \
            and backend.padding is None:

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

        return encode

    def encode_slow(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    return encode_slow


class Tokenize:
    """The token-stream rule for batches: each text's ids, with EOS after every document.

    A text ends its document unless it is a :class:`~hfgrow.data.text.DocPart` (or ``ends`` says
    otherwise).

    Example:
        >>> tokenize = Tokenize(tok)                                        # doctest: +SKIP
        >>> tokenize(["a b", DocPart("c "), "d"])   # a b EOS c d EOS        # doctest: +SKIP
        [64, 275, 0, 66, 220, 67, 0]
    """

    def __init__(self, tokenizer: Any):
        self.eos = eos_id(tokenizer)
        self.encode = batch_encoder(tokenizer)

    def per_text(self, texts: list[str], ends: Sequence[bool] | None = None) -> list[list[int]]:
        """The ids of every text, EOS appended where a document ends."""
        if ends is None:
            ends = [not isinstance(t, DocPart) for t in texts]
        ids = self.encode(list(texts)) if texts else []
        return [seq + [self.eos] if end else seq for seq, end in zip(ids, ends)]

    def __call__(self, texts: list[str], ends: Sequence[bool] | None = None) -> list[int]:
        return [t for seq in self.per_text(texts, ends) for t in seq]


def token_stream(tokenizer: Any, documents: Iterable[str], *, max_tokens: int | None = None) -> list[int]:
    """The token stream of documents: ``d1 EOS d2 EOS ... dN EOS`` (no BOS; see the module docstring).

    Documents are tokenized in batches; with ``max_tokens`` reading stops once that many tokens are
    there and the stream is cut to exactly ``max_tokens``.

    Example:
        >>> ids = token_stream(tok, ["the cat", "a dog"])                    # doctest: +SKIP
        >>> ids == tok("the cat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] \\
        ...        + tok("a dog", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # doctest: +SKIP
        True
    """
    tokenize = Tokenize(tokenizer)
    out: list[int] = []
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) >= READ_BATCH_UNITS:
            out.extend(tokenize(batch))
            batch = []
            if max_tokens is not None and len(out) >= max_tokens:
                return out[:max_tokens]
    out.extend(tokenize(batch))
    return out if max_tokens is None else out[:max_tokens]


# ---------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------


class DomainStream:
    """Endless stream of packed ``seq_len`` sequences from one opened domain (loops over epochs)."""

    def __init__(self, name: str, source, tokenize: Tokenize, seq_len: int, train_start: list,
                 prefix: list[int] | None = None):
        self.name = name
        self.prefix = list(prefix or [])  # tokens left over from the eval split: start of every epoch
        self.source = source
        self.tokenize = tokenize
        self.seq_len = seq_len
        self.train_start = list(train_start)
        self.epoch = 0
        self.pos = list(train_start)
        self.buffer: list[int] = list(self.prefix)
        self._it = None

    def _fill(self) -> None:
        empty_epochs = 0
        while len(self.buffer) < self.seq_len:
            if self._it is None:
                self._it = self.source.iter_units(self.pos)
            texts, ends, pos = [], [], None
            for text, end, pos in self._it:
                texts.append(text)
                ends.append(end)
                if len(texts) >= READ_BATCH_UNITS:
                    break
            if not texts:  # the source is exhausted: next epoch
                empty_epochs = empty_epochs + 1 if self.pos == self.train_start else 0
                if empty_epochs > 1 and not self.prefix:
                    raise HfgrowError(f"domain {self.name!r} has no training data left after the eval split.")
                self.epoch += 1
                self.pos = list(self.train_start)
                self.buffer.extend(self.prefix)
                self._it = None
                continue
            self.buffer.extend(self.tokenize(texts, ends))
            self.pos = pos

    def next_sequence(self) -> list[int]:
        self._fill()
        seq = self.buffer[: self.seq_len]
        del self.buffer[: self.seq_len]
        return seq

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": list(self.pos), "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.pos = list(state["pos"])
        self.buffer = [int(t) for t in state["buffer"]]
        self._it = None


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
    if not got_any or not tokens or (len(tokens) == 1 and tokens[0] == tokenize.eos):
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


class Mixture:
    """Draw sequences from several domains in fixed proportions, deterministically.

    The domains of global sequences k..k+n-1 are drawn with ``default_rng([seed, k])``, so the
    data depend only on (seed, number drawn so far) and never on how many processes share them.
    """

    def __init__(self, streams: dict[str, DomainStream], weights: dict[str, float], seed: int):
        self.streams = streams
        self.names = list(streams)
        self.p = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = self.p / self.p.sum()
        self.seed = int(seed)
        self.drawn = 0

    def next_batch(self, n: int) -> list[tuple[int, str, list[int]]]:
        """The next ``n`` sequences as (global index, domain name, tokens)."""
        if len(self.names) == 1:
            choice = np.zeros(n, dtype=np.int64)
        else:
            choice = np.random.default_rng([self.seed, self.drawn]).choice(len(self.names), size=n, p=self.p)
        out = []
        for j, c in enumerate(choice):
            name = self.names[int(c)]
            out.append((self.drawn + j, name, self.streams[name].next_sequence()))
        self.drawn += n
        return out

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "domains": {n: s.state_dict() for n, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        if sorted(state["domains"]) != sorted(self.streams):
            raise HfgrowError(
                "the checkpoint's data domains "
                f"({', '.join(sorted(state['domains']))}) differ from this run's "
                f"({', '.join(sorted(self.streams))})."
            )
        self.drawn = int(state["drawn"])
        for n, s in self.streams.items():
            s.load_state_dict(state["domains"][n])


@dataclass
class TrainData:
    train: Mixture
    eval: dict[str, list[list[int]]] = field(default_factory=dict)  # domain -> held-out sequences
    weights: dict[str, float] = field(default_factory=dict)
    specs: list[DomainSpec] = field(default_factory=list)


def build_data(
    domains: list[DomainSpec],
    tokenizer,
    seq_len: int,
    seed: int = 0,
    eval_sequences: int = 16,
    eval_domains: list[DomainSpec] | None = None,
    mixture: str | Path | None = None,
    text_field: str = "text",
) -> TrainData:
    """Open every domain, set eval data aside, and return the training mixture.

    ``eval_domains`` with the name of a training domain replace its held-out split (the domain
    then trains on all of its data); other names are evaluation-only domains. A domain whose
    mixture proportion is 0 is not trained on: it only gives held-out sequences.

    Example:
        >>> data = build_data(parse_specs(["web=web.jsonl"]), tok, seq_len=32, eval_sequences=2)  # doctest: +SKIP
        >>> [len(s) for s in data.eval["web"]]                                                    # doctest: +SKIP
        [32, 32]
    """
    if not domains:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    names = [d.name for d in domains]
    weights = read_mixture(mixture, names) if mixture else {n: 1.0 / len(names) for n in names}
    tokenize = Tokenize(tokenizer)
    if hasattr(tokenizer, "model_max_length"):
        tokenizer.model_max_length = int(1e30)  # we pack ourselves; silence the length warning
    explicit = {d.name: d for d in (eval_domains or [])}
    streams: dict[str, DomainStream] = {}
    evals: dict[str, list[list[int]]] = {}
    for d in domains:
        src = open_domain(d, text_field)
        if weights[d.name] == 0:  # not trained on: all of it is held out
            if d.name not in explicit and eval_sequences > 0:
                evals[d.name] = take_eval(src, tokenize, seq_len, eval_sequences, d.name, need_rest=False)[0]
            continue
        if d.name in explicit or eval_sequences <= 0:
            take_eval(src, tokenize, seq_len, 0, d.name, need_rest=False)  # checks there is text
            start, leftover = src.start(), []
        else:
            seqs, start, leftover = take_eval(src, tokenize, seq_len, eval_sequences, d.name, need_rest=True)
            evals[d.name] = seqs
        streams[d.name] = DomainStream(d.name, src, tokenize, seq_len, start, leftover)
    for d in eval_domains or []:
        if eval_sequences <= 0:
            break
        src = open_domain(d, text_field)
        evals[d.name] = take_eval(src, tokenize, seq_len, eval_sequences, d.name, need_rest=False)[0]
    return TrainData(
        train=Mixture(streams, {n: weights[n] for n in streams}, seed),
        eval=evals,
        weights=weights,
        specs=list(domains),
    )
