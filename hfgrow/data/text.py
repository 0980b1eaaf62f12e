"""Read documents from local text files: the one place that knows the file types.

Supported files (matched on the lower-cased name):

- ``.txt``, ``.md``, ``.text``: the whole file is one document (UTF-8, invalid bytes become
  U+FFFD, line endings kept as they are);
- ``.jsonl``, ``.ndjson``: one JSON object per line, the document is its ``text_field``
  (default ``"text"``); blank lines are skipped;
- ``.parquet`` (needs ``pyarrow``): one document per row of the ``text_field`` column;
- ``.gz`` of the text and JSON-lines formats (``.txt.gz``, ``.jsonl.gz``, ...).

Empty documents (empty files, ``""`` or null texts) are skipped everywhere. A folder stands for
the supported files under it, recursively, in sorted order; hidden entries (a name starting with
".") and other files are skipped. Bad input raises :class:`~hfgrow.errors.HfgrowError` with one
sentence.

The ``*_from`` readers start at a saved position (a byte offset, a row index) and yield the
position after every document (or piece of a plain-text file), so a reader can resume exactly
(see :mod:`hfgrow.data.specs`); :func:`iter_documents_from` picks the reader from the file name.

Example:
    >>> from hfgrow.data.text import list_files, iter_documents
    >>> docs = [d for f in list_files("data/web") for d in iter_documents(f)]   # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import open_user_file

__all__ = [
    "TXT_SUFFIXES",
    "JSONL_SUFFIXES",
    "PARQUET_SUFFIXES",
    "TEXT_SUFFIXES",
    "SUPPORTED_FILES",
    "DocPart",
    "DocRest",
    "DocMiddle",
    "piece",
    "file_kind",
    "open_binary",
    "list_files",
    "iter_txt_from",
    "iter_txt",
    "iter_jsonl_from",
    "iter_jsonl",
    "iter_parquet_from",
    "iter_parquet",
    "iter_documents_from",
    "iter_documents",
    "read_documents",
]

Kind = Literal["txt", "jsonl", "parquet"]
PathLike = str | os.PathLike

#: Plain-text files: the whole file is one document.
TXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".text")
#: JSON-lines files: one document per line.
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")
#: Parquet files: one document per row.
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet",)
#: Every file name ending the readers accept.
TEXT_SUFFIXES: tuple[str, ...] = (
    *TXT_SUFFIXES,
    *JSONL_SUFFIXES,
    *PARQUET_SUFFIXES,
    *(suffix + ".gz" for suffix in TXT_SUFFIXES + JSONL_SUFFIXES),
)
#: The accepted file types, for error messages.
SUPPORTED_FILES = ".txt/.md/.text, .jsonl/.ndjson, .parquet or .gz of the text and JSON-lines types"


class DocPart(str):
    """A piece of a document that goes on in the next item: no EOS is put after it.

    :func:`iter_txt_from` cuts a long file into pieces so memory stays bounded; every other ``str``
    a reader yields is a whole document.

    Example:
        >>> isinstance(DocPart("def f():\\n"), str)
        True
    """

    __slots__ = ()


class DocRest(str):
    """A piece of a document that goes on from the previous item: no BOS is put before it.

    The last piece of a long plain-text file (and the first piece read from inside the file, when
    reading starts at an offset) is one; :class:`DocMiddle` is both this and a :class:`DocPart`.

    Example:
        >>> isinstance(DocRest("    return 1"), str)
        True
    """

    __slots__ = ()


class DocMiddle(DocPart, DocRest):
    """A piece that goes on from the previous item and in the next one: neither BOS nor EOS around it."""

    __slots__ = ()


def piece(text: str, *, starts: bool, ends: bool) -> str:
    """``text`` marked as what it is in its document: whole (``str``), first piece (:class:`DocPart`),
    middle piece (:class:`DocMiddle`) or last piece (:class:`DocRest`).

    Example:
        >>> type(piece("a", starts=False, ends=True)).__name__, type(piece("a", starts=True, ends=True)).__name__
        ('DocRest', 'str')
    """
    if starts:
        return text if ends else DocPart(text)
    return DocRest(text) if ends else DocMiddle(text)


def file_kind(path: PathLike) -> Kind | None:
    """How a file is read, from its name: ``"txt"``, ``"jsonl"``, ``"parquet"`` or None (unsupported).

    Example:
        >>> file_kind("web.JSONL.gz"), file_kind("notes.md"), file_kind("t.parquet"), file_kind("a.csv")
        ('jsonl', 'txt', 'parquet', None)
    """
    name = Path(path).name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(TXT_SUFFIXES):
        return "txt"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def open_binary(path: PathLike) -> IO[bytes]:
    """Open a file for reading bytes, decompressing it if its name ends with ``.gz``.

    Example:
        >>> with open_binary("web.jsonl.gz") as fh:                  # doctest: +SKIP
        ...     first = fh.readline()
    """
    raw = open_user_file(path, "data file")
    if str(path).lower().endswith(".gz"):
        magic = raw.read(2)
        raw.seek(0)
        if magic and magic != b"\x1f\x8b":  # gzip itself would fail mid-stream
            raw.close()
            raise HfgrowError(f"{path} is named .gz but is not gzip-compressed.")
        unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
        unzipped.myfileobj = raw  # closed with it, as gzip.open(name) does for the file it opens
        return unzipped  # type: ignore[return-value]
    return raw


def _open_text(path: PathLike) -> IO[str]:
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


def _unknown_type(path: PathLike) -> HfgrowError:
    return HfgrowError(f"unknown file type '{path}': use {SUPPORTED_FILES}, or a folder of them.")


def list_files(path: PathLike) -> list[Path]:
    """The files a path stands for: the file itself, or the supported files under a folder.

    Folders are searched recursively; the result is sorted, hidden entries (a name starting with
    ".") and unsupported files are left out.

    Raises:
        HfgrowError: the path does not exist, a file is of an unsupported type, or a folder holds
            no supported file.

    Example:
        >>> list_files("data/web")                                    # doctest: +SKIP
        [PosixPath('data/web/part-0.jsonl.gz'), PosixPath('data/web/sub/part-1.parquet')]
    """
    root = Path(path).expanduser()
    if root.is_dir():
        from hfgrow.io.folder import Folder

        folder = Folder(root)  # every file must lie inside the folder named: a link out refuses the whole folder
        files = []
        for dirpath, dirnames, filenames in os.walk(folder.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # hidden folders are not data
            for d in dirnames:  # a linked folder is not walked (its files are elsewhere) and may not lead out
                if (Path(dirpath) / d).is_symlink():
                    folder.find((Path(dirpath) / d).relative_to(folder.root))
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(folder.root)
                if not name.startswith(".") and file_kind(rel):
                    found = folder.find(rel)
                    if found is not None:
                        files.append(found)
        files.sort()
        if not files:
            raise HfgrowError(f"folder '{path}' holds no {SUPPORTED_FILES} files.")
        return files
    if not root.exists():
        raise HfgrowError(f"data file or folder '{path}' does not exist.")
    if file_kind(root) is None:
        raise _unknown_type(path)
    from hfgrow.io.folder import user_file

    return [user_file(root, "data file")]


def _space_before(buf: bytes, i: int) -> bool:
    """Whether the character that ends just before byte ``i`` is whitespace (as ``str.isspace``)."""
    byte = buf[i - 1]
    if byte < 0x80:
        return chr(byte).isspace()
    return buf[max(0, i - 4) : i].decode("utf-8", errors="replace")[-1].isspace()


def _space_at(buf: bytes, i: int) -> bool:
    """Whether the character that starts at byte ``i`` is whitespace; a character cut off by the end
    of ``buf`` counts as whitespace, so no cut is made next to it."""
    byte = buf[i]
    if byte < 0x80:
        return chr(byte).isspace()
    char = buf[i : i + 4].decode("utf-8", errors="replace")[0]
    return char.isspace() or (char == "\ufffd" and i + 4 > len(buf))


def _cut_point(buf: bytes, start: int) -> int:
    """Byte index at which to cut ``buf`` (at or after ``start``), or -1 if there is no safe place.

    Preferred: right after a single newline between two non-space characters; fallback: before a
    single space between two non-space characters. GPT-2 and Llama-3 style byte-level
    pre-tokenizers (and whitespace splitters) split the whole text there too, so such a cut
    changes no token; runs of whitespace are never cut (their regexes treat a run at the end of a
    text differently). Both separators are ASCII, so a cut never splits a UTF-8 character.
    """
    end = len(buf) - 1
    for sep in (b"\n", b" "):
        i = end
        while True:
            i = buf.rfind(sep, start, i)
            if i <= 0:
                break
            if not _space_before(buf, i) and not _space_at(buf, i + 1):
                return i + 1 if sep == b"\n" else i
    return -1


def _char_start(buf: bytes, i: int) -> int:
    """The largest index ≤ ``i`` that does not fall inside a UTF-8 character."""
    for _ in range(3):
        if i <= 0 or buf[i] & 0xC0 != 0x80:
            break
        i -= 1
    return i


def iter_txt_from(path: PathLike, offset: int = 0, piece_bytes: int = 1 << 16) -> Iterator[tuple[str, int]]:
    """Yield ``(piece, byte offset after it)`` for a plain-text file (or its .gz) from byte ``offset``.

    The file is one document, read in pieces of about ``piece_bytes`` bytes so memory stays bounded;
    all pieces but the last are :class:`DocPart`, all but the first :class:`DocRest` (see :func:`piece`;
    reading from ``offset`` > 0 starts inside the document, so its first piece goes on from the
    previous one). Pieces are cut at a single newline (or, failing
    that, a single space) between two non-space characters, where byte-level BPE pre-tokenizers
    split anyway, so for them the token stream is the same as for the whole file (tokenizers that
    prepend a space to every text, e.g. SentencePiece "Metaspace", may differ by a token per
    piece). Offsets count uncompressed bytes for .gz files; invalid UTF-8 becomes U+FFFD. An empty
    file yields nothing.

    Example:
        >>> list(iter_txt_from("a.txt"))                                # doctest: +SKIP
        [('the whole file\\n', 15)]
    """
    with open_binary(path) as fh:
        if offset:
            fh.seek(offset)
        pos, buf = offset, b""
        starts = not offset  # from inside the file, the first piece goes on from the previous one
        while True:
            block = fh.read(piece_bytes)
            if not block:
                break
            buf += block
            if len(buf) < 2 * piece_bytes:
                continue
            cut = _cut_point(buf, len(buf) // 4)
            if cut < 0:
                if len(buf) < 64 * piece_bytes:
                    continue
                cut = _char_start(buf, len(buf) - piece_bytes)  # no word boundary at all: cut anywhere
            pos += cut
            yield piece(buf[:cut].decode("utf-8", errors="replace"), starts=starts, ends=False), pos
            starts = False
            buf = buf[cut:]
        if buf:
            yield piece(buf.decode("utf-8", errors="replace"), starts=starts, ends=True), pos + len(buf)


def iter_txt(path: PathLike, piece_bytes: int = 1 << 16) -> Iterator[str]:
    """Yield one plain-text file (or its .gz) as a single document, in pieces (see :func:`iter_txt_from`).

    Example:
        >>> "".join(iter_txt("corpus/a.txt"))                        # doctest: +SKIP
        'the whole file\\n'
    """
    for piece, _ in iter_txt_from(path, 0, piece_bytes):
        yield piece


def _line_number(path: PathLike, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset`` (only computed for error messages)."""
    number = 1
    with open_binary(path) as fh:
        while offset > 0:
            block = fh.read(min(offset, 1 << 20))
            if not block:
                break
            number += block.count(b"\n")
            offset -= len(block)
    return number


def iter_jsonl_from(path: PathLike, offset: int = 0, text_field: str = "text") -> Iterator[tuple[str, int]]:
    """Yield ``(text, byte offset after its line)`` for the lines of a JSON-lines file from ``offset``.

    Offsets count uncompressed bytes for .gz files. Blank lines and empty texts are skipped.

    Raises:
        HfgrowError: a line is not a JSON object with a string ``text_field`` (the message names
            the file and line number).

    Example:
        >>> list(iter_jsonl_from("web.jsonl"))                         # doctest: +SKIP
        [('first document', 32), ('second document', 65)]
        >>> list(iter_jsonl_from("web.jsonl", 32))                     # doctest: +SKIP
        [('second document', 65)]
    """
    with open_binary(path) as fh:
        if offset:
            fh.seek(offset)
        end = offset
        for line in fh:
            start, end = end, end + len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for invalid UTF-8
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
                problem = f"is not valid JSON ({reason})"
            else:
                if not isinstance(record, dict) or text_field not in record:
                    problem = f'has no "{text_field}" field'
                elif not isinstance(record[text_field], str):
                    problem = f'has a "{text_field}" field that is not a string'
                else:
                    if record[text_field]:
                        yield record[text_field], end
                    continue
            raise HfgrowError(f"{path}:{_line_number(path, start)} {problem}.")


def iter_jsonl(path: PathLike, text_field: str = "text") -> Iterator[str]:
    """Yield the ``text_field`` of every line of a JSON-lines file (or its .gz); one document each.

    Example:
        >>> list(iter_jsonl("web.jsonl"))                              # doctest: +SKIP
        ['first document', 'second document']
    """
    for text, _ in iter_jsonl_from(path, 0, text_field):
        yield text


def iter_parquet_from(
    path: PathLike, row: int = 0, text_field: str = "text", batch_rows: int = 1024
) -> Iterator[tuple[str, int]]:
    """Yield ``(text, index of the next row)`` for the rows of a parquet file from row ``row``.

    Reads ``batch_rows`` rows at a time, starting at the row group that holds ``row``. Null and
    empty texts are skipped.

    Raises:
        HfgrowError: pyarrow is missing, the file is not parquet, it has no ``text_field`` column,
            or the column holds something other than strings.

    Example:
        >>> list(iter_parquet_from("train.parquet", 1))                 # doctest: +SKIP
        [('second document', 2)]
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HfgrowError(f"reading '{path}' needs pyarrow: pip install pyarrow.") from None
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HfgrowError(f"'{path}' is not a readable parquet file ({reason}).") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise HfgrowError(f"'{path}' has no '{text_field}' column (columns: {', '.join(names)}).")
    first = 0  # index of the first row of the first group read
    groups = []
    for group in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if groups or row < first + rows:
            groups.append(group)
        else:
            first += rows
    if not groups:
        return
    index = first
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            index += 1
            if index <= row or text is None or text == "":
                continue
            if not isinstance(text, str):
                raise HfgrowError(f"'{path}' column '{text_field}' holds {type(text).__name__} values, not text.")
            yield text, index


def iter_parquet(path: PathLike, text_field: str = "text", batch_rows: int = 1024) -> Iterator[str]:
    """Yield the ``text_field`` column of a parquet file, one document per row, in row batches.

    Example:
        >>> next(iter_parquet("train-00000.parquet"))                  # doctest: +SKIP
        'first document'
    """
    for text, _ in iter_parquet_from(path, 0, text_field, batch_rows):
        yield text


def iter_documents_from(
    path: PathLike, position: int = 0, text_field: str = "text"
) -> Iterator[tuple[str, int]]:
    """Yield ``(text, position after it)`` for one supported file, from a saved ``position``.

    The position is a byte offset (plain text, JSON lines) or a row index (parquet); a plain-text
    file comes in :class:`DocPart` pieces (see :func:`iter_txt_from`).

    Raises:
        HfgrowError: unsupported file type, or a reader's error (bad JSON line, no pyarrow, ...).

    Example:
        >>> list(iter_documents_from("web.jsonl", 32))                 # doctest: +SKIP
        [('second document', 65)]
    """
    kind = file_kind(path)
    if kind == "txt":
        yield from iter_txt_from(path, position)
    elif kind == "jsonl":
        yield from iter_jsonl_from(path, position, text_field)
    elif kind == "parquet":
        yield from iter_parquet_from(path, position, text_field)
    else:
        raise _unknown_type(path)


def iter_documents(path: PathLike, text_field: str = "text", *, piece_bytes: int | None = None) -> Iterator[str]:
    """Yield the documents of one supported file.

    Args:
        path: a .txt/.md/.text, .jsonl/.ndjson or .parquet file, or .gz of a text type.
        text_field: the JSON field / parquet column holding the text.
        piece_bytes: if given, a plain-text file comes in :class:`DocPart` pieces of about this
            many bytes (see :func:`iter_txt_from`); otherwise as one string.

    Raises:
        HfgrowError: unsupported file type, or a reader's error (bad JSON line, no pyarrow, ...).

    Example:
        >>> list(iter_documents("web.jsonl.gz"))                       # doctest: +SKIP
        ['first document', 'second document']
    """
    kind = file_kind(path)
    if kind == "txt":
        if piece_bytes:
            yield from iter_txt(path, piece_bytes)
        else:
            with _open_text(path) as f:
                text = f.read()
            if text:
                yield text
    elif kind == "jsonl":
        yield from iter_jsonl(path, text_field)
    elif kind == "parquet":
        yield from iter_parquet(path, text_field)
    else:
        raise _unknown_type(path)


def read_documents(path: PathLike, text_field: str = "text") -> list[str]:
    """All documents of a supported file, or of the supported files under a folder (sorted).

    Raises:
        HfgrowError: see :func:`list_files` and :func:`iter_documents`.

    Example:
        >>> read_documents("valid.jsonl")                               # doctest: +SKIP
        ['first document', 'second document']
    """
    return [doc for file in list_files(path) for doc in iter_documents(file, text_field)]
