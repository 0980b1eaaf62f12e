"""The one way out: every file and folder hfgrow writes goes through this module.

* :class:`OutputFolder` — a folder written as a whole (a grown model, an export, a stage, a checkpoint, a token
  folder's finished index): it is built in a hidden sibling ``.NAME.hfgrow-tmp-PID`` and renamed into place at
  the end, so Ctrl-C, SIGTERM, a crash, SIGKILL or a full disk leave OUT as it was.
* :func:`check_output_path` — the ``--overwrite`` rule: OUT may not be a source, inside one or around one, the
  current folder or one that holds it; a non-empty OUT is replaced only when ``--overwrite`` is given and it is
  a model folder.
* :func:`atomic_write` — one file (JSON, YAML, text, bytes) written to a temporary name, synced and renamed, so
  a reader never sees half a file.
* :func:`write_error` — a failed write is one sentence (disk full, read-only, name too long, permission).
* :func:`stop_on_signals` — SIGTERM (what schedulers and ``kill`` send) handled like Ctrl-C, so every ``with
  OutputFolder`` cleans up.

No other module of hfgrow opens a file for writing (``tests/test_architecture.py`` checks it).

Example:
    >>> with OutputFolder(Path("big"), overwrite=False) as tmp:          # doctest: +SKIP
    ...     atomic_write(tmp / "config.json", "{}")
    >>> atomic_write(Path("runs/mix.json"), {"domains": {}})            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from hfgrow.errors import HfgrowError
from hfgrow.io.checkpoint import has_weights
from hfgrow.units import format_bytes

def _disk_margin(needed: int) -> int:
    """Free space kept on top of what an output needs (file-system metadata, logs written meanwhile): a tenth of
    it, at least 1 MB and at most 64 MB (a fixed 64 MB refused a 1.3 MB output on a small file system)."""
    return min(64 << 20, max(1 << 20, needed // 10))



def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a model (config.json and weights) or an hfgrow output (hfgrow.yaml)."""
    folder = Path(folder)
    if (folder / "hfgrow.yaml").is_file():
        return True
    return (folder / "config.json").is_file() and has_weights(folder)


def check_output_path(out: Path, sources: Iterable[Path], overwrite: bool) -> None:
    """Refuse outputs that would clobber data.

    OUT may not be SRC, inside it or around it; it must be absent or empty unless ``overwrite`` is given, and
    ``overwrite`` replaces only a model folder (config.json + weights, or an hfgrow output), never the current
    folder or one above it.
    """
    try:
        _check_output_path(Path(out).expanduser().resolve(), sources, overwrite)
    except OSError as exc:  # a name too long, a path through a file, no permission to look
        raise write_error(exc, Path(out)) from None


def _check_output_path(out: Path, sources: Iterable[Path], overwrite: bool) -> None:
    for src in sources:
        src = Path(src).resolve()
        if out == src or src in out.parents:
            raise HfgrowError(f"the output {out} is the source folder or inside it; choose another output folder.")
        if out in src.parents:
            raise HfgrowError(f"the source {src} is inside the output {out}; choose another output folder.")
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise HfgrowError(f"the output {out} is the current folder or holds it, and OUT is replaced as a whole; "
                          "name a new folder, e.g. ./grown.")
    if not out.exists():
        return
    if not out.is_dir():
        raise HfgrowError(f"{out} exists and is not a folder; choose another output folder.")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise HfgrowError(f"{out} already exists and is not empty; pass --overwrite to replace it.")
    if not is_model_folder(out):
        raise HfgrowError(f"--overwrite replaces only an empty folder or a model folder (config.json with weights, "
                          f"or an hfgrow output), and {out} is neither; choose another output folder.")


def _temp_name(final: Path, kind: str, pid: int) -> Path:
    """``.NAME.hfgrow-KIND-PID`` beside ``final``, shortened (with a hash) when it would exceed 255 bytes."""
    name = f".{final.name}.hfgrow-{kind}-{pid}"
    if len(name.encode()) > 255:
        import hashlib

        digest = hashlib.sha1(final.name.encode()).hexdigest()[:12]
        name = f".{final.name.encode()[:120].decode(errors='ignore')}-{digest}.hfgrow-{kind}-{pid}"
    return final.parent / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Delete the temporary folders (and files) an earlier run into ``final`` left behind when it was killed
    (SIGKILL, power loss): ``.NAME.hfgrow-tmp-PID`` / ``-old-PID`` whose process is gone. Returns what was
    removed."""
    removed = []
    for kind in ("tmp", "old"):
        pattern = _temp_name(final, kind, 0).name[:-1] + "*"
        for path in final.parent.glob(glob_escape(pattern)):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and not path.is_symlink():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file():  # a file atomic_file was writing
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def glob_escape(pattern: str) -> str:
    """Escape glob metacharacters of a file name, keeping a trailing ``*``."""
    import glob

    return glob.escape(pattern[:-1]) + "*" if pattern.endswith("*") else glob.escape(pattern)


_OS_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "a file name is too long for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error occurred",
}


def write_error(exc: OSError, out: Path) -> HfgrowError:
    """One sentence for a failed write into ``out`` (nothing of it was left behind, OUT is as it was)."""
    reason = _OS_REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()
    where = f" ({exc.filename})" if exc.filename else ""
    return HfgrowError(f"cannot write {out}: {reason}{where}; {out} was left as it was.")


class OutputFolder:
    """A temporary sibling of ``out``, renamed to ``out`` on success and deleted on failure.

    A failed write (full disk, read-only or missing permission, a name too long) becomes one HfgrowError
    sentence; temporary folders of earlier runs into ``out`` that were killed are removed first. Whether ``out``
    may be replaced is :func:`check_output_path`'s decision, made before anything is built.

    Example:
        >>> check_output_path(Path("big"), [Path("small")], overwrite=False)
        >>> with OutputFolder(Path("big")) as tmp:
        ...     atomic_write(tmp / "config.json", {})
    """

    def __init__(self, out: Path):
        self.out = Path(out).expanduser().resolve()
        self.tmp = _temp_name(self.out, "tmp", os.getpid())

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir()
        except OSError as exc:
            raise write_error(exc, self.out) from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise write_error(exc, self.out) from None
            return
        try:
            uniform_modes(self.tmp)
            swap_into_place(self.tmp, self.out)
        except OSError as error:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise write_error(error, self.out) from None


def uniform_modes(folder: Path) -> None:
    """Give every file under ``folder`` the permission bits a new file gets here (the umask's).

    safetensors writes through a private temporary file (mode 0600) and copied tokenizer files keep their
    source's bits; an output folder is shared and published as a whole, so its files should all read alike.
    """
    probe = folder / ".hfgrow-mode"
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted.

    At every moment ``final`` is either the old complete folder or the new one, never a mix.
    """
    old = None
    if final.exists():
        old = _temp_name(final, "old", os.getpid())
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)  # put the old folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_free_space(folder: Path, needed: int) -> None:
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    margin = _disk_margin(needed)
    if free < needed + margin:
        raise HfgrowError(f"not enough disk space at {folder}: the output needs {format_bytes(needed)} (and "
                          f"{format_bytes(margin)} to spare), {format_bytes(free)} free.")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, what: str | None = None) -> Iterator[IO[bytes]]:
    """A binary file handle whose content becomes ``path`` as a whole when the block ends without error (written
    to ``.NAME.hfgrow-tmp-PID`` beside it, synced, renamed); on an error ``path`` is left as it was.

    Example:
        >>> with atomic_file(Path("run/loss.png")) as fh:               # doctest: +SKIP
        ...     fig.savefig(fh, format="png")
    """
    path = Path(path)
    tmp = _temp_name(path, "tmp", os.getpid())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(exc, Path(what) if what else path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def open_log(path: str | os.PathLike, *, append: bool) -> IO[str]:
    """A log file of a run folder (JSON lines), opened to append to (a resumed run) or anew; the caller flushes
    after each record and closes it. A failure to open is one sentence."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a" if append else "w", encoding="utf-8")
    except OSError as exc:
        raise write_error(exc, path) from None


def atomic_write(path: str | os.PathLike, data: Any, *, what: str | None = None) -> Path:
    """Write ``data`` to ``path`` as a whole: to ``.NAME.hfgrow-tmp-PID`` beside it, synced, then renamed.

    ``data`` is bytes, text, or anything else JSON can hold (written indented, with a final newline). Missing
    parent folders are created. A failure is one sentence and leaves ``path`` as it was.

    Example:
        >>> atomic_write(Path("run/run.json"), {"steps": 10})           # doctest: +SKIP
        PosixPath('run/run.json')
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        data = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with atomic_file(path, what=what) as fh:
        fh.write(data)
    return path


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds (and cleans up) exactly as Ctrl-C does."""


def _raise_stop(signum: int, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    # a second signal must not interrupt the cleanup the first one started (nor print "Exception ignored")
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM raises :class:`Terminated` (a
    KeyboardInterrupt), once: after the first, both are ignored while the program cleans up. Outside the main
    thread (where Python cannot handle signals) it does nothing.

    Example:
        >>> with stop_on_signals():                                      # doctest: +SKIP
        ...     grow_model(...)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
