"""A training run's records: writing them, reading them back, and plotting its loss curves.

A run folder holds ``run.json`` (the run's settings), ``log.jsonl`` (one JSON line per optimizer step,
``{"type": "train", ...}``, and per evaluation, ``{"type": "eval", "losses": {domain: loss}, ...}``; a run
with ``--grow`` also one per growth, ``{"type": "growth", "step", "tokens", "stage", "layers_before",
"layers_after", "operator", "losses_after", ...}``) and ``eval_observations.jsonl`` (held-out losses in the
BiMix fitting format, see :mod:`hfgrow.mix`). Every record carries ``stage`` (0 before the first growth);
tokens count from the start of the run, so the stages share one token axis.
:class:`RunLog` writes them, :func:`read_run` is the one reader (``hfgrow plot``, the export's model card,
``hfgrow compare``), and :func:`plot_curves` the one loss plot.

Example:
    >>> run = read_run(Path("run"))
    >>> run.train[-1]["step"], run.eval_curve()[:2]
    (2000, [(0, 7.91), (4096000, 4.37)])
    >>> plot_run(Path("run"), x="flops")
    PosixPath('run/loss.png')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder
from hfgrow.io.output import atomic_file, atomic_write, open_log

#: The longest line of a run log read back (a record is a few hundred bytes; an eval of many domains a few KB).
MAX_RECORD_BYTES = 1 << 20

RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
OBSERVATIONS_FILE = "eval_observations.jsonl"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def truncate_log(path: Path, max_step: int, stage: int = 0) -> None:
    """Drop the lines of a JSONL log written after the checkpoint a run resumes from: past ``max_step``, or at
    ``max_step`` in a later stage than the checkpoint's ``stage`` (a growth made after it is made again).
    Streamed: a long run's log is never held in memory.

    Example:
        >>> truncate_log(Path("run/log.jsonl"), 2000)  # steps 2001.. of the killed run are gone
    """
    if not path.is_file():
        return
    with atomic_file(path, what=path.name) as out:
        for line, record in _records(path):
            if (record.get("step", 0), record.get("stage", 0)) <= (max_step, stage):
                out.write(line + b"\n")


def _records(path: Path) -> Iterator[tuple[bytes, dict]]:
    """(line, record) of a run's JSON-lines log, read line by line through the run folder; lines cut by a kill
    (or longer than a record can be) are skipped."""
    with Folder(path.parent).open_binary(path.name) as fh:
        for line in iter(lambda: fh.readline(MAX_RECORD_BYTES + 1), b""):
            if len(line) > MAX_RECORD_BYTES:  # no record is this long: skip to the line's end
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_RECORD_BYTES)
                continue
            line = line.rstrip(b"\n")
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if isinstance(record, dict):
                yield line, record


class RunLog:
    """Writes a run's records. Only the process with ``write=True`` (the main one) touches files.

    A fresh run starts its logs empty (a run killed before its first checkpoint leaves nothing behind
    that the next one appends to); a resumed run keeps the records up to its checkpoint's step.
    Numbers of every record also go to accelerate's trackers (``--report-to``) when ``trackers`` is set.

    Example:
        >>> with RunLog(Path("run"), resume_step=None, write=True) as log:
        ...     log.start({"model": "org/grown", "n_params": 1100048384})
        ...     log.train({"step": 1, "loss": 7.9, "tokens": 4096})
        ...     log.eval(1, 4096, {"web": 7.7}, mixture={"web": 1.0})
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None, write: bool, trackers=None, resume_stage: int = 0):
        self.run_dir = Path(run_dir)
        self.write = write
        self.trackers = trackers  # an accelerate.Accelerator with trackers initialised, or None
        self._log = self._observations = None
        if write:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            mode = "w" if resume_step is None else "a"
            if resume_step is not None:
                truncate_log(self.run_dir / LOG_FILE, resume_step, resume_stage)
                truncate_log(self.run_dir / OBSERVATIONS_FILE, resume_step, resume_stage)
            self._log = open_log(self.run_dir / LOG_FILE, append=mode == "a")
            self._observations = open_log(self.run_dir / OBSERVATIONS_FILE, append=mode == "a")

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, info: dict[str, Any]) -> None:
        """Write ``run.json``: the run's settings."""
        if self.write:
            atomic_write(self.run_dir / RUN_FILE, info)

    def _record(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()
        if self.trackers is not None:
            self.trackers.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def train(self, record: dict[str, Any]) -> None:
        """One optimizer step: ``{"step", "loss", "lr", "grad_norm", "tokens", ...}``."""
        self._record({"type": "train", **record})

    def growth(self, record: dict[str, Any]) -> None:
        """One growth: ``{"step", "tokens", "stage" (the one it starts), "layers_before", "layers_after", ...}``."""
        self._record({"type": "growth", **record})

    def eval(self, step: int, tokens: int, losses: dict[str, float], mixture: dict[str, float],
             stage: int = 0) -> dict[str, Any]:
        """Held-out losses per domain at ``step``; after training steps, trained domains also become BiMix
        observations (the law L(r, s) has no value at s = 0, so the evaluation before training is not one)."""
        record = {"type": "eval", "step": step, "tokens": tokens, "losses": losses,
                  "eval_loss": sum(losses.values()) / len(losses), "stage": stage}
        self._record(record)
        if self._observations is not None and step > 0:
            trained = {name: w for name, w in mixture.items() if w > 0}
            for name, value in losses.items():
                if name in trained:
                    self._observations.write(json.dumps({"mixture": trained, "step": step, "domain": name,
                                                         "loss": value}) + "\n")
            self._observations.flush()
        return record

    def close(self) -> None:
        for fh in (self._log, self._observations):
            if fh is not None:
                fh.close()
        self._log = self._observations = None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What a run folder recorded: its steps, its evaluations and its settings (``run.json``)."""

    folder: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    growths: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_params(self) -> int | None:
        return self.info.get("n_params")

    @property
    def trained_tokens(self) -> int:
        """Tokens the run trained on (0 before its first step)."""
        return max((int(r["tokens"]) for r in self.train), default=0)

    def eval_curve(self) -> list[tuple[int, float]]:
        """(tokens seen, mean held-out loss over the eval domains) at every evaluation, step order; at a growth,
        the evaluation of the grown model follows the one of the model it grew from (same tokens)."""
        points = [(int(r["tokens"]), float(r["eval_loss"]), r["step"], 0) for r in self.evals]
        points += [(int(g["tokens"]), float(g["eval_loss_after"]), g["step"], 1) for g in self.growths
                   if g.get("eval_loss_after") is not None]
        return [(tokens, loss) for tokens, loss, _, _ in sorted(points, key=lambda p: (p[2], p[3]))]

    def flops(self, tokens: float) -> float:
        """Training FLOPs ≈ 6·N·tokens after ``tokens`` tokens, N the parameters of each stage in turn (a mixture of
        experts: the parameters one token uses, ``n_active``).

        Raises:
            HfgrowError: run.json does not record the parameter count.
        """
        stages = self.info.get("stages") or ([{"start_tokens": 0, "n_params": self.n_params}] if self.n_params else [])
        if not stages:
            raise HfgrowError(f"{self.folder / RUN_FILE} does not record the parameter count; plot with --x tokens.")
        total = 0.0
        for stage, nxt in zip(stages, [*stages[1:], None]):
            end = tokens if nxt is None else min(tokens, nxt["start_tokens"])
            total += 6.0 * stage.get("n_active", stage["n_params"]) * max(0.0, end - stage["start_tokens"])
        return total


def read_run(folder: Path | str) -> RunRecord:
    """Read a run folder's ``log.jsonl`` (the last record per step and type wins) and ``run.json``.

    Raises:
        HfgrowError: no log.jsonl (not a training run folder).
    """
    folder = Path(folder)
    path = folder / LOG_FILE
    if not path.is_file():
        raise HfgrowError(f"{folder} has no {LOG_FILE}; is it a training run's --output-dir?")
    kinds: dict[str, dict[int, dict]] = {"train": {}, "eval": {}, "growth": {}}
    for _, record in _records(path):
        try:
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        kind = record.get("type")
        kinds.get(kind if isinstance(kind, str) else "train", kinds["train"])[step] = record
    train, evals, growths = kinds["train"], kinds["eval"], kinds["growth"]
    info: dict[str, Any] = {}
    if (folder / RUN_FILE).is_file():
        info = Folder(folder).read_json(RUN_FILE)
    return RunRecord(folder, [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)], info,
                     [growths[k] for k in sorted(growths)])


# ---------------------------------------------------------------------------------------------
# Plotting
# ---------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One line of a loss plot."""

    label: str
    points: list[tuple[float, float]]
    style: str = "-"
    marker: str | None = None
    width: float = 1.0


def plot_curves(curves: list[Curve], path: Path, *, xlabel: str, title: str,
                ylabel: str = "loss (nats/token)") -> Path:
    """Draw loss curves into a PNG at ``path``; curves without points are left out.

    Example:
        >>> plot_curves([Curve("train", [(0, 7.9), (4096, 6.2)])], Path("loss.png"), xlabel="tokens", title="run")
        PosixPath('loss.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for curve in curves:
        if curve.points:
            xs, ys = zip(*curve.points)
            ax.plot(xs, ys, curve.style, marker=curve.marker, ms=3, lw=curve.width, label=curve.label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as fh:
        fig.savefig(fh, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


def plot_run(folder: Path | str, out: Path | str | None = None, x: str = "tokens") -> Path:
    """Train loss and per-domain held-out loss of a run against tokens (or FLOPs ≈ 6·N·tokens), as a PNG.

    A run with growth is one set of curves on one axis; each growth is drawn as a dotted jump from the
    held-out loss of the model it grew from to that of the grown model (FLOPs count each stage's N).

    Example:
        >>> plot_run(Path("run"), Path("run-loss.png"), x="flops")
        PosixPath('run-loss.png')
    """
    run = read_run(folder)
    if not run.train and not run.evals:
        raise HfgrowError(f"{run.folder / LOG_FILE} has no steps or evaluations yet.")
    if x == "flops":
        run.flops(0)  # says so when run.json has no parameter count
        axis, label = run.flops, "training FLOPs (≈ 6·N·tokens)"
    else:
        axis, label = float, "tokens"
    curves = [Curve("train", [(axis(r["tokens"]), r["loss"]) for r in run.train])]
    for domain in sorted({d for r in run.evals for d in r.get("losses", {})}):
        points = [(axis(r["tokens"]), r["losses"][domain]) for r in run.evals if domain in r.get("losses", {})]
        points += [(axis(g["tokens"]), g["losses_after"][domain]) for g in run.growths
                   if domain in (g.get("losses_after") or {})]
        curves.append(Curve(f"eval: {domain}", sorted(points, key=lambda p: p[0]), marker="o"))
    for g in run.growths:
        before = next((r["eval_loss"] for r in run.evals if r["step"] == g["step"]), None)
        if before is not None and g.get("eval_loss_after") is not None:
            curves.append(Curve(f"growth {g['layers_before']} → {g['layers_after']} layers",
                                [(axis(g["tokens"]), before), (axis(g["tokens"]), g["eval_loss_after"])], style=":",
                                width=1.5))
    return plot_curves(curves, Path(out) if out else run.folder / "loss.png", xlabel=label,
                       title=run.folder.resolve().name)
