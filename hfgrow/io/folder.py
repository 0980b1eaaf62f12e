"""A model folder is untrusted input: every file hfgrow reads from it must resolve inside it.

People grow checkpoints they downloaded or cloned; a ``git clone`` of a model repo can carry
``tokenizer.json -> ~/.cache/huggingface/token`` and an index can name ``../../x.safetensors``. This
module is the one owner of the rule:

* a file is read only if its path, with every symbolic link followed, stays inside the folder, or
  inside the ``blobs/`` folder of the same repo when the folder is a Hugging Face cache snapshot
  (``.../models--org--name/snapshots/<sha>``, whose files are links into ``../../blobs``);
* it must be a regular file (no FIFO or device that would block or never end);
* names taken from the folder's own files (an index's ``weight_map``) must be relative.

Anything else is one :class:`~hfgrow.errors.HfgrowError` sentence that names the file. Before a folder
is handed to a library that reads files on its own (transformers, peft, tokenizers),
:meth:`ModelFolder.check_links` refuses any link in it that leaves it.

Example:
    >>> folder = ModelFolder("clone")
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
from typing import Any, Iterable

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


class ModelFolder:
    """A model folder and the places its files may live in (itself; its repo's blobs in the HF cache).

    Attributes:
        path: the folder as given (made absolute).
        root: the folder with every link resolved.
    """

    def __init__(self, path: str | os.PathLike | "ModelFolder"):
        if isinstance(path, ModelFolder):
            path = path.path
        self.path = Path(path).expanduser().absolute()
        self.root = self.path.resolve()
        blobs = _hf_cache_blobs(self.root)
        self._allowed: tuple[Path, ...] = (self.root,) + ((blobs,) if blobs is not None else ())

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r})"

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
            raise HfgrowError(f"{label} is not a file name inside the model folder {self.path}; hfgrow reads only "
                              "files inside it.")
        candidate = self.root / relative
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL byte
            raise HfgrowError(f"{label} in {self.path} cannot be resolved ({exc}).") from None
        if not self._inside(resolved):
            kind = "a link to" if candidate.is_symlink() or any(
                p.is_symlink() for p in candidate.parents if self.root in p.parents) else "at"
            raise HfgrowError(f"{label} in {self.path} is {kind} {resolved}, outside the model folder; hfgrow reads "
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

    def read_json(self, name: str, what: str | None = None, *, kind: type = dict) -> Any:
        """Parse the JSON file ``name``; it must hold a ``kind`` (an object by default).

        Raises:
            HfgrowError: missing, outside the folder, too large, not UTF-8 JSON, or not a ``kind``.
        """
        path = self.file(name, what)
        label = what or name
        try:
            size = path.stat().st_size
            if size > MAX_JSON_BYTES:
                raise HfgrowError(f"{label} in {self.path} is {size / 1e6:.0f} MB; a model's JSON files are far "
                                  "smaller, so hfgrow does not parse it.")
            data = json.loads(path.read_bytes())
        except HfgrowError:
            raise
        except OSError as exc:
            raise HfgrowError(f"cannot read {label} in {self.path} ({exc.strerror or exc}).") from None
        except (ValueError, RecursionError) as exc:
            reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else _first_line(exc)
            raise HfgrowError(f"{label} in {self.path} is not valid JSON ({reason}).") from None
        if not isinstance(data, kind):
            expected = "a JSON object" if kind is dict else f"a JSON {kind.__name__}"
            raise HfgrowError(f"{label} in {self.path} holds {_json_type(data)}, not {expected}.")
        return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            dict: "an object"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] or type(exc).__name__).rstrip(".")
