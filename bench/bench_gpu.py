#!/usr/bin/env python
"""The trainer on one GPU, measured fairly: continue.py vs the HF Trainer with the same kernels and compile, the
first 20 losses with and without each speed option, and the pause of an in-run growth. TinyLlama-1.1B shape.

Run through ``bench/gpu.sh`` (one NVIDIA H100/H200-class GPU, no network). Every phase is a child process with
its own timeout, inside one overall budget (``--budget``); the phases run in order of importance and the ones
the budget cannot fit are skipped and named in ``errors``:

1. assets: the TinyLlama-1.1B config (hidden 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, vocab 32000) with
   random weights, saved in bf16; a byte-level BPE tokenizer trained offline on generated text; that text
   tokenized with ``hfgrow tokenize`` (nothing is downloaded);
2. pairs, each ``continue.py`` (``accelerate launch --mixed_precision bf16``: fp32 master weights, bf16
   autocast, SDPA, fused AdamW) and the HF ``Trainer`` (bf16 AMP, SDPA, ``adamw_torch_fused``) on the same model,
   batch, sequence length and windows: eager and eager; ``--compile --kernels liger`` and
   ``torch_compile=True, use_liger_kernel=True``;
3. the speed options alone, for their losses: ``--kernels liger`` (eager), ``--compile`` (no kernels) and, on
   cards of compute capability 8.9+ with torchao, ``--compile --kernels liger --float8``;
4. the growth pause: ``continue.py --grow stack:2@...`` (22 -> 44 layers, ~2.1B parameters) with the run's
   default kernels, eager; the wall time from the end of the last step before the growth to the end of the first
   step after it, and that minus one step (the pause itself).

Tokens/s counts the timed steps only (after ``--warmup`` steps). MFU = tokens/s x FLOPs per token / the card's
dense bf16 peak (H100 SXM and H200 989 TFLOPS, H100 PCIe 756, H100 NVL 835, A100 312), FLOPs per token by the
PaLM convention (:func:`hfgrow.units.training_flops_per_token`): 6·N with N the matmul parameters (non-embedding
+ LM head; the input embedding is a lookup), plus attention at 6·L·H·T ("causal": the half a causal kernel
computes; the headline), 12·L·H·T ("full": PaLM's own count) or 0 ("none"). Losses: the first 20 steps of each
run against eager continue.py without kernels (same weights, data and order), within a stated tolerance.

    bash bench/gpu.sh                   # the real run; prints a table last, JSON to $OUT/bench_gpu.json
    python bench/bench_gpu.py --dry     # CPU, tiny model, 2 steps, compile with torch's eager backend: the tests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hfgrow.units import ATTENTION_FLOPS, matmul_params, mfu, training_flops_per_token  # noqa: E402

TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
DRY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)
# dense bf16 tensor-core peaks (no sparsity), matched in order against torch.cuda.get_device_name()
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200", 989e12), ("H100", 989e12), ("H800", 989e12),
             ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12)]
LOSS_STEPS = 20
# |loss - baseline loss| / baseline loss over the first LOSS_STEPS steps: bf16 runs that differ only in kernel
# order and fusion stay within 1% (the same model, data and order); float8 matmuls round more
LOSS_TOLERANCE = {"default": 0.01, "float8": 0.02}
WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy").split()

# (worker, options, compare its first losses with eager continue.py's), in order of importance: the fair pairs
# first (each continue.py run is set against the Trainer run with the same options), then the options alone
PHASES = [
    ("continue", dict(kernels="none"), False),
    ("trainer", dict(kernels="none"), False),
    ("continue", dict(compile=True, kernels="liger"), True),
    ("trainer", dict(compile=True, kernels="liger"), False),
    ("continue", dict(kernels="liger"), True),
    ("continue", dict(compile=True, kernels="none"), True),
    ("continue", dict(compile=True, kernels="liger", float8=True), True),
]


def label(worker: str, opts: dict) -> str:
    """``continue.py --compile --kernels liger``, ``HF Trainer torch_compile use_liger_kernel``: the options as each
    tool spells them."""
    if worker == "continue":
        return " ".join(["continue.py"] + ["--compile"] * bool(opts.get("compile")) + (
            ["--kernels", "liger"] if opts.get("kernels") == "liger" else []) + ["--float8"] * bool(opts.get("float8")))
    return " ".join(["HF Trainer"] + ["torch_compile"] * bool(opts.get("compile"))
                    + ["use_liger_kernel"] * (opts.get("kernels") == "liger"))


def phases(dry: bool, float8_ok: bool) -> tuple[list[tuple[str, str, dict, bool]], list[str]]:
    """The phases to run as (label, worker, options, loss check), and the ones left out with why. On a CPU (dry)
    Liger's Triton kernels cannot run: those phases run without them (a duplicate is dropped)."""
    out, skipped, seen = [], [], set()
    for worker, opts, check in PHASES:
        if opts.get("float8") and not float8_ok:
            skipped.append(f"{label(worker, opts)}: needs a GPU of compute capability 8.9+ and torchao")
            continue
        if dry and opts.get("kernels") == "liger":
            opts = dict(opts, kernels="none")
        name = label(worker, opts)
        if name not in seen:
            seen.add(name)
            out.append((name, worker, opts, check and name != "continue.py"))
    if dry:
        skipped.append("every --kernels liger / use_liger_kernel phase runs without Liger (Triton needs a CUDA GPU)")
    return out, skipped


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (None: not in the table).

    Example:
        >>> peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("NVIDIA H100 PCIe"), peak_flops("NVIDIA H200")
        (989000000000000.0, 756000000000000.0, 989000000000000.0)
    """
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def model_counts(cfg: dict, seq_len: int) -> dict:
    """Parameter counts of the model ``cfg`` builds (on the meta device) and its training FLOPs per token at
    ``seq_len`` under each attention convention."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    n = matmul_params(total, embedding, tied=cfg["tie_word_embeddings"])
    width = cfg["num_attention_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"])
    return {"total": total, "input_embedding": embedding, "matmul": n,
            "flops_per_token": {a: training_flops_per_token(n, cfg["num_hidden_layers"], width, seq_len, a)
                                for a in ATTENTION_FLOPS}}


def versions() -> dict:
    """Versions of everything the figures depend on (None: not installed / no GPU)."""
    import importlib.metadata as md

    import torch

    out: dict = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for package in ("transformers", "accelerate", "liger-kernel", "triton", "torchao"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    try:
        out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        out["driver"] = None
    return out


# ----------------------------------------------------------------------------- workers (child processes)


def worker_assets(a) -> dict:
    """Model (random weights), tokenizer and token folder under ``a.folder``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hfgrow.eval.tiny import make_tokenizer

    folder = Path(a.folder)
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 400))) + "." for _ in range(a.docs)]
    (folder / "data.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok = make_tokenizer(None, text="\n".join(docs[:300]), vocab_size=2048 if not a.dry else 300)
    cfg = LlamaConfig(**(DRY if a.dry else TINYLLAMA), dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it is fast
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    del model
    code = subprocess.call([sys.executable, "-m", "hfgrow.cli.main", "tokenize", str(folder / "tokens"),
                            "--data", f"text={folder / 'data.jsonl'}", "--tokenizer", str(folder / "model"), "-q",
                            "-j", "1" if a.dry else str(os.cpu_count() or 1), "--shard-size", "4MB"])
    if code:
        raise SystemExit("hfgrow tokenize failed")
    return {}


def _watch_log(log: Path, steps: int, result: Path) -> None:
    """Stop this process once ``steps`` train lines are logged, with its peak GPU memory saved first."""
    import torch

    while True:
        time.sleep(0.05)
        n = sum(1 for line in log.read_text().splitlines() if '"train"' in line) if log.is_file() else 0
        if n >= steps:
            peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            result.write_text(json.dumps({"peak_mem_bytes": peak}))
            os._exit(0)  # skip the final checkpoint write: it is not part of the measurement


def worker_continue(a) -> dict:
    """Inside ``accelerate launch``: continue.py's loop, stopped after the last timed step."""
    import importlib

    out = Path(a.run)
    total = a.total_steps
    threading.Thread(target=_watch_log, args=(out / "log.jsonl", total, Path(os.environ["BENCH_RESULT"])),
                     daemon=True).start()
    loop = importlib.import_module("hfgrow.train.loop")
    argv = ["--model", str(Path(a.folder) / "model"), "--data", str(Path(a.folder) / "tokens"),
            "--output-dir", str(out), "--seq-len", str(a.seq_len), "--batch-size", str(a.batch_size),
            "--grad-accum", str(a.grad_accum), "--max-steps", str(total + 1), "--lr", "3e-4",
            "--warmup-steps", "2", "--eval-sequences", "0", "--save-steps", str(10 * total), "--no-export",
            "--kernels", a.kernels]
    if a.compile:
        argv += ["--compile"] + (["--compile-backend", a.compile_backend] if a.compile_backend else [])
    if a.float8:
        argv += ["--float8"]
    if a.grow_at:
        argv += ["--grow", f"stack:2@{a.grow_at * a.batch_size * a.grad_accum * a.seq_len}"]
    code = loop.main(argv)
    if code:
        raise SystemExit(code)
    return {"peak_mem_bytes": None}  # a run too fast for the watcher (dry mode) ends here


def worker_trainer(a) -> dict:
    """The HF Trainer on the same model, batch, windows; per-step wall clock after a CUDA sync; its losses."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from hfgrow.data.token_folder import TokenFolder

    folder = Path(a.folder)
    domain = TokenFolder(folder / "tokens").domain("text")
    total = a.total_steps
    windows = [torch.from_numpy(domain.window(i % domain.n_windows(a.seq_len), a.seq_len).astype("int64"))
               for i in range(total * a.batch_size * a.grad_accum)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(windows)

        def __getitem__(self, i):
            return {"input_ids": windows[i], "labels": windows[i]}

    cuda = torch.cuda.is_available()
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.time())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    speed = dict(torch_compile=True, torch_compile_backend=a.compile_backend or "inductor") if a.compile else {}
    args = TrainingArguments(
        output_dir=str(Path(a.run)), per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
        max_steps=total, learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=2, weight_decay=0.1,
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none",
        bf16=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch", dataloader_num_workers=0,
        disable_tqdm=True, seed=0, use_cpu=not cuda, use_liger_kernel=a.kernels == "liger", **speed,
    )
    Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[Clock()]).train()
    return {"times": times, "losses": losses, "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None}


# ----------------------------------------------------------------------------- driver


def run_child(cmd: list[str], timeout: float, env: dict, label: str) -> tuple[dict | None, str]:
    """Run a worker command in its own process group; (its JSON result or None, error text)."""
    result = Path(env["BENCH_RESULT"])
    result.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"{label}: timed out after {timeout:.0f} s"
    took = time.perf_counter() - start
    print(f"[bench_gpu] {label}: {took:.0f} s (exit {proc.returncode})", file=sys.stderr, flush=True)
    if result.is_file():
        return json.loads(result.read_text()), ""
    print(f"[bench_gpu] {label} failed; the end of its stderr:\n{err[-4000:]}", file=sys.stderr, flush=True)
    return None, f"{label}: exit {proc.returncode}\n{err[-4000:]}"


def rate(times: list[float], warmup: int, tokens_per_step: int) -> dict | None:
    """Tokens/s over the steps after ``warmup``; times[i] = wall clock at the end of step i+1."""
    if len(times) < warmup + 2:
        return None
    t = times[warmup - 1 :] if warmup > 0 else times
    per_step = [b - a for a, b in zip(t, t[1:])]
    return {"tokens_per_s": tokens_per_step * len(per_step) / (t[-1] - t[0]),
            "tokens_per_s_median_step": tokens_per_step / statistics.median(per_step),
            "steps_timed": len(per_step), "step_seconds": [round(s, 5) for s in per_step]}


def loss_check(losses: list[float], baseline: list[float], tolerance: float) -> dict:
    """The first :data:`LOSS_STEPS` losses against the baseline's: the largest relative difference and whether it
    is within ``tolerance``."""
    n = min(LOSS_STEPS, len(losses), len(baseline))
    worst = max((abs(x - b) / abs(b) for x, b in zip(losses[:n], baseline[:n])), default=None)
    return {"steps": n, "max_relative_difference": worst, "tolerance": tolerance,
            "within": worst is not None and n == min(LOSS_STEPS, len(baseline)) and worst <= tolerance}


def pause(records: list[dict]) -> dict | None:
    """The growth pause from a run's log: the end of the last step before the growth to the end of the first step
    after it, and that minus the median step after the growth (the step itself)."""
    growth = next((r for r in records if r.get("type") == "growth"), None)
    steps = [r for r in records if r.get("type") == "train"]
    if growth is None:
        return None
    before = [r for r in steps if r["step"] <= growth["step"]]
    after = [r for r in steps if r["step"] > growth["step"]]
    if not before or len(after) < 2:
        return None
    gap = after[0]["time"] - before[-1]["time"]
    step = statistics.median(b["time"] - a["time"] for a, b in zip(after, after[1:]))
    return {"at_step": growth["step"], "layers": [growth["layers_before"], growth["layers_after"]],
            "params_after": growth["params_after"], "gap_seconds": round(gap, 3), "step_seconds_after": round(step, 4),
            "pause_seconds": round(gap - step, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="CPU, tiny model, 2 steps (the tests' run)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; dry 2)")
    p.add_argument("--warmup", type=int, default=None, help="steps before timing (default 5; dry 1)")
    p.add_argument("--seq-len", type=int, default=None, help="default 2048; dry 64")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per micro-step (default 8 on cards with 100+ GiB, else 4; dry 2)")
    p.add_argument("--grad-accum", type=int, default=None, help="default: 16 sequences per step; dry 1")
    p.add_argument("--budget", type=float, default=540, help="seconds for everything (phases share it)")
    p.add_argument("--only", action="append", default=[], metavar="LABEL",
                   help="run only these phases (repeat; 'pause' for the growth pause)")
    p.add_argument("--no-pause", action="store_true", help="skip the growth-pause measurement")
    p.add_argument("--worker", choices=["assets", "continue", "trainer"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile-backend", help=argparse.SUPPRESS)
    p.add_argument("--kernels", default="none", help=argparse.SUPPRESS)
    p.add_argument("--float8", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--grow-at", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--total-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--docs", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        result = {"assets": worker_assets, "continue": worker_continue, "trainer": worker_trainer}[a.worker](a)
        Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
        return

    deadline = time.perf_counter() + a.budget
    import torch

    cuda = torch.cuda.is_available() and not a.dry
    if not cuda and not a.dry:
        raise SystemExit("no CUDA GPU visible: run with --dry on a CPU machine.")
    name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    memory = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    float8_ok = cuda and torch.cuda.get_device_capability() >= (8, 9) and versions()["torchao"] is not None
    a.steps = a.steps or (2 if a.dry else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.dry else 5)
    a.seq_len = a.seq_len or (64 if a.dry else 2048)
    a.batch_size = a.batch_size or (2 if a.dry else (8 if memory >= 100 * 2**30 else 4))
    a.grad_accum = a.grad_accum or (1 if a.dry else max(1, 16 // a.batch_size))
    a.docs = a.docs or (200 if a.dry else 8000)
    total = max(a.warmup + a.steps, LOSS_STEPS if not a.dry else 0)
    cfg = DRY if a.dry else TINYLLAMA
    counts = model_counts(cfg, a.seq_len)
    peak = peak_flops(name) if cuda else None
    tokens_per_step = a.batch_size * a.grad_accum * a.seq_len
    report: dict = {"device": name, "peak_bf16_flops": peak, "versions": versions(), "config": cfg,
                    "params": counts, "seq_len": a.seq_len, "batch_size": a.batch_size, "grad_accum": a.grad_accum,
                    "tokens_per_step": tokens_per_step, "warmup_steps": a.warmup, "timed_steps": total - a.warmup,
                    "mfu_convention": "PaLM: 6·N (N = non-embedding + LM head) + attention 6·L·H·T (causal), "
                                      "12·L·H·T (full) or none", "runs": {}, "skipped": [], "errors": []}

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "BENCH_RESULT": str(folder / "result.json")}
        common = ["--folder", str(folder), "--seq-len", str(a.seq_len), "--batch-size", str(a.batch_size),
                  "--grad-accum", str(a.grad_accum), "--docs", str(a.docs)] + (["--dry"] if a.dry else [])
        me = [sys.executable, str(Path(__file__).resolve())]

        def left(cap: float) -> float:
            return min(cap, deadline - time.perf_counter())

        got, err = run_child([*me, "--worker", "assets", *common], left(150), env, "assets")
        if got is None:
            raise SystemExit(f"could not build the model and data: {err}")
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "bf16" if cuda else "no", "--dynamo_backend", "no"]
        script = [str(Path(__file__).resolve())]
        losses: dict[str, list[float]] = {}
        todo, report["skipped"] = phases(a.dry, float8_ok)
        def measure_pause() -> None:
            """The growth pause: continue.py --grow stack:2 on the 1.1B shape (22 -> 44 layers), eager."""
            # the grown model (2x the layers) with AdamW: one micro-batch per step keeps it within 80 GB
            grow_at, steps = 3, 6
            run = folder / "pause"
            cmd = launch + script + ["--worker", "continue", "--folder", str(folder), "--seq-len", str(a.seq_len),
                                     "--batch-size", str(a.batch_size if a.dry else 4), "--grad-accum", "1",
                                     "--docs", str(a.docs), *(["--dry"] if a.dry else []),
                                     "--kernels", "none" if a.dry else "auto", "--total-steps", str(steps),
                                     "--grow-at", str(grow_at), "--run", str(run)]
            if left(240) < 60:
                report["errors"].append("pause: skipped, the time budget is spent")
            else:
                got, err = run_child(cmd, left(240), env, "growth pause")
                log = run / "log.jsonl"
                recs = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
                measured = pause(recs)
                if measured is None:
                    report["errors"].append(err or "pause: no growth and two steps after it in the log")
                else:
                    report["pause"] = {**measured, "peak_mem_bytes": (got or {}).get("peak_mem_bytes"),
                                       "batch": [a.batch_size if a.dry else 4, a.seq_len], "kernels":
                                       "none" if a.dry else "auto", "compile": False}

        pairs = sum(1 for _, worker, opts, _ in todo if worker == "trainer") * 2  # the fair pairs come first
        want_pause = not a.no_pause and (not a.only or "pause" in a.only)
        for i, (name, worker, opts, check) in enumerate(todo):
            if i == pairs and want_pause:
                measure_pause()  # before the options alone: the growth pause matters more
                want_pause = False
            if a.only and name not in a.only:
                continue
            cap = 240 if opts.get("compile") else 120
            if left(cap) < 30:
                report["errors"].append(f"{name}: skipped, the time budget is spent")
                continue
            flags = ["--kernels", opts.get("kernels", "none"), "--total-steps", str(total)]
            flags += ["--compile"] + (["--compile-backend", "eager"] if a.dry else []) if opts.get("compile") else []
            flags += ["--float8"] if opts.get("float8") else []
            run = folder / name.replace(" ", "_").replace(".", "").replace("-", "")
            cmd = (launch + script if worker == "continue" else me) + ["--worker", worker]
            got, err = run_child([*cmd, *common, *flags, "--run", str(run)], left(cap), env, name)
            if worker == "continue":
                log = run / "log.jsonl"
                recs = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
                train = [r for r in recs if r.get("type") == "train"][:total]
                times, losses[name] = [r["time"] for r in train], [r["loss"] for r in train]
            else:
                times, losses[name] = (got or {}).get("times", []), (got or {}).get("losses", [])
            measured = rate(times, a.warmup, tokens_per_step)
            if measured is None:
                report["errors"].append(err or f"{name}: too few steps logged")
                continue
            entry = {**measured, "peak_mem_bytes": (got or {}).get("peak_mem_bytes"), "options": opts,
                     "losses": losses[name][:LOSS_STEPS]}
            if peak:
                for attention, flops in counts["flops_per_token"].items():
                    entry[f"mfu_{attention}"] = mfu(entry["tokens_per_s"], flops, peak)
            if worker == "continue":
                entry["versus"] = label("trainer", {k: v for k, v in opts.items() if k != "float8"})
            if check and "continue.py" in losses:
                entry["loss_check"] = loss_check(losses[name], losses["continue.py"],
                                                 LOSS_TOLERANCE["float8" if opts.get("float8") else "default"])
            report["runs"][name] = entry
        for entry in report["runs"].values():
            base = report["runs"].get(entry.get("versus", ""), {}).get("tokens_per_s")
            if base and not entry["options"].get("float8"):
                entry["ratio_vs_trainer"] = entry["tokens_per_s"] / base
        if want_pause:  # fewer phases than pairs + 1 (dry, --only)
            measure_pause()

    out = json.dumps(report, indent=2) + "\n"
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "bench_gpu.json").write_text(out)
    print_table(report)


def print_table(report: dict) -> None:
    runs = report["runs"]
    v = report["versions"]
    print(f"device: {report['device']}; driver {v['driver']}, CUDA {v['cuda']}, torch {v['torch']}, transformers "
          f"{v['transformers']}, liger-kernel {v['liger-kernel']}, torchao {v['torchao']}")
    print(f"dense bf16 peak: {report['peak_bf16_flops'] / 1e12:.0f} TFLOPS" if report["peak_bf16_flops"] else
          "MFU: not computed (no known peak)")
    p = report["params"]
    print(f"model: Llama {report['config']['num_hidden_layers']} layers x {report['config']['hidden_size']}, "
          f"{p['total'] / 1e9:.3f}B parameters, N = {p['matmul'] / 1e9:.3f}B in matmuls (input embedding left out); "
          f"seq {report['seq_len']}, batch {report['batch_size']} x grad-accum {report['grad_accum']} = "
          f"{report['tokens_per_step']:,} tokens/step; {report['timed_steps']} timed steps after "
          f"{report['warmup_steps']} warm-up")
    print("MFU (PaLM): causal = 6N + 6LHT (headline), no-attn = 6N; losses: first 20 steps vs eager continue.py")
    print(f"{'run':<48}{'tokens/s':>10}{'MFU causal':>11}{'MFU no-attn':>12}{'mem GB':>8}{'vs Trainer':>11}"
          f"{'loss diff':>10}")
    for name, r in runs.items():
        causal = f"{r['mfu_causal']:.1%}" if "mfu_causal" in r else "-"
        none = f"{r['mfu_none']:.1%}" if "mfu_none" in r else "-"
        mem = f"{r['peak_mem_bytes'] / 1e9:.1f}" if r.get("peak_mem_bytes") else "-"
        ratio = f"{r['ratio_vs_trainer']:.2f}x" if "ratio_vs_trainer" in r else "-"
        check = r.get("loss_check")
        loss = (f"{check['max_relative_difference']:.2%}" + ("" if check["within"] else "!")) if check and \
            check["max_relative_difference"] is not None else "-"
        print(f"{name:<48}{r['tokens_per_s']:>10,.0f}{causal:>11}{none:>12}{mem:>8}{ratio:>11}{loss:>10}")
    if "pause" in report:
        q = report["pause"]
        print(f"growth pause: {q['layers'][0]} -> {q['layers'][1]} layers at step {q['at_step']}: "
              f"{q['pause_seconds']:.1f} s ({q['gap_seconds']:.1f} s from the last step before to the first after)")
    for s in report["skipped"]:
        print(f"skipped: {s}")
    for e in report["errors"]:
        print(f"error: {e.splitlines()[0]}")


if __name__ == "__main__":
    main()
