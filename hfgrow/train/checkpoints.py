"""Training checkpoints: ``RUN/checkpoint-N`` folders, how they are found, read, written and pruned.

A checkpoint is accelerate's state (model, optimizer, RNG; plain, FSDP-sharded or DeepSpeed) plus
``hfgrow_state.json`` (step, tokens, data position, the run's settings, last losses). The state file is
written last, so its presence marks a complete checkpoint. A checkpoint is written into
``.tmp-checkpoint-N`` and swapped into place (:func:`hfgrow.io.output.swap_into_place`), so a kill
at any moment leaves every ``checkpoint-N`` complete or absent.

Example:
    >>> latest_complete(Path("run"))
    Checkpoint(step=2000, path=PosixPath('run/checkpoint-2000'), complete=True)
    >>> read_state(Path("run/checkpoint-2000")).tokens
    8192000
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder

STATE_FILE = "hfgrow_state.json"  # written last into a checkpoint: its presence marks it complete
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One ``checkpoint-N`` folder of a run."""

    step: int
    path: Path
    complete: bool


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every ``checkpoint-N`` folder of ``run_dir``, oldest first.

    Example:
        >>> [c.step for c in list_checkpoints(Path("run"))]
        [1000, 2000]
    """
    found = []
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir():
                found.append(Checkpoint(int(m.group(1)), p, (p / STATE_FILE).is_file()))
    return sorted(found, key=lambda c: c.step)


def latest_complete(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir`` (None: there is none)."""
    complete = [c for c in list_checkpoints(run_dir) if c.complete]
    return complete[-1] if complete else None


@dataclass
class RunState:
    """Where a run is: what a checkpoint's ``hfgrow_state.json`` holds, and what a growth point's ``stage-K/``
    card tells (the same record; at a growth point there is no data position to save).

    ``run`` is the run's settings as ``run.json`` had them when the state was written (a resume with other
    settings rewrites run.json, so the checkpoint's copy is the reference); ``stage`` the growth stage the
    model is in; ``last_*`` the losses the card and a resumed run's console show.
    """

    step: int
    tokens: int
    run: dict[str, Any]
    stage: int = 0
    data: dict[str, Any] | None = None  # the training data's position (None at a growth point)
    last_loss: float | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    last_eval_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: Any, path: Path) -> RunState:
        """The state ``path`` holds, checked (:func:`check_state`) before anything is resumed from it."""
        check_state(state, path)
        return cls(step=state["step"], tokens=state["tokens"], run=state["run"], stage=state.get("stage") or 0,
                   data=state["data"], last_loss=state.get("last_loss"), last_eval=state.get("last_eval") or {},
                   last_eval_step=state.get("last_eval_step"))


def read_state(path: Path) -> RunState:
    """A checkpoint's ``hfgrow_state.json``: step, tokens, data position, run settings, last losses.

    Raises:
        HfgrowError: missing, unreadable or inconsistent (one sentence naming the checkpoint).
    """
    path = Path(path)
    return RunState.from_dict(Folder(path).read_json(STATE_FILE, f"the checkpoint's {STATE_FILE}"), path)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_numbers(value: Any, where: str = "") -> str | None:
    """The first place in a data position that is not a whole number >= 0 (positions and counts are nothing else)."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _bad_numbers(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_numbers(item, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(value, (int, float)) and not _whole(value):
        return f"{where} = {value!r}"
    return None


def check_state(state: Any, path: Path) -> None:
    """What a checkpoint claims, checked before anything is resumed from it: types and ranges of the step, token
    count, stage and data position, the step against the folder's name, the tokens against the step and the
    run's tokens per step, the stage against the run's stages. (``run.json`` is rewritten by every launch, a
    resume with other settings included, so the checkpoint's own copy of the settings is the reference.)

    Raises:
        HfgrowError: one sentence naming the checkpoint and the first field that is wrong.
    """
    def bad(what: str) -> HfgrowError:
        return HfgrowError(f"checkpoint {path} is corrupt or was edited ({STATE_FILE}: {what}); delete it to resume "
                           "from an earlier one.")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    for key in ("step", "tokens"):
        if not _whole(state.get(key)):
            raise bad(f"{key} is {state.get(key)!r}, not a whole number of at least 0")
    if state.get("stage") is not None and not _whole(state["stage"]):
        raise bad(f"stage is {state['stage']!r}, not a whole number of at least 0")
    named = CHECKPOINT_RE.match(path.name)
    if named and int(named.group(1)) != state["step"]:
        raise bad(f"step {state['step']} in a folder named {path.name}")
    data, run = state.get("data"), state.get("run")
    if not isinstance(data, dict) or not isinstance(data.get("domains"), dict) or not isinstance(run, dict):
        raise bad("no data position or run settings")
    wrong = _bad_numbers(data)
    if wrong:
        raise bad(f"data position {wrong}, not a whole number of at least 0")
    per_step = run.get("tokens_per_step")
    if not _whole(per_step) or not per_step or state["tokens"] != state["step"] * per_step:
        raise bad(f"{state['tokens']:,} tokens at step {state['step']:,} with {per_step!r} tokens per step")
    stages = run.get("stages")
    if state.get("stage") and (not isinstance(stages, list) or state["stage"] >= len(stages)):
        raise bad(f"stage {state['stage']} of a run with {len(stages) if isinstance(stages, list) else 'no'} stages")
    loss, evals, eval_step = state.get("last_loss"), state.get("last_eval"), state.get("last_eval_step")
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
        raise bad(f"last_loss is {loss!r}, not a number")
    if evals is not None and not (isinstance(evals, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in evals.values())):
        raise bad("last_eval is not a table of losses")
    if eval_step is not None and not _whole(eval_step):
        raise bad(f"last_eval_step is {eval_step!r}, not a whole number of at least 0")


def save(accelerator, run_dir: Path, state: RunState, keep: int = 0) -> Path:
    """Write ``run_dir/checkpoint-<step>`` (every rank takes part); keep the ``keep`` newest (0: all).

    ``state`` (at its step) becomes the checkpoint's ``hfgrow_state.json``; it is written (and synced) after accelerate's
    files, then the folder is swapped into place. One process per disk that holds ``run_dir`` writes the model,
    optimizer and state files (:func:`hfgrow.train.growth.writes_output`: nodes with disks of their own each
    keep a whole DDP checkpoint; FSDP2 and DeepSpeed shards stay with the process that wrote them); every
    process writes its own RNG state.
    """
    from hfgrow.io.output import atomic_write, swap_into_place
    from hfgrow.train.growth import writes_output

    step = state.step
    final = Path(run_dir) / f"checkpoint-{step}"
    tmp = Path(run_dir) / f".tmp-checkpoint-{step}"
    writes = writes_output(accelerator, run_dir)
    if writes and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(drop_aliases)
    project = accelerator.project_configuration
    each_node = project.save_on_each_node
    project.save_on_each_node = writes  # accelerate: the main process, and local main processes told to
    try:
        accelerator.save_state(str(tmp))
    finally:
        hook.remove()
        project.save_on_each_node = each_node
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        debug_kill("HFGROW_DEBUG_KILL_IN_SAVE", step)
    if writes:
        atomic_write(tmp / STATE_FILE, state.to_dict())
        swap_into_place(tmp, final)  # the final step may be saved twice after a resume: never in place
        if keep > 0:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old.path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def drop_aliases(models, weights: list[dict], output_dir) -> None:
    """accelerate's save-state pre-hook: leave out every name that is another view of a tensor already saved.

    A tied model's ``lm_head.weight`` *is* its embedding; safetensors cannot hold two names for one storage,
    and accelerate would remove the alias itself with a warning at every save. The alias is rebuilt by the
    model's tying on load, as accelerate's own removal relies on.
    """
    for state in weights:
        seen = set()
        for name in list(state):
            tensor = state[name]
            if not hasattr(tensor, "untyped_storage") or tensor.device.type == "meta":
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                   tuple(tensor.stride()))
            if key in seen:
                del state[name]
            else:
                seen.add(key)


def check_same(resume_from: Path | None) -> None:
    """Every process resumes from the same step (every process calls it, once accelerate has started).

    Each process finds the newest complete checkpoint in its own ``--output-dir``; nodes with disks of their own
    hold one copy each, and a node stopped while it swapped one into place may lack the newest.

    Raises:
        HfgrowError: on every process, when the processes found different checkpoints (or some none).
    """
    from accelerate.utils import gather_object

    found = gather_object([resume_from.name if resume_from is not None else None])
    if len(set(found)) > 1:
        first = next(r for r, name in enumerate(found) if name != found[0])
        raise HfgrowError(f"the nodes' --output-dir folders hold different checkpoints: process 0 resumes from "
                          f"{found[0] or 'none'}, process {first} from {found[first] or 'none'}; copy the newest "
                          "complete one to every node that lacks it (or delete it where only some have it) and resume.")


def load(accelerator, checkpoint: Path) -> None:
    """Restore model, optimizer and RNG state from ``checkpoint`` (every rank).

    Raises:
        HfgrowError: the files are truncated, corrupt or of another model.
    """
    from torch.distributed.checkpoint.api import CheckpointException

    Folder(checkpoint).check_links()  # accelerate opens what it finds there on its own
    try:
        accelerator.load_state(str(checkpoint))
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - truncated safetensors, bad pickle, shape mismatch
        cause = read_failure(exc)
        if lacks_shards(checkpoint, cause):
            raise HfgrowError(f"checkpoint {checkpoint} lacks a file of its shards ({describe(cause)}); {SPREAD} give "
                              "every node the whole checkpoint folder to resume from it.") from None
        raise HfgrowError(f"checkpoint {checkpoint} is corrupt or does not fit this model ({describe(cause)}); "
                          "delete it to resume from an earlier one.") from None


SPREAD = ("on nodes with disks of their own a sharded checkpoint (FSDP, DeepSpeed) is spread over them, each node "
          "holding its processes' shards and the main node the index;")


def lacks_shards(checkpoint: Path, cause: BaseException) -> bool:
    """Whether reading ``checkpoint`` failed with ``cause`` because a file of its FSDP or DeepSpeed shards is
    missing (each process writes its own shards into its node's folder; torch's own reader may report it as
    another error that names the missing file)."""
    folder = Path(checkpoint)
    shards = folder.is_dir() and any(p.is_dir() and (p.name.startswith(("pytorch_model_fsdp_", "optimizer_"))
                                                     or (p / "mp_rank_00_model_states.pt").exists())
                                     for p in folder.iterdir())
    return shards and (isinstance(cause, FileNotFoundError) or "No such file or directory" in str(cause))


def read_failure(exc: BaseException) -> BaseException:
    """The error behind a failed checkpoint read: torch's CheckpointException (a BaseException, which
    ``except Exception`` misses) wraps each process's own; the first is returned."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        return next(iter(failures.values()))[0]
    return exc


def describe(exc: BaseException) -> str:
    """An error in one line: its type and the first 200 characters of its first line."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def debug_kill(var: str, step: int) -> None:
    """Fault injection for tests: HFGROW_DEBUG_KILL_AT_STEP / HFGROW_DEBUG_KILL_IN_SAVE = N kills the process."""
    import signal

    if os.environ.get(var) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
