"""`hfgrow train` checks the accelerate config against the machine before starting any process.

The machine is described by hand (``Machine``) so that a CPU-only test machine can stand in for any other;
no test starts more than the one process it checks forwarding with.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.cli import run_cli
from safetensors.torch import load_file

from hfgrow.eval.tiny import make_model, make_tokenizer, tiny_llama_config
from hfgrow.train import launch
from hfgrow.train.launch import Machine, run_launcher

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GB = 10**9


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    tokenizer = make_tokenizer(folder, vocab_size=300)
    make_model(folder, tiny_llama_config(layers=2, vocab_size=len(tokenizer)), tokenizer=False)
    (folder / "data.txt").write_text("the cat sat on the mat. " * 200)
    return folder


@pytest.fixture
def machine(monkeypatch):
    """Install a stand-in machine and a launcher that records the command instead of running it."""
    launched: list[list[str]] = []

    def use(**spec) -> list[list[str]]:
        monkeypatch.setattr(Machine, "probe", classmethod(lambda cls: Machine(**spec)))
        monkeypatch.setattr(launch, "run_launcher", lambda command: launched.append(command) or 0)
        return launched

    return use


def train(model: Path, capsys, *options: str) -> tuple[int, str, str]:
    return run_cli(["train", *options, "--model", model, "--data", model / "data.txt", "--output-dir",
                    model.parent / "run", "--seq-len", "32", "--max-steps", "2"], capsys)


def n_params(model: Path) -> int:
    """Parameters counted from the loaded weights (tied weights are stored once)."""
    return sum(t.numel() for t in load_file(model / "model.safetensors").values())


def test_gpu_config_on_a_machine_without_gpus_is_refused(model, machine, capsys):
    launched = machine(gpus=0, cpu_cores=2, memory=100 * GB)
    # configs/ddp.yaml leaves the count to the machine: one process per GPU, and there is none
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "ddp.yaml")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "num_processes: -1, one per GPU" in err and "no GPU is visible" in err
    # the incident: 8 DDP processes asked for on a CPU-only machine
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "ddp.yaml", "--num-processes", "8")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "starts 8 MULTI_GPU processes on GPUs, but this machine has no visible GPU" in err
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "fsdp2.yaml", "--num-processes", "2")
    assert code == 1 and "starts 2 FSDP processes on GPUs" in err
    assert launched == []


def test_gpu_config_starts_one_process_per_gpu(model, machine, capsys):
    launched = machine(gpus=4, cpu_cores=16, memory=100 * GB, gpu_memory=80 * GB)
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "ddp.yaml")
    assert code == 0, err
    command = launched[0]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("-m", 3):][:2] == ["-m", "hfgrow.continue"]
    assert err.splitlines()[0].endswith("--output-dir " + str(model.parent / "run") + " --seq-len 32 --max-steps 2")


def test_cpu_processes_need_cores_and_memory(model, machine, capsys):
    n = n_params(model)
    state = 16 * n  # float32 weights 4 + gradients 4 + AdamW moments 8 bytes per parameter
    machine(gpus=0, cpu_cores=2, memory=2 * state - 1)
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "multi_cpu.yaml")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"needs at least {launch.format_bytes(2 * state)} of memory" in err and "2 CPU process(es)" in err
    # LoRA trains adapters only: the weights (4 bytes per parameter) are what each process holds
    launched = machine(gpus=0, cpu_cores=2, memory=2 * 4 * n)
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "multi_cpu.yaml", "--train", "lora")
    assert code == 0 and len(launched) == 1, err
    machine(gpus=0, cpu_cores=2, memory=100 * GB)
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "multi_cpu.yaml", "--num-processes", "3")
    assert code == 1 and "starts 3 CPU processes, but this machine has 2 CPU cores" in err


def test_ddp_that_cannot_fit_one_gpu_is_refused(model, machine, capsys):
    machine(gpus=2, cpu_cores=16, memory=100 * GB, gpu_memory=16 * n_params(model) - 1)
    code, _, err = train(model, capsys, "--config-file", CONFIGS / "ddp.yaml")
    assert code == 1 and "under DDP" in err and "configs/fsdp2.yaml" in err


def test_sigterm_reaches_the_launched_processes(tmp_path):
    """The launcher of accelerate does not pass signals on; hfgrow train sends them to the whole group."""
    script = ("import signal, sys, time, pathlib\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('stopped', flush=True), sys.exit(143)))\n"
              "time.sleep(0.2); pathlib.Path(sys.argv[1]).touch(); time.sleep(30); sys.exit(0)\n")
    ready = tmp_path / "ready"

    def terminate_when_ready() -> None:
        for _ in range(200):
            if ready.exists():
                os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends to `hfgrow train`
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_when_ready, daemon=True).start()
    started = time.monotonic()
    assert run_launcher([sys.executable, "-c", script, str(ready)]) == 143
    assert time.monotonic() - started < 20  # stopped by the signal, not by the end of its sleep
