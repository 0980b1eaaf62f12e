"""Training checkpoints: ``RUN/checkpoint-N`` folders, how they are found, read, written and pruned.

A checkpoint is accelerate's state (model, optimizer, RNG; plain, FSDP-sharded or DeepSpeed) plus
``hfgrow_state.json`` (step, tokens, data position, the run's settings, last losses). The state file is
written last, so its presence marks a complete checkpoint. A checkpoint is written into
``.tmp-checkpoint-N`` and swapped into place (:func:`hfgrow.io.executor.swap_into_place`), so a kill
at any moment leaves every ``checkpoint-N`` complete or absent.

Example:
    >>> latest_complete(Path("run"))
    Checkpoint(step=2000, path=PosixPath('run/checkpoint-2000'), complete=True)
    >>> read_state(Path("run/checkpoint-2000"))["tokens"]
    8192000
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError

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


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``hfgrow_state.json``: step, tokens, data position, run settings, last losses.

    Raises:
        HfgrowError: missing or unreadable (one sentence naming the checkpoint).
    """
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        int(state["step"])
        int(state["tokens"])
        state["data"]["domains"]
        dict(state["run"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HfgrowError(
            f"checkpoint {path} is corrupt or incomplete ({STATE_FILE}: {type(exc).__name__}); delete it to "
            "resume from an earlier one."
        ) from None
    return state


def save(accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int = 0) -> Path:
    """Write ``run_dir/checkpoint-<step>`` (every rank takes part); keep the ``keep`` newest (0: all).

    ``state`` becomes the checkpoint's ``hfgrow_state.json``; it is written (and synced) after accelerate's
    files, then the folder is swapped into place.
    """
    from hfgrow.io.executor import swap_into_place

    final = Path(run_dir) / f"checkpoint-{step}"
    tmp = Path(run_dir) / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(drop_aliases)
    try:
        accelerator.save_state(str(tmp))
    finally:
        hook.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        debug_kill("HFGROW_DEBUG_KILL_IN_SAVE", step)
        with open(tmp / STATE_FILE, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
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


def load(accelerator, checkpoint: Path) -> None:
    """Restore model, optimizer and RNG state from ``checkpoint`` (every rank).

    Raises:
        HfgrowError: the files are truncated, corrupt or of another model.
    """
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as exc:  # noqa: BLE001 - truncated safetensors, bad pickle, shape mismatch
        raise HfgrowError(
            f"checkpoint {checkpoint} is corrupt or does not fit this model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); delete it to resume from an earlier one."
        ) from None


def debug_kill(var: str, step: int) -> None:
    """Fault injection for tests: HFGROW_DEBUG_KILL_AT_STEP / HFGROW_DEBUG_KILL_IN_SAVE = N kills the process."""
    import signal

    if os.environ.get(var) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
