"""Run `hfgrow.continue` as users launch it: one process, or several through accelerate's launcher."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTINUE = ROOT / "hfgrow" / "continue.py"


def launch_continue(args: list[str], *, procs: int = 1, config: str = "multi_cpu.yaml", script: bool = False,
                    env_extra: dict | None = None, timeout: int = 300,
                    check: bool = True) -> subprocess.CompletedProcess:
    """`hfgrow.continue ARGS` offline. One process runs the installed form (`python -m hfgrow.continue`; with
    ``script``, the clone's `hfgrow/continue.py`); several run the clone form through `accelerate launch
    --config_file configs/CONFIG` on a free port. ``check``: a non-zero exit fails with the end of stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    if procs == 1:
        command = [sys.executable, *([str(CONTINUE)] if script else ["-m", "hfgrow.continue"]), *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / config),
                   "--num_processes", str(procs), "--main_process_port", str(port), str(CONTINUE), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc
