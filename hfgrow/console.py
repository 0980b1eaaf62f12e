"""What hfgrow says on stderr: one ``hfgrow`` logger and one progress-bar factory, both rank-0 aware.

Status goes to stderr through :data:`log`; what a command outputs (tables, JSON, a URL) stays on stdout
(``click.echo``). Every command takes ``--quiet/-q`` and ``--verbose/-v`` (hfgrow/cli/options.py) and calls
:func:`configure` once with them; a training process does the same with its own flags. Only the main process
of a distributed run (``RANK`` 0 or unset) shows status and bars: the others show errors only, so
``accelerate launch`` with 8 processes prints each line once.

Lines look as hfgrow always printed them: an info line is the plain message, a warning ``warning: ...``, a debug
line ``debug: ...``. An error line is written as given: it is the one sentence an exit path ends with
(``error: ...``, ``interrupted; ...``), so its caller spells it out. A record's ``prefix`` extra replaces the
level's prefix (``log.warning(note, extra={"prefix": ""})`` shows a ``note: ...`` line even with --quiet).

Example:
    >>> from hfgrow.console import configure, log, progress
    >>> configure(-1)                       # --quiet: warnings and errors only, no bars
    >>> log.info("writing 2 GB ...")        # not shown
    >>> log.warning("the layer map leaves out source layers 6-7")
    warning: the layer map leaves out source layers 6-7
    >>> for batch in progress(batches, desc="eval", unit="batch"): ...   # a bar only when it can be seen

Nothing here imports tqdm until a bar is made, nor touches the root logger: ``log`` does not propagate.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable

log = logging.getLogger("hfgrow")

#: what each level's line starts with (see the module docstring for errors)
PREFIXES = {logging.DEBUG: "debug: ", logging.INFO: "", logging.WARNING: "warning: ", logging.ERROR: "",
            logging.CRITICAL: ""}

_state = {"verbosity": 0, "main": True}


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is written, not when it was made (pytest's
    capsys and click's CliRunner replace it), above any progress bar showing there."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler sets it; the current sys.stderr is always used
        pass

    def emit(self, record: logging.LogRecord) -> None:
        std = sys.modules.get("tqdm.std")  # a bar can only be showing if tqdm was imported
        if std is None:
            super().emit(record)
            return
        with std.tqdm.external_write_mode(file=sys.stderr):  # clear the bars, write the line, redraw them
            super().emit(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = getattr(record, "prefix", None)
        if prefix is None:
            prefix = PREFIXES.get(record.levelno, "")
        return prefix + super().format(record)


def _is_main_from_env() -> bool:
    """torchrun and accelerate set RANK in every process they start; absent, this is the only process."""
    rank = os.environ.get("RANK", "").strip()
    return not rank.isdigit() or int(rank) == 0


def configure(verbosity: int = 0, *, main_process: bool | None = None) -> None:
    """Set what this process shows: ``verbosity`` -1 (--quiet: warnings and errors, no bars), 0 (status lines and
    bars) or 1 (-v: debug lines too). ``main_process`` None: from ``RANK`` (unset means main); a process that is
    not the main one shows errors only and no bars.

    Called once per command (or training process); calling it again replaces the earlier setting and its handler,
    so there is always exactly one. It runs with the defaults when this module is imported, so library callers
    (``hfgrow.stack(...)`` from Python) see the same lines as the command line.
    """
    main = _is_main_from_env() if main_process is None else bool(main_process)
    _state.update(verbosity=int(verbosity), main=main)
    if not main:
        level = logging.ERROR
    elif verbosity < 0:
        level = logging.WARNING
    elif verbosity == 0:
        level = logging.INFO
    else:
        level = logging.DEBUG
    for handler in [h for h in log.handlers if isinstance(h, _Stderr)]:
        log.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Format("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    log.disabled = False  # logging.config.dictConfig (a library's or an application's) disables existing loggers


def quiet() -> bool:
    """Whether status lines and progress bars are off (--quiet, or not the main process)."""
    return _state["verbosity"] < 0 or not _state["main"]


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str, unit: str = "it",
             unit_scale: bool = False, initial: int = 0, leave: bool = False, **tqdm_kwargs: Any):
    """The one progress bar: a tqdm on stderr, resized with the terminal, shown only where it can be seen (stderr
    is a terminal, as tqdm's ``disable=None`` decides) and only when :func:`quiet` is false. A hidden bar still
    iterates, counts and closes, so callers never test whether it shows.

    ``disable=True`` among ``tqdm_kwargs`` hides it too (a caller that is silent on its own account).

    Example:
        >>> with progress(total=n_bytes, desc="writing", unit="B", unit_scale=True) as bar:
        ...     bar.update(4096)
    """
    from tqdm.auto import tqdm

    asked = tqdm_kwargs.pop("disable", None)
    disable = True if quiet() or asked else None
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, initial=initial, leave=leave,
                file=sys.stderr, dynamic_ncols=True, disable=disable, **tqdm_kwargs)


configure()
