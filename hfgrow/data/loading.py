"""Training data, whatever its form: the one entry point the training loop calls (:func:`build_data`).

Text domains become a :class:`hfgrow.data.packing.Mixture` (documents shuffled, tokenized and packed on the
fly); domains of a token folder a :class:`hfgrow.data.tokens.TokenMixture` (memory-mapped windows, each
rank reads its own). Either way ``train.next_batch(n, rank, world)`` gives this rank's part of the same
global batch, and ``state_dict()`` is the data position a checkpoint saves.

Example:
    >>> data = build_data(parse_specs(["web=data/web.jsonl", "code=tok/"]), tok, seq_len=2048)   # doctest: +SKIP
    >>> mine = data.train.next_batch(8, rank=1, world=2)   # global sequences 4..7              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.data.mixture import read_mixture
from hfgrow.data.packing import SHUFFLE_DOCS, DomainStream, Mixture, take_eval
from hfgrow.data.specs import DomainSpec, open_domain
from hfgrow.data.token_folder import TokenSource
from hfgrow.data.tokenization import Tokenize, token_stream
from hfgrow.data.tokens import TokenMixture
from hfgrow.errors import HfgrowError


@dataclass
class TrainData:
    train: Any  # Mixture (text) or hfgrow.data.tokens.TokenMixture: next_batch(n, rank, world), state_dict()
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
    shuffle_docs: int = SHUFFLE_DOCS,
) -> TrainData:
    """Open every domain, set eval data aside, and return the training mixture.

    ``eval_domains`` with the name of a training domain replace its held-out split (the domain
    then trains on all of its data); other names are evaluation-only domains. A domain whose
    mixture proportion is 0 is not trained on: it only gives held-out sequences.

    Domains of a token folder (``hfgrow tokenize``; specs with ``part`` set) give a
    :class:`hfgrow.data.tokens.TokenMixture` (memory-mapped windows, each rank reads its own);
    text domains a :class:`Mixture` whose documents are shuffled in buffers of ``shuffle_docs``
    (1: file order). Either way ``train.next_batch(n, rank, world)`` gives this rank's part of
    the same global batch. The two kinds cannot be mixed in one run.

    Example:
        >>> data = build_data(parse_specs(["web=web.jsonl"]), tok, seq_len=32, eval_sequences=2)  # doctest: +SKIP
        >>> [len(s) for s in data.eval["web"]]                                                    # doctest: +SKIP
        [32, 32]
    """
    if not domains:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    names = [d.name for d in domains]
    weights = read_mixture(mixture, names) if mixture else {n: 1.0 / len(names) for n in names}
    tokens = [d.part is not None for d in domains]
    if any(tokens) and not all(tokens):
        raise HfgrowError("--data mixes token folders and text; tokenize every domain with hfgrow tokenize, "
                          "or give only text.")
    tokenize = Tokenize(tokenizer)
    if hasattr(tokenizer, "model_max_length"):
        tokenizer.model_max_length = int(1e30)  # we pack ourselves; silence the length warning
    explicit = {d.name: d for d in (eval_domains or [])}
    evals: dict[str, list[list[int]]] = {}
    if all(tokens):
        train = _token_mixture(domains, tokenizer, seq_len, seed, eval_sequences, explicit, weights, evals)
    else:
        train = _text_mixture(domains, tokenize, seq_len, seed, eval_sequences, explicit, weights, evals,
                              text_field, shuffle_docs)
    for d in eval_domains or []:
        if eval_sequences <= 0:
            break
        evals[d.name] = _eval_sequences(d, tokenizer, tokenize, seq_len, eval_sequences, text_field)
    return TrainData(train=train, eval=evals, weights=weights, specs=list(domains))


def _text_mixture(domains: list[DomainSpec], tokenize: Tokenize, seq_len: int, seed: int, eval_sequences: int,
                  explicit: dict, weights: dict[str, float], evals: dict, text_field: str,
                  shuffle_docs: int) -> Mixture:
    """The text path of :func:`build_data`: held-out sequences into ``evals``, the rest shuffled and packed."""
    streams: dict[str, DomainStream] = {}
    for d in domains:
        src = open_domain(d, text_field)
        if hasattr(src, "check"):
            src.check()  # a bad JSON line is said now, naming file and line, not when the sampler reaches it
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
        streams[d.name] = DomainStream(d.name, src, tokenize, seq_len, start, leftover, seed=seed,
                                       shuffle_docs=shuffle_docs)
    return Mixture(streams, {n: weights[n] for n in streams}, seed)


def _token_mixture(domains: list[DomainSpec], tokenizer, seq_len: int, seed: int, eval_sequences: int,
                   explicit: dict, weights: dict[str, float], evals: dict):
    """The token-folder path of :func:`build_data`: the first windows held out, the rest sampled."""
    trained: dict = {}
    for d in domains:
        src = TokenSource(d)
        src.check_tokenizer(tokenizer)
        windows = src.domain.n_windows(seq_len)
        if windows == 0:
            raise HfgrowError(f"domain {d.name!r} ({d.spec}) has only {src.domain.n_tokens} tokens, fewer than one "
                              f"sequence of --seq-len {seq_len}.")
        held = 0 if d.name in explicit or eval_sequences <= 0 else min(eval_sequences, windows)
        if held:
            evals[d.name] = [src.domain.window(w, seq_len).tolist() for w in range(held)]
        if weights[d.name] > 0:
            trained[d.name] = (src.domain, held)
    return TokenMixture(trained, {n: weights[n] for n in trained}, seq_len, seed)


def _eval_sequences(spec: DomainSpec, tokenizer, tokenize: Tokenize, seq_len: int, n: int,
                    text_field: str) -> list[list[int]]:
    """The first ``n`` packed sequences of an explicit eval domain (text or token folder)."""
    if spec.part is not None:
        src = TokenSource(spec)
        src.check_tokenizer(tokenizer)
        return [src.domain.window(w, seq_len).tolist() for w in range(min(n, src.domain.n_windows(seq_len)))]
    return take_eval(open_domain(spec, text_field), tokenize, seq_len, n, spec.name, need_rest=False)[0]


def source_tokens(source, tokenizer, max_tokens: int | None = None):
    """A domain's token stream: tokenized by the rule for text, as stored for a token folder.

    A token folder's stream is what :func:`token_stream` gives for its documents, so callers
    (``hfgrow eval``, ``hfgrow mix entropy``) treat both alike; its tokenizer is checked first.

    Example:
        >>> source_tokens(open_domain(DomainSpec("web", "web.jsonl")), tok, max_tokens=4)   # doctest: +SKIP
        [464, 3797, 3332, 319]
    """
    if hasattr(source, "stream"):
        return source.stream(tokenizer, max_tokens)
    return token_stream(tokenizer, source.texts(), max_tokens=max_tokens)
