"""Run `hfgrow.continue` as users launch it: one process, or several through accelerate's launcher."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTINUE = ROOT / "hfgrow" / "continue.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / config),
                   "--num_processes", str(procs), "--main_process_port", str(free_port()), str(CONTINUE), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def launch_nodes(node_args: list[list[str]], *, config: str = "multi_cpu.yaml", env_extra: dict | None = None,
                 timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """`hfgrow.continue` as one process on each of ``len(node_args)`` machines, as a multi-node run launches it
    (`accelerate launch --num_machines N --machine_rank R --main_process_ip ...` once per node), all on this host;
    ``node_args[R]``: node R's arguments (its own --output-dir, as on nodes with local disks). Returns each
    launch's result, node 0 first (a node that does not end within ``timeout`` is killed: rc -9)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    port, nodes = free_port(), len(node_args)
    with contextlib.ExitStack() as files:
        logs = [(files.enter_context(tempfile.TemporaryFile("w+")), files.enter_context(tempfile.TemporaryFile("w+")))
                for _ in node_args]  # files, not pipes: a node blocked on a full pipe would stall the others
        procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                   str(ROOT / "configs" / config), "--num_machines", str(nodes), "--machine_rank",
                                   str(rank), "--num_processes", str(nodes), "--main_process_ip", "127.0.0.1",
                                   "--main_process_port", str(port), str(CONTINUE), *args],
                                  env=env, stdout=out, stderr=err, text=True, start_new_session=True)
                 for rank, (args, (out, err)) in enumerate(zip(node_args, logs))]
        deadline = time.monotonic() + timeout
        results = []
        for proc, (out, err) in zip(procs, logs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # the launcher and the training process it started
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
    return results
