"""PLACEHOLDER until the console branch lands (the lead's working copy): the `hfgrow` logger."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("hfgrow")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.DEBUG: "debug: "}.get(record.levelno, "")
        return prefix + record.getMessage()


class _Stderr(logging.StreamHandler):
    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(verbosity: int = 0, *, main_process: bool | None = None) -> None:
    if main_process is None:
        main_process = int(os.environ.get("RANK", "0")) == 0
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(_Format())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.ERROR if not main_process else
                 {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))])


def progress(iterable=None, *, total=None, desc: str, unit: str = "it", unit_scale: bool = False, initial: int = 0,
             leave: bool = False, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, initial=initial, leave=leave,
                file=sys.stderr, dynamic_ncols=True, disable=not log.isEnabledFor(logging.INFO), **kwargs)
