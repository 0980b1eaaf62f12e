"""Training data for continued pre-training: read, tokenize, pack, mix.

A *domain* is one named source of documents: a local file, a local folder (every .txt/.md/.text,
.jsonl/.ndjson and .parquet file under it, sorted, hidden entries skipped; .gz variants of the text
formats too; see :mod:`hfgrow.data.text`), or a Hugging Face dataset ``hf:name[:config][:split]``
(needs the optional ``datasets`` package; read with ``streaming=True`` so large datasets are
never downloaded whole).

Documents are tokenized with the model's tokenizer (no special tokens), each followed by EOS,
and the token stream is cut into full ``seq_len`` sequences: no padding anywhere. A .txt file is
one document (read in line-aligned chunks so a large file streams); a JSONL line or a parquet row
is one document (its ``text`` field). Empty documents are skipped.

Several domains are mixed by drawing, for every sequence slot, a domain with probability equal
to its mixture weight. The draw for global sequence number k depends only on (seed, k), so a
run is deterministic and the whole data position is a small JSON dict (``state_dict()``):
sequences drawn so far plus, per domain, the epoch, the reader position (file index and byte
offset or row) and the few tokens waiting in the packing buffer.

Held-out evaluation data: the first documents of each domain, enough for ``eval_sequences``
sequences, are set aside and never trained on (unless the domain has explicit eval data).

Example:
    >>> tok = AutoTokenizer.from_pretrained("out/")
    >>> domains = parse_data_specs(["web=data/web.jsonl", "code=data/code/"])
    >>> data = build_data(domains, tok, seq_len=2048, seed=0, eval_sequences=16)
    >>> batch = data.train.next_batch(8)        # 8 (global index, domain, token list) tuples
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from hfgrow.errors import HfgrowError
from hfgrow.data.text import file_kind, iter_jsonl_from, iter_parquet_from, list_files, open_binary

TXT_CHUNK_BYTES = 1 << 16  # a .txt file is read (and tokenized) in line-aligned chunks of ~64 KiB
READ_BATCH_UNITS = 16  # documents tokenized together (fast tokenizers batch in Rust)


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


@dataclass
class DomainSpec:
    """One ``--data`` / ``--eval-data`` argument: a name and where its documents are."""

    name: str
    spec: str  # local path or "hf:name[:config][:split]"

    @property
    def is_hf(self) -> bool:
        return self.spec.startswith("hf:")


def parse_data_specs(values: list[str]) -> list[DomainSpec]:
    """Parse ``name=path`` / ``path`` / ``hf:...`` arguments; unnamed ones get the file stem.

    Example:
        >>> [d.name for d in parse_data_specs(["a.txt", "web=hf:HuggingFaceFW/fineweb"])]
        ['a', 'web']
    """
    out: list[DomainSpec] = []
    for value in values:
        name, spec = "", value
        head, sep, tail = value.partition("=")
        if sep and head and not head.startswith("hf:") and "/" not in head and os.sep not in head:
            name, spec = head, tail
        if not spec:
            raise HfgrowError(f"data argument {value!r} names no file, folder or hf: dataset.")
        if not name:
            if spec.startswith("hf:"):
                name = spec[3:].split(":")[0].rstrip("/").split("/")[-1] or "data"
            else:
                name = Path(spec.rstrip("/")).name.split(".")[0] or "data"
        if any(d.name == name for d in out):
            raise HfgrowError(f"two data sources are both named {name!r}; name them with NAME=PATH.")
        out.append(DomainSpec(name, spec))
    return out


def load_mixture(path: str | Path, domain_names: list[str]) -> dict[str, float]:
    """Read a mixture JSON (``{"domains": {"name": {"proportion": r}}}``) and normalise it.

    Every domain of the mixture must be one of ``domain_names`` and every training domain must
    have a proportion.
    """
    path = Path(path)
    if not path.is_file():
        raise HfgrowError(f"mixture file {str(path)!r} does not exist.")
    try:
        raw = json.loads(path.read_text())
        domains = raw["domains"]
        props = {
            str(k): float(v["proportion"] if isinstance(v, dict) else v) for k, v in domains.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HfgrowError(
            f"mixture file {str(path)!r} is not of the form "
            '{"domains": {"NAME": {"proportion": R}}} '
            f"({type(exc).__name__}: {exc})."
        ) from None
    unknown = [k for k in props if k not in domain_names]
    if unknown:
        raise HfgrowError(
            f"mixture file {str(path)!r} names unknown domain {unknown[0]!r}; "
            f"the --data domains are {', '.join(map(repr, domain_names))}."
        )
    missing = [k for k in domain_names if k not in props]
    if missing:
        raise HfgrowError(f"mixture file {str(path)!r} gives no proportion for domain {missing[0]!r}.")
    if any(not math.isfinite(v) or v < 0 for v in props.values()) or sum(props.values()) <= 0:
        raise HfgrowError(f"mixture file {str(path)!r} has negative or all-zero proportions.")
    total = sum(props.values())
    return {k: props[k] / total for k in domain_names}


# ---------------------------------------------------------------------------------------------
# Readers: yield (text, ends_document, position_after) from a saved position
# ---------------------------------------------------------------------------------------------


class LocalSource:
    """Documents from local files (see :mod:`hfgrow.data.text`). Position = [file index, byte offset or parquet row]."""

    def __init__(self, spec: str, text_field: str = "text"):
        self.spec = spec
        self.files = list_files(spec)
        self.text_field = text_field

    def start(self) -> list:
        return [0, 0]

    def iter_units(self, pos: list) -> Iterator[tuple[str, bool, list]]:
        file_idx, offset = int(pos[0]), int(pos[1])
        while file_idx < len(self.files):
            path = self.files[file_idx]
            kind = file_kind(path)
            if kind == "txt":
                with open_binary(path) as fh:
                    if offset:
                        fh.seek(offset)
                    yield from self._text(fh, file_idx)
            else:
                read = iter_jsonl_from if kind == "jsonl" else iter_parquet_from
                for text, after in read(path, offset, self.text_field):
                    yield text, True, [file_idx, after]
            file_idx, offset = file_idx + 1, 0

    @staticmethod
    def _text(fh, file_idx: int):
        parts: list[bytes] = []
        size = 0
        while True:
            line = fh.readline()
            if line:
                parts.append(line)
                size += len(line)
            if size >= TXT_CHUNK_BYTES or (not line and parts):
                end = not line
                if not end:  # peek: is this the last chunk of the file?
                    here = fh.tell()
                    end = not fh.read(1)
                    fh.seek(here)
                yield b"".join(parts).decode("utf-8", errors="replace"), end, [file_idx, fh.tell()]
                parts, size = [], 0
                if end:
                    return
            if not line:
                return


class HFSource:
    """A Hugging Face dataset read with ``streaming=True``. Position = [0, records read]."""

    def __init__(self, spec: str, text_field: str = "text"):
        parts = spec[3:].split(":")
        if not parts[0]:
            raise HfgrowError(f"data spec {spec!r} names no dataset (use hf:NAME[:CONFIG][:SPLIT]).")
        self.spec = spec
        self.name = parts[0]
        self.config = parts[1] if len(parts) > 1 and parts[1] else None
        self.split = parts[2] if len(parts) > 2 and parts[2] else "train"
        self.text_field = text_field
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise HfgrowError(
                f"data {spec!r} needs the 'datasets' package: pip install 'hfgrow[data]'."
            ) from None

    def start(self) -> list:
        return [0, 0]

    def iter_units(self, pos: list):
        import datasets

        try:
            ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as exc:  # noqa: BLE001 - many failure types (network, missing config)
            raise HfgrowError(f"cannot open dataset {self.spec!r}: {str(exc).splitlines()[0]}") from None
        n = int(pos[1])
        if n:
            ds = ds.skip(n)
        for record in ds:
            n += 1
            text = record.get(self.text_field)
            if not isinstance(text, str):
                raise HfgrowError(
                    f"dataset {self.spec!r} has a record without a string {self.text_field!r} "
                    "field; choose the field with --text-field."
                )
            if text:
                yield text, True, [0, n]


def open_source(spec: DomainSpec, text_field: str = "text"):
    return HFSource(spec.spec, text_field) if spec.is_hf else LocalSource(spec.spec, text_field)


# ---------------------------------------------------------------------------------------------
# Tokenize + pack
# ---------------------------------------------------------------------------------------------


class Tokenize:
    """Tokenize a list of texts without special tokens, appending EOS where a document ends."""

    def __init__(self, tokenizer):
        eos = tokenizer.eos_token_id
        if eos is None:
            raise HfgrowError("the model's tokenizer has no EOS token to separate documents with.")
        self.tokenizer = tokenizer
        self.eos = int(eos)

    def __call__(self, texts: list[str], ends: list[bool]) -> list[int]:
        out: list[int] = []
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for seq, end in zip(ids, ends):
            out.extend(seq)
            if end:
                out.append(self.eos)
        return out


class DomainStream:
    """Endless stream of packed ``seq_len`` sequences from one source (loops over epochs)."""

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
    then trains on all of its data); other names are evaluation-only domains.
    """
    if not domains:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    names = [d.name for d in domains]
    weights = load_mixture(mixture, names) if mixture else {n: 1.0 / len(names) for n in names}
    tokenize = Tokenize(tokenizer)
    if hasattr(tokenizer, "model_max_length"):
        tokenizer.model_max_length = int(1e30)  # we pack ourselves; silence the length warning
    explicit = {d.name: d for d in (eval_domains or [])}
    streams: dict[str, DomainStream] = {}
    evals: dict[str, list[list[int]]] = {}
    for d in domains:
        src = open_source(d, text_field)
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
        src = open_source(d, text_field)
        evals[d.name] = take_eval(src, tokenize, seq_len, eval_sequences, d.name, need_rest=False)[0]
    return TrainData(
        train=Mixture(streams, {n: weights[n] for n in streams}, seed),
        eval=evals,
        weights=weights,
        specs=list(domains),
    )
