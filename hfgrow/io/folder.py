"""The one way in: every file hfgrow reads from a folder a user names resolves inside that folder.

Model folders, training checkpoints, run folders, token folders, recipes and the folders they name,
tokenizers, data folders: all are untrusted input. People grow checkpoints they downloaded or cloned; a
``git clone`` of a model repo can carry ``tokenizer.json -> ~/.cache/huggingface/token``, an index can name
``../../x.safetensors``, a hand-edited ``tokens.json`` can name ``/etc/passwd`` as a shard. This module is
the one owner of the rule (:class:`Folder`), and :func:`user_file` the one owner of reading a single file a
user names on the command line (a data file, a mixture, a law, a log):

* a file is read only if its path, with every symbolic link followed, stays inside the folder, or
  inside the ``blobs/`` folder of the same repo when the folder is a Hugging Face cache snapshot
  (``.../models--org--name/snapshots/<sha>``, whose files are links into ``../../blobs``);
* it must be a regular file (no FIFO or device that would block or never end);
* names taken from the folder's own files (an index's ``weight_map``) must be relative.

Anything else is one :class:`~hfgrow.errors.HfgrowError` sentence that names the file. Before a folder
is handed to a library that reads files on its own (transformers, peft, tokenizers, accelerate's
``load_state``), :meth:`Folder.check_links` refuses any link in it that leaves it. Reads are bounded
(:data:`MAX_JSON_BYTES`; memory maps and arrays are checked against the size the index claims), and
JSON nested too deeply for Python's parser is one sentence, not a RecursionError.

No other module of hfgrow opens a user's file (``tests/test_architecture.py`` checks it).

Example:
    >>> folder = Folder("clone")
    >>> folder.file("config.json")
    PosixPath('/abs/clone/config.json')
    >>> folder.read_json("config.json")["model_type"]
    'llama'
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterable

from hfgrow.errors import HfgrowError

#: Largest JSON file hfgrow parses from a model folder (config, checkpoint index, adapter config).
MAX_JSON_BYTES = 64 << 20
_SKIP_DIRS = {".git"}


def _hf_cache_blobs(root: Path) -> Path | None:
    """``<repo>/blobs`` when ``root`` is a snapshot of the Hugging Face cache (``models--*/snapshots/<rev>``)."""
    snapshots = root.parent
    repo = snapshots.parent
    if snapshots.name != "snapshots" or not repo.name.startswith("models--"):
        return None
    blobs = repo / "blobs"
    return blobs.resolve() if blobs.is_dir() else None


class Folder:
    """A folder a user named and the places its files may live in (itself; its repo's blobs in the HF cache).

    Attributes:
        path: the folder as given (made absolute).
        root: the folder with every link resolved.
    """

    def __init__(self, path: str | os.PathLike | "Folder"):
        if isinstance(path, Folder):
            path = path.path
        self.path = Path(path).expanduser().absolute()
        self.root = self.path.resolve()
        blobs = _hf_cache_blobs(self.root)
        self._allowed: tuple[Path, ...] = (self.root,) + ((blobs,) if blobs is not None else ())

    def __repr__(self) -> str:
        return f"Folder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    # ------------------------------------------------------------------ containment

    def _inside(self, resolved: Path) -> bool:
        return any(resolved == base or base in resolved.parents for base in self._allowed)

    def _resolve(self, name: str | os.PathLike, what: str | None) -> tuple[Path, Path]:
        """(path inside the folder, fully resolved target); refuses names and links that leave the folder."""
        label = what or str(name)
        if not isinstance(name, (str, os.PathLike)):
            raise HfgrowError(f"{label} is not a file name.")
        relative = Path(name)
        if relative.is_absolute() or not str(name).strip():
            raise HfgrowError(f"{label} is not a file name inside the folder {self.path}; hfgrow reads only "
                              "files inside it.")
        candidate = self.root / relative
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL byte
            raise HfgrowError(f"{label} in {self.path} cannot be resolved ({exc}).") from None
        if not self._inside(resolved):
            kind = "a link to" if candidate.is_symlink() or any(
                p.is_symlink() for p in candidate.parents if self.root in p.parents) else "at"
            raise HfgrowError(f"{label} in {self.path} is {kind} {resolved}, outside the folder; hfgrow reads "
                              "only files inside it (copy the file in if you trust it).")
        return candidate, resolved

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` (absolute, or relative to the folder) resolves inside the folder."""
        try:
            return self._inside((self.root / Path(path)).resolve())
        except (OSError, RuntimeError, ValueError):
            return False

    def find(self, name: str | os.PathLike, what: str | None = None) -> Path | None:
        """The regular file ``name`` inside the folder, or None when there is none.

        Raises:
            HfgrowError: ``name`` (or a link on its way) leads outside the folder, or it is not a regular file.
        """
        candidate, resolved = self._resolve(name, what)
        try:
            mode = resolved.stat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HfgrowError(f"cannot read {what or name} in {self.path} ({exc.strerror or exc}).") from None
        if stat.S_ISDIR(mode):
            return None
        if not stat.S_ISREG(mode):
            raise HfgrowError(f"{what or name} in {self.path} is not a regular file; hfgrow reads only regular files.")
        return candidate

    def file(self, name: str | os.PathLike, what: str | None = None) -> Path:
        """The regular file ``name`` inside the folder.

        Raises:
            HfgrowError: it is missing, not a regular file, or leads outside the folder.
        """
        path = self.find(name, what)
        if path is None:
            raise HfgrowError(f"{what or name} is missing from {self.path}.")
        return path

    def glob(self, patterns: Iterable[str]) -> list[Path]:
        """The regular files matching any of ``patterns`` (relative, fnmatch-style), sorted, each once.

        Raises:
            HfgrowError: a match leads outside the folder (the whole read is refused, not the file skipped).
        """
        found: dict[Path, None] = {}
        for pattern in patterns:
            for item in sorted(self.root.glob(pattern)):
                path = self.find(item.relative_to(self.root))
                if path is not None:
                    found[path] = None
        return list(found)

    def check_links(self) -> None:
        """Refuse the folder when any entry in it is a link that leaves it (or a link loop).

        Called before a library that opens files on its own (transformers, peft, tokenizers) reads the folder.
        ``.git`` is not looked into.
        """
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in [*dirnames, *filenames]:
                entry = Path(dirpath) / name
                if entry.is_symlink():
                    self._resolve(entry.relative_to(self.root), None)

    # ------------------------------------------------------------------ reading

    def read_bytes(self, name: str | os.PathLike, what: str | None = None, *, max_bytes: int = MAX_JSON_BYTES) -> bytes:
        """The bytes of the regular file ``name``, at most ``max_bytes`` of them.

        Raises:
            HfgrowError: missing, outside the folder, not a regular file, larger than ``max_bytes``, unreadable.
        """
        return _read_bounded(self.file(name, what), f"{what or name} in {self.path}", max_bytes)

    def read_json(self, name: str | os.PathLike, what: str | None = None, *, kind: type = dict) -> Any:
        """Parse the JSON file ``name``; it must hold a ``kind`` (an object by default).

        Raises:
            HfgrowError: missing, outside the folder, too large, not UTF-8 JSON, or not a ``kind``.
        """
        label = f"{what or name} in {self.path}"
        return parse_bounded_json(self.read_bytes(name, what), label, kind)

    def open_binary(self, name: str | os.PathLike, what: str | None = None) -> IO[bytes]:
        """The regular file ``name`` opened for reading bytes (the caller closes it)."""
        path = self.file(name, what)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise HfgrowError(f"cannot read {what or name} in {self.path} ({exc.strerror or exc}).") from None

    def memmap(self, name: str | os.PathLike, dtype: Any, count: int, what: str | None = None):
        """``name`` memory-mapped read-only as ``count`` items of ``dtype``; its size must be exactly that.

        Raises:
            HfgrowError: missing, outside the folder, not a regular file, or not ``count`` items long.
        """
        import numpy as np

        dtype = np.dtype(dtype)
        label = what or str(name)
        path = self.find(name, what)
        size = path.stat().st_size if path is not None else None
        if size != count * dtype.itemsize:
            state = "missing" if size is None else f"{size:,} bytes where its index says {count * dtype.itemsize:,}"
            raise HfgrowError(f"{label} in {self.path} is {state}; the folder is damaged or was edited.")
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(count,))

    def load_array(self, name: str | os.PathLike, what: str | None = None, *, max_bytes: int = MAX_JSON_BYTES,
                   mmap: bool = False):
        """The ``.npy`` array ``name`` (no pickles): read whole (at most ``max_bytes`` of file), or memory-mapped
        read-only (``mmap``: any size, nothing read until used).

        Raises:
            HfgrowError: missing, outside the folder, too large, or not a plain ``.npy`` array.
        """
        import io

        import numpy as np

        label = f"{what or name} in {self.path}"
        try:
            if mmap:
                return np.load(self.file(name, what), mmap_mode="r", allow_pickle=False)
            return np.load(io.BytesIO(self.read_bytes(name, what, max_bytes=max_bytes)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise HfgrowError(f"{label} is not a plain .npy array ({_first_line(exc)}).") from None


#: The old name of :class:`Folder`, from when only model folders went through it.
ModelFolder = Folder


def user_file(path: str | os.PathLike, what: str) -> Path:
    """A single file a user named (a data file, a mixture, a law, an observation log): it must exist and be a
    regular file (a FIFO or a device would block or never end). A link the user named is the user's choice and
    is followed; files inside a folder the user named go through :class:`Folder` instead.

    Raises:
        HfgrowError: missing, a folder, or not a regular file.

    Example:
        >>> user_file("mix.json", "mixture file")                      # doctest: +SKIP
        PosixPath('mix.json')
    """
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise HfgrowError(f"the {what} '{path}' does not exist.") from None
    except (OSError, ValueError) as exc:
        raise HfgrowError(f"cannot read the {what} '{path}' ({getattr(exc, 'strerror', None) or exc}).") from None
    if stat.S_ISDIR(mode):
        raise HfgrowError(f"the {what} '{path}' is a folder, not a file.")
    if not stat.S_ISREG(mode):
        raise HfgrowError(f"the {what} '{path}' is not a regular file; hfgrow reads only regular files.")
    return p


def open_user_file(path: str | os.PathLike, what: str) -> IO[bytes]:
    """A single file a user named (see :func:`user_file`), or one a :class:`Folder` listed, opened for reading
    bytes (the caller closes it); a failure is one sentence."""
    p = user_file(path, what)
    try:
        return open(p, "rb")
    except OSError as exc:
        raise HfgrowError(f"cannot read the {what} '{path}' ({exc.strerror or exc}).") from None


def read_user_file(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a single file a user named (see :func:`user_file`), at most ``max_bytes``."""
    return _read_bounded(user_file(path, what), f"the {what} '{path}'", max_bytes)


def user_lines(path: str | os.PathLike, what: str, *, max_line: int = 1 << 20) -> Iterable[tuple[int, bytes]]:
    """(line number, line) of a text file a user named (a JSONL log), streamed; a line longer than ``max_line``
    bytes is an error sentence naming the file and line.

    Example:
        >>> next(iter(user_lines("run/eval_observations.jsonl", "observation log")))   # doctest: +SKIP
        (1, b'{"step": 100, ...}\\n')
    """
    p = user_file(path, what)
    try:
        with open(p, "rb") as fh:
            for number, line in enumerate(iter(lambda: fh.readline(max_line + 1), b""), 1):
                if len(line) > max_line:
                    raise HfgrowError(f"line {number} of the {what} '{path}' is longer than {max_line:,} bytes.")
                yield number, line
    except OSError as exc:
        raise HfgrowError(f"cannot read the {what} '{path}' ({exc.strerror or exc}).") from None


def parse_bounded_json(data: bytes | str, label: str, kind: type | None = dict, *, object_pairs_hook=None) -> Any:
    """Parse JSON read from a user's file; ``label`` names it in the error sentence; ``kind`` (None: any) is the
    type the top level must have. Nesting too deep for Python's parser is an error sentence, not a crash."""
    try:
        value = json.loads(data, object_pairs_hook=object_pairs_hook)
    except HfgrowError:
        raise
    except json.JSONDecodeError as exc:
        raise HfgrowError(f"{label} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (ValueError, RecursionError) as exc:
        reason = "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else (
            "it is nested too deeply" if isinstance(exc, RecursionError) else _first_line(exc))
        raise HfgrowError(f"{label} is not valid JSON ({reason}).") from None
    if kind is not None and not isinstance(value, kind):
        expected = "a JSON object" if kind is dict else f"a JSON {kind.__name__}"
        raise HfgrowError(f"{label} holds {_json_type(value)}, not {expected}.")
    return value


def _read_bounded(path: Path, label: str, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise HfgrowError(f"{label} is {size / 1e6:,.0f} MB, more than the {max_bytes / 1e6:,.0f} MB hfgrow "
                              "reads from such a file.")
        with open(path, "rb") as fh:
            return fh.read(size)  # what the size said (a file growing meanwhile is read as it was)
    except OSError as exc:
        raise HfgrowError(f"cannot read {label} ({exc.strerror or exc}).") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            dict: "an object"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] or type(exc).__name__).rstrip(".")
