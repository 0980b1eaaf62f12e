"""The token-folder format (what ``hfgrow tokenize`` writes): its index, its memory-mapped domains, its tokenizer check.

Layout::

    OUT/tokens.json              the index (written last: its presence marks the folder complete)
    OUT/NAME/000000.bin          flat little-endian uint16 token ids (uint32 when the vocabulary
    OUT/NAME/000000.docs.npy     has >= 65536 ids); document ends within the shard (int64, after EOS)
    OUT/NAME/000000.json         the shard's record: reader positions before/after it, counts
    OUT/.tokenize.json           the request (data, tokenizer hash, shard size) while unfinished

The index records the token and document counts per domain and shard, the tokenizer's name, a
SHA-256 of its vocabulary (ids, EOS id), the ids put before every document (``bos``: the
tokenizer's BOS where it adds one, see :func:`hfgrow.data.tokenization.document_prefix`), and the
dtype. Writing and sampling are in
:mod:`hfgrow.data.tokens`; this module is what every reader needs.

Example:
    >>> folder = TokenFolder("tok/")                                                    # doctest: +SKIP
    >>> folder.domain("web").tokens(0, 5)                                               # doctest: +SKIP
    array([  464,  3797,  3332,   319, 50256], dtype=uint16)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hfgrow.data.jsonfile import is_number
from hfgrow.data.tokenization import document_prefix, eos_id, tokenizer_vocab_size
from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder

INDEX_FILE = "tokens.json"
PROGRESS_FILE = ".tokenize.json"
FORMAT = "hfgrow-tokens"
VERSION = 1


# ---------------------------------------------------------------------------------------------
# The tokenizer's fingerprint
# ---------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Any, name: str | None = None) -> dict:
    """Name, vocabulary hash, vocabulary size, EOS id and document prefix (``bos``) of a tokenizer.

    The hash is SHA-256 of the sorted ``(token, id)`` pairs (added tokens included) and the EOS id:
    two tokenizers with the same hash map every known token to the same id and end documents the
    same way. (Normalizer or pre-tokenizer changes that keep the vocabulary are not seen.)

    Example:
        >>> tokenizer_fingerprint(AutoTokenizer.from_pretrained("gpt2"))["vocab_size"]   # doctest: +SKIP
        50257
    """
    vocab = tokenizer.get_vocab(with_added_tokens=True) if hasattr(tokenizer, "get_vocab_size") \
        else tokenizer.get_vocab()
    eos = eos_id(tokenizer)
    digest = hashlib.sha256(json.dumps([sorted(vocab.items()), eos], ensure_ascii=False).encode()).hexdigest()
    return {"name": name or str(getattr(tokenizer, "name_or_path", "") or "tokenizer"),
            "vocab_hash": digest, "vocab_size": tokenizer_vocab_size(tokenizer), "eos_id": eos,
            "bos": document_prefix(tokenizer)}


def check_tokenizer(index: dict, tokenizer: Any, folder: str | os.PathLike) -> None:
    """Refuse a token folder whose vocabulary hash or document prefix (BOS) differs from ``tokenizer``'s.

    A folder written before the prefix was recorded has none (documents were written without BOS).

    Raises:
        HfgrowError: the folder was tokenized with another tokenizer, or with another BOS convention.

    Example:
        >>> check_tokenizer(TokenFolder("tok/").index, AutoTokenizer.from_pretrained("gpt2"), "tok/")  # doctest: +SKIP
    """
    made = index["tokenizer"]
    mine = tokenizer_fingerprint(tokenizer)
    if made["vocab_hash"] != mine["vocab_hash"]:
        raise HfgrowError(
            f"token folder '{folder}' was made with tokenizer '{made['name']}' (vocabulary hash "
            f"{made['vocab_hash'][:12]}), not this model's tokenizer '{mine['name']}' (hash "
            f"{mine['vocab_hash'][:12]}); run hfgrow tokenize again with --tokenizer set to this model."
        )
    made_bos = [int(t) for t in made.get("bos", [])]
    if made_bos != mine["bos"]:
        def said(ids: list[int]) -> str:
            return f"BOS id {', '.join(map(str, ids))}" if ids else "no BOS"

        raise HfgrowError(
            f"token folder '{folder}' starts every document with {said(made_bos)}, but this model's tokenizer "
            f"starts them with {said(mine['bos'])}; run hfgrow tokenize again with this hfgrow so the tokens "
            "follow the tokenizer's convention."
        )


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


def is_token_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder ``hfgrow tokenize`` wrote (finished or not).

    Example:
        >>> is_token_folder("tok/"), is_token_folder("data/web.jsonl")   # doctest: +SKIP
        (True, False)
    """
    p = Path(path).expanduser()
    return p.is_dir() and ((p / INDEX_FILE).is_file() or (p / PROGRESS_FILE).is_file())


#: The dtypes a token folder stores ids in.
DTYPES = ("uint16", "uint32")


def read_index(folder: str | os.PathLike) -> dict:
    """The index of a finished token folder, checked field by field (a hand-edited index is one sentence).

    Raises:
        HfgrowError: the folder is unfinished (tokenizing was interrupted), or its index is not ours, of another
            version, or malformed (a count that is not a whole number, an unknown dtype, a shard named outside
            the folder...).

    Example:
        >>> sorted(read_index("tok/")["domains"])   # doctest: +SKIP
        ['code', 'web']
    """
    root = Folder(folder)
    if root.find(INDEX_FILE, "token index") is None:
        raise HfgrowError(f"token folder '{folder}' is unfinished (hfgrow tokenize was interrupted); "
                          "run the same hfgrow tokenize command again to finish it.")
    index = root.read_json(INDEX_FILE, "token index")
    if index.get("format") != FORMAT:
        raise HfgrowError(f"'{root.path / INDEX_FILE}' is not an hfgrow token index.")
    if index.get("version") != VERSION:
        raise HfgrowError(f"token folder '{folder}' has format version {index.get('version')!r}; this hfgrow "
                          f"reads version {VERSION}: tokenize the data again.")
    _check_index(index, f"the token index of '{folder}'")
    return index


def _count(value: Any, where: str, what: str) -> int:
    if not (is_number(value) and float(value).is_integer() and value >= 0):
        raise HfgrowError(f"{where} gives {what} as {value!r}, not a whole number of at least 0; tokenize the data "
                          "again.")
    return int(value)


def _check_index(index: dict, where: str) -> None:
    """Every field a reader uses, with its type and range; shard files must be relative names in the folder."""
    if index.get("dtype") not in DTYPES:
        raise HfgrowError(f"{where} gives the dtype {index.get('dtype')!r}; token folders store {' or '.join(DTYPES)}.")
    tokenizer = index.get("tokenizer")
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("vocab_hash"), str) \
            or not isinstance(tokenizer.get("name"), str):
        raise HfgrowError(f"{where} has no tokenizer record (name and vocabulary hash); tokenize the data again.")
    for key in ("vocab_size", "eos_id"):
        if tokenizer.get(key) is not None:
            _count(tokenizer[key], where, f"the tokenizer's {key}")
    bos = tokenizer.get("bos", [])
    if not isinstance(bos, list):
        raise HfgrowError(f"{where} gives the tokenizer's document prefix as {bos!r}, not a list of ids.")
    for token in bos:
        _count(token, where, "an id of the tokenizer's document prefix")
    domains = index.get("domains")
    if not isinstance(domains, dict) or not domains:
        raise HfgrowError(f"{where} lists no domains; tokenize the data again.")
    for name, entry in domains.items():
        label = f"domain '{name}'"
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            raise HfgrowError(f"{where} gives no list of shards for {label}; tokenize the data again.")
        total = 0
        for shard in entry["shards"]:
            if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
                raise HfgrowError(f"{where} has a shard of {label} without a file name; tokenize the data again.")
            file = PurePosixPath(shard["file"])
            if file.is_absolute() or ".." in file.parts or not file.parts:
                raise HfgrowError(f"{where} names the shard '{shard['file']}', which is not a file inside the token "
                                  "folder; hfgrow reads only files inside it.")
            total += _count(shard.get("tokens"), where, f"the token count of '{shard['file']}'")
            _count(shard.get("documents"), where, f"the document count of '{shard['file']}'")
            if shard.get("max_id") is not None:
                _count(shard["max_id"], where, f"the largest id of '{shard['file']}'")
        if _count(entry.get("tokens", total), where, f"the token count of {label}") != total:
            raise HfgrowError(f"{where} gives {label} {entry.get('tokens')!r} tokens, but its shards hold {total:,}; "
                              "tokenize the data again.")
        _count(entry.get("documents"), where, f"the document count of {label}")


class TokenDomain:
    """One domain's token stream: its shards, memory-mapped (through the folder's containment), read as one flat
    array.

    Example:
        >>> web = TokenFolder("tok/").domain("web")          # doctest: +SKIP
        >>> web.n_tokens, web.window(3, 2048).shape           # doctest: +SKIP
        (1048576, (2048,))
    """

    def __init__(self, folder: Folder, name: str, entry: dict, dtype: str, vocab_size: int | None = None):
        self.folder = folder
        self.name = name
        self.dtype = np.dtype(dtype)
        self.vocab_size = vocab_size  # ids read must be below it (None: unchecked)
        self.entries = entry["shards"]
        self.shards = [s["file"] for s in self.entries]
        sizes = [int(s["tokens"]) for s in self.entries]
        self.starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self.n_tokens = int(self.starts[-1])
        self.n_documents = int(entry["documents"])
        self._maps: dict[int, np.ndarray] = {}

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            n = int(self.starts[i + 1] - self.starts[i])
            self._maps[i] = self.folder.memmap(self.shards[i], self.dtype, n, f"token shard '{self.shards[i]}'")
        return self._maps[i]

    def max_id(self) -> int:
        """The largest token id in the domain: as recorded at tokenize time, or read from the shards (one pass
        over them, for folders written before the record existed)."""
        recorded = [s.get("max_id") for s in self.entries]
        if all(m is not None for m in recorded):
            return max(map(int, recorded), default=-1)
        return max((int(self._shard(i).max()) for i in range(len(self.shards)) if len(self._shard(i))), default=-1)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the domain's stream (a view when inside one shard)."""
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, pos = [], start
        i = first
        while pos < stop:
            lo = pos - int(self.starts[i])
            hi = min(stop, int(self.starts[i + 1])) - int(self.starts[i])
            if hi > lo:
                part = self._shard(i)[lo:hi]
                largest = int(part.max()) if self.vocab_size is not None else -1
                if largest >= (self.vocab_size or 0) > 0:
                    raise HfgrowError(f"token shard '{self.shards[i]}' of {self.folder.path} holds id {largest:,}, "
                                      f"past its tokenizer's {self.vocab_size:,} ids (the shard was edited or "
                                      "damaged); tokenize the data again.")
                parts.append(part)
            pos = int(self.starts[i]) + hi
            i += 1
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def window(self, w: int, seq_len: int) -> np.ndarray:
        """Window ``w``: tokens ``[w·seq_len, (w+1)·seq_len)``."""
        return self.tokens(w * seq_len, (w + 1) * seq_len)

    def n_windows(self, seq_len: int) -> int:
        return self.n_tokens // seq_len

    def document_ends(self) -> np.ndarray:
        """Every document's end in the domain's stream (the position after its EOS), in order."""
        ends = []
        for i, name in enumerate(self.shards):
            docs = self.folder.load_array(str(PurePosixPath(name).with_suffix(".docs.npy")),
                                          f"document ends of '{name}'", mmap=True)
            n = int(self.starts[i + 1] - self.starts[i])
            if docs.ndim != 1 or docs.dtype.kind not in "iu" or (len(docs) and (docs.min() < 0 or docs.max() > n)):
                raise HfgrowError(f"the document ends of '{name}' in {self.folder.path} do not fit its {n:,} tokens; "
                                  "tokenize the data again.")
            ends.append(docs.astype(np.int64) + self.starts[i])
        return np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)

    def chunks(self, max_tokens: int | None = None) -> Iterator[np.ndarray]:
        """The stream shard by shard (memmapped views), cut at ``max_tokens``."""
        left = self.n_tokens if max_tokens is None else min(self.n_tokens, max_tokens)
        for i in range(len(self.shards)):
            if left <= 0:
                return
            part = self._shard(i)[:left]
            left -= len(part)
            yield part


class TokenFolder:
    """A finished token folder: its index and its domains.

    Example:
        >>> folder = TokenFolder("tok/")                                     # doctest: +SKIP
        >>> folder.names, folder.index["tokenizer"]["name"]                   # doctest: +SKIP
        (['web', 'code'], 'gpt2')
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self.index = read_index(self.path)
        self.names = list(self.index["domains"])
        self._folder = Folder(self.path)

    def domain(self, name: str) -> TokenDomain:
        if name not in self.index["domains"]:
            raise HfgrowError(f"token folder '{self.path}' has no domain '{name}' (it has {', '.join(self.names)}).")
        return TokenDomain(self._folder, name, self.index["domains"][name], self.index["dtype"],
                           self.index["tokenizer"].get("vocab_size"))

    def check_tokenizer(self, tokenizer: Any, names: list[str] | None = None) -> None:
        """Refuse the folder when it was made with another tokenizer, or when a domain (all, or ``names``) holds
        an id past the tokenizer's vocabulary (an edited shard: the ids would index past the embedding)."""
        check_tokenizer(self.index, tokenizer, self.path)
        size = tokenizer_vocab_size(tokenizer)
        for name in names or self.names:
            largest = self.domain(name).max_id()
            if largest >= size:
                raise HfgrowError(f"token folder '{self.path}' holds id {largest:,} in domain '{name}', past the "
                                  f"tokenizer's {size:,} ids (a shard was edited or damaged); tokenize the data "
                                  "again.")


class TokenSource:
    """What :func:`hfgrow.data.specs.open_domain` returns for a domain of a token folder.

    It has no texts: callers that need the token stream ask for :meth:`stream` with their tokenizer
    (checked against the folder's).

    Example:
        >>> src = open_domain(parse_specs(["tok/"])[0])                 # doctest: +SKIP
        >>> src.stream(tok, max_tokens=4)                               # doctest: +SKIP
        array([ 464, 3797, 3332,  319], dtype=uint16)
    """

    def __init__(self, spec):  # a hfgrow.data.specs.DomainSpec with its part set
        self.spec = spec.spec
        self.folder = TokenFolder(spec.spec)
        self.domain = self.folder.domain(spec.part or spec.name)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """The folder's tokenizer check, for this domain's ids."""
        self.folder.check_tokenizer(tokenizer, [self.domain.name])

    def stream(self, tokenizer: Any, max_tokens: int | None = None) -> np.ndarray:
        """The domain's stored token stream (all of it, or its first ``max_tokens``)."""
        self.check_tokenizer(tokenizer)
        stop = self.domain.n_tokens if max_tokens is None else min(max_tokens, self.domain.n_tokens)
        return self.domain.tokens(0, stop)

    def texts(self) -> Iterator[str]:
        raise HfgrowError(f"'{self.spec}' is a token folder: it holds token ids, not text.")


def token_folder_domains(path: str, name: str = "") -> list[tuple[str, str]]:
    """The domains of a token folder as (name, part) pairs: all of them, or the only one renamed to ``name``.

    Raises:
        HfgrowError: the folder is unfinished, or ``name`` is given for a folder of several domains.

    Example:
        >>> token_folder_domains("tok/")                                          # doctest: +SKIP
        [('web', 'web'), ('code', 'code')]
    """
    names = list(read_index(path)["domains"])
    if name and len(names) != 1:
        raise HfgrowError(f"token folder '{path}' holds {len(names)} domains ({', '.join(names)}); give it "
                          "without NAME= (its domains keep their names).")
    return [(name, names[0])] if name else [(n, n) for n in names]
