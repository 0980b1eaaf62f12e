"""The one place hfgrow loads a tokenizer: links checked first, failures as one sentence, ids checked
against the model's embedding.

transformers' ``AutoTokenizer`` opens the files of a folder on its own (``tokenizer.json``, ``*.model``,
``vocab.json``...), so a local folder has every link in it checked by :class:`~hfgrow.io.folder.Folder`
before it is handed over; a Hub id is resolved by transformers from the local cache (or downloaded with
``revision``/``token``).

Example:
    >>> tok = load_tokenizer("big/", rows=32000)                         # doctest: +SKIP
    >>> tok("hello").input_ids[:1]                                       # doctest: +SKIP
    [1]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder


def load_tokenizer(spec: str | os.PathLike | Folder, *, rows: int | None = None, revision: str | None = None,
                   token: str | None = None, what: str | None = None) -> Any:
    """The tokenizer of a model folder or Hub id.

    Args:
        spec: a folder (its links are checked first) or a Hub id.
        rows: the model's embedding rows; a tokenizer with more ids than that is refused (its ids from ``rows``
            up would index past the embedding).
        revision, token: for a Hub id.
        what: how the error sentence names the source (default: ``spec``).

    Raises:
        HfgrowError: a link leaves the folder, transformers cannot load it, or it has more ids than ``rows``.
    """
    from transformers import AutoTokenizer

    name = what or f"'{spec.path if isinstance(spec, Folder) else spec}'"
    if isinstance(spec, Folder) or Path(spec).expanduser().is_dir():
        folder = Folder(spec)
        folder.check_links()
        spec = str(folder.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(spec), revision=revision, token=token)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HTTP errors, a missing sentencepiece...
        first = (" ".join(str(exc).split()) or type(exc).__name__)[:200].rstrip(".")
        raise HfgrowError(f"cannot load the tokenizer of {name}: {first}.") from None
    if rows is not None and len(tokenizer) > rows:
        raise HfgrowError(
            f"the tokenizer of {name} has {len(tokenizer):,} tokens but the model's embedding has {rows:,} rows, "
            f"so token ids from {rows:,} up would crash training; use the tokenizer the model was trained with."
        )
    return tokenizer
