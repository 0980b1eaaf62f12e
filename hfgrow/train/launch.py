"""How ``hfgrow train`` starts training: the accelerate config checked against this machine, then the launcher.

Before any process starts, the config's process count is compared with what the machine has: GPUs for
the GPU distributed types (DDP ``MULTI_GPU``, ``FSDP``, ``DEEPSPEED``), CPU cores for CPU processes, and
memory per process estimated from the model size. A config may leave ``num_processes`` to the machine
(``-1``): one process per visible GPU. The launcher is ``accelerate launch -m hfgrow.continue``, run with
the interpreter of ``hfgrow`` itself, printed before it starts, and passed SIGINT/SIGTERM on.

Example:
    >>> machine = Machine.probe()                       # e.g. 8 GPUs of 80 GB, 96 cores, 1 TB
    >>> plan = plan_launch(Path("configs/ddp.yaml"), None, machine)
    >>> plan.processes, plan.on_gpus
    (8, True)
    >>> check_machine(plan, machine, n_params=1_100_048_384, trained_fraction=1.0)   # fits: no error
    >>> launch_command(plan, ["--model", "grown", "--data", "web.jsonl", "--output-dir", "run"])[-8:-6]
    ['-m', 'hfgrow.continue']
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.units import format_bytes, format_count

GPU_TYPES = ("MULTI_GPU", "FSDP", "DEEPSPEED")
# Training state per parameter, float32: weights 4 bytes; gradients 4 and AdamW's two moments 8 for the
# parameters that train. Activations come on top, so this is a floor, not an estimate of the peak.
WEIGHT_BYTES, TRAINING_BYTES = 4, 12


@dataclass(frozen=True)
class Machine:
    """What this machine offers the processes: visible GPUs, CPU cores, memory (None: unknown)."""

    gpus: int
    cpu_cores: int
    memory: int | None
    gpu_memory: int | None = None  # of the smallest visible GPU

    @classmethod
    def probe(cls) -> Machine:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        gpu_memory = min((torch.cuda.get_device_properties(i).total_memory for i in range(gpus)), default=None)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cls(gpus=gpus, cpu_cores=cores, memory=available_memory(), gpu_memory=gpu_memory)


def available_memory() -> int | None:
    """Bytes of memory new processes can use: MemAvailable, capped by this cgroup's limit (containers)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


@dataclass(frozen=True)
class LaunchPlan:
    """The processes ``hfgrow train`` will start."""

    config_file: Path | None
    distributed_type: str
    total_processes: int  # on every machine together: accelerate's --num_processes
    processes: int  # on this machine
    on_gpus: bool
    needs_gpus: bool  # the config asks for GPU processes
    host_copies: int  # processes that each hold the whole model in host memory while loading or training
    mixed_precision: str | None = None
    main_process_port: int | None = None


def read_accelerate_config(path: Path) -> dict[str, Any]:
    """An accelerate config file (YAML or JSON) as a dict."""
    import yaml

    from hfgrow.io.folder import read_user_file

    text = read_user_file(path, "accelerate config")
    try:
        data = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise HfgrowError(f"cannot read accelerate config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise HfgrowError(f"{path} is not an accelerate config.")
    return data


def plan_launch(config_file: Path | None, num_processes: int | None, machine: Machine, *,
                mixed_precision: str | None = None, main_process_port: int | None = None) -> LaunchPlan:
    """Which processes the config (and ``--num-processes``) asks for on this machine.

    Raises:
        HfgrowError: the config is unreadable, or leaves the count to a machine without GPUs.
    """
    config = read_accelerate_config(config_file) if config_file is not None else {}
    name = str(config_file) if config_file is not None else "the default launch"
    kind = str(config.get("distributed_type", "NO")).upper()
    machines = int(config.get("num_machines") or 1)
    if num_processes is not None and num_processes < 1:
        raise HfgrowError("--num-processes must be at least 1.")
    total = num_processes or int(config.get("num_processes") or (1 if kind == "NO" else -1))
    if total == -1:
        if not machine.gpus:
            raise HfgrowError(f"{name} leaves the process count to the machine (num_processes: -1, one per GPU), "
                              "but no GPU is visible; pass --num-processes N or use configs/multi_cpu.yaml.")
        total = machine.gpus * machines
    local = max(1, total // machines)
    # a config of a GPU type without use_cpu means GPU processes; otherwise GPUs are used when there are some
    needs_gpus = kind in GPU_TYPES and not config.get("use_cpu") and config_file is not None
    on_gpus = needs_gpus or (machine.gpus > 0 and not config.get("use_cpu"))
    fsdp = config.get("fsdp_config") or {}
    deepspeed = config.get("deepspeed_config") or {}
    one_copy = (kind == "FSDP" and fsdp.get("fsdp_cpu_ram_efficient_loading")) or \
        (kind == "DEEPSPEED" and deepspeed.get("zero3_init_flag"))
    return LaunchPlan(config_file, kind, total, local, on_gpus, needs_gpus, 1 if one_copy else local,
                      mixed_precision, main_process_port)


def trained_fraction(train: str, new_layers: list[int], num_layers: int | None) -> float:
    """The share of the parameters that get gradients and AdamW state, roughly (LoRA's adapters count as none).

    Example:
        >>> trained_fraction("all", [], 24), trained_fraction("new", [6, 13, 20], 24), trained_fraction("lora", [], 24)
        (1.0, 0.125, 0.0)
    """
    if train == "lora":
        return 0.0
    if train == "new" and num_layers:
        return len(new_layers) / num_layers
    return 1.0


def check_machine(plan: LaunchPlan, machine: Machine, n_params: int, trained_fraction: float) -> None:
    """Refuse a launch this machine cannot run: GPU processes without GPUs, more CPU processes than cores,
    processes whose model state cannot fit host memory (or GPU memory, under DDP).

    Raises:
        HfgrowError: one sentence with the numbers.
    """
    where = str(plan.config_file) if plan.config_file is not None else "this launch"
    if plan.needs_gpus and machine.gpus < plan.processes:
        have = f"only {machine.gpus}" if machine.gpus else "no"
        raise HfgrowError(f"{where} starts {plan.processes} {plan.distributed_type} processes on GPUs, but this "
                          f"machine has {have} visible GPU; pass --num-processes with the GPU count, or use "
                          "configs/cpu.yaml or configs/multi_cpu.yaml for CPU processes.")
    per_process = int(n_params * (WEIGHT_BYTES + TRAINING_BYTES * trained_fraction))
    if not plan.on_gpus:
        if plan.processes > machine.cpu_cores:
            raise HfgrowError(f"{where} starts {plan.processes} CPU processes, but this machine has "
                              f"{machine.cpu_cores} CPU cores; pass --num-processes with at most that many.")
        need = plan.processes * per_process
        what = f"{plan.processes} CPU process(es) × {format_bytes(per_process)} of weights and training state"
    else:
        need = plan.host_copies * n_params * WEIGHT_BYTES  # each loads the float32 weights before moving them
        what = f"{plan.host_copies} process(es) × {format_bytes(n_params * WEIGHT_BYTES)} of float32 weights"
        if plan.distributed_type == "MULTI_GPU" and machine.gpu_memory and per_process > machine.gpu_memory:
            raise HfgrowError(f"a {format_count(n_params)}-parameter model needs at least {format_bytes(per_process)} "
                              f"per GPU under DDP (weights, gradients, AdamW state) but each GPU has "
                              f"{format_bytes(machine.gpu_memory)}; use configs/fsdp2.yaml or "
                              "configs/deepspeed_zero3.yaml.")
    if machine.memory is not None and need > machine.memory:
        raise HfgrowError(f"a {format_count(n_params)}-parameter model needs at least {format_bytes(need)} of memory "
                          f"({what}) but {format_bytes(machine.memory)} is available; start fewer processes "
                          "(--num-processes) or use a machine with more memory.")


def launch_command(plan: LaunchPlan, args: list[str]) -> list[str]:
    """``python -m accelerate.commands.launch ... -m hfgrow.continue ARGS``: what ``hfgrow train`` runs.

    ``--quiet``: a failed run ends with hfgrow's one-line error, not also the launcher's traceback.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    if plan.config_file is not None:
        cmd += ["--config_file", str(plan.config_file), "--num_processes", str(plan.total_processes)]
    else:  # spell out what accelerate would otherwise warn about
        cmd += ["--num_processes", str(plan.processes), "--num_machines", "1", "--dynamo_backend", "no",
                "--mixed_precision", plan.mixed_precision or "no"]
        if plan.processes > 1:
            cmd += ["--multi_gpu"]  # DDP; on a machine without GPUs the processes fall back to gloo on the CPU
    if plan.config_file is not None and plan.mixed_precision:
        cmd += ["--mixed_precision", plan.mixed_precision]
    if plan.main_process_port:
        cmd += ["--main_process_port", str(plan.main_process_port)]
    return [*cmd, "-m", "hfgrow.continue", *args]


#: Set by ``hfgrow train`` for the processes it launches: its pid, which each training process watches (it stops
#: when that process is gone, e.g. killed with SIGKILL, instead of training on alone).
PARENT_ENV = "HFGROW_LAUNCHED_BY"


def _forward(group: int, signum: int, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # the group has already exited
        pass


def run_launcher(cmd: list[str]) -> int:
    """Run ``cmd`` in its own process group and return its exit code (128 + N when signal N ended it).

    SIGINT and SIGTERM sent to this process go to the whole group (the launcher and every training
    process), so a scheduler's SIGTERM reaches training, which stops cleanly, even though the launcher
    itself does not pass signals on. A SIGKILL cannot be passed on: every training process watches this
    one (:data:`PARENT_ENV`) and stops as on SIGTERM when it is gone.
    """
    process = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, PARENT_ENV: str(os.getpid())})
    previous = {signum: signal.signal(signum, partial(_forward, process.pid))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code
