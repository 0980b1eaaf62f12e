#!/usr/bin/env python
"""The trainer on one GPU: continue.py (eager and --compile) vs the HF Trainer, TinyLlama-1.1B shape.

Run through ``bench/gpu.sh`` (one NVIDIA H100/H200-class GPU, no network, < 8 minutes in all).
Every phase is a child process with its own timeout, inside one overall budget:

1. assets: the TinyLlama-1.1B config (hidden 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632,
   vocab 32000) with random weights, made on the GPU and saved in bf16; a byte-level BPE tokenizer
   trained offline on generated text; that text tokenized with ``hfgrow tokenize`` into a token
   folder (nothing is downloaded);
2. ``continue.py`` through ``accelerate launch --mixed_precision bf16`` (fp32 master weights, bf16
   autocast, SDPA attention, fused AdamW), seq 2048, ``--warmup`` steps then ``--steps`` timed
   steps; the run is stopped after the last timed step (no checkpoint write);
3. the HF ``Trainer`` on the same model, batch, sequence length and windows (bf16 AMP, SDPA,
   ``adamw_torch_fused``), timed the same way (a CUDA sync per step, as continue.py's loss read);
4. ``continue.py --compile``, last, as compiling is the slowest phase.

Tokens/s counts the timed steps only (wall clock between the end of the last warm-up step and the
end of the last step). MFU = 6·N·tokens/s / the card's dense bf16 peak (H100 SXM and H200 989
TFLOPS, H100 PCIe 756, H100 NVL 835, A100 312), N with and without the embedding and LM-head
matrices (attention's own FLOPs are not counted). Peak GPU memory is ``max_memory_allocated``.

    bash bench/gpu.sh                   # the real run; prints a table last, JSON to $OUT/bench_gpu.json
    python bench/bench_gpu.py --dry     # CPU, tiny model, 2 steps: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
DRY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)
# dense bf16 tensor-core peaks (no sparsity), matched in order against torch.cuda.get_device_name()
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200", 989e12), ("H100", 989e12), ("H800", 989e12),
             ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12)]
WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy").split()


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (None: not in the table).

    Example:
        >>> peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("NVIDIA H100 PCIe"), peak_flops("NVIDIA H200")
        (989000000000000.0, 756000000000000.0, 989000000000000.0)
    """
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def param_counts(cfg: dict) -> dict[str, int]:
    """Parameters of a Llama config: all, and without the embedding and LM-head matrices."""
    h, f, layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    block = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    non_embedding = layers * block + h
    embeddings = v * h * (1 if cfg["tie_word_embeddings"] else 2)
    return {"total": non_embedding + embeddings, "non_embedding": non_embedding}


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
    n = sum(p.numel() for p in model.parameters())
    del model
    code = subprocess.call([sys.executable, "-m", "hfgrow.cli.main", "tokenize", str(folder / "tokens"),
                            "--data", f"text={folder / 'data.jsonl'}", "--tokenizer", str(folder / "model"), "-q", "-j", "1" if a.dry else str(os.cpu_count() or 1),
                            "--shard-size", "4MB"])
    if code:
        raise SystemExit("hfgrow tokenize failed")
    return {"params": n}


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
    total = a.warmup + a.steps
    threading.Thread(target=_watch_log, args=(out / "log.jsonl", total, Path(os.environ["BENCH_RESULT"])),
                     daemon=True).start()
    loop = importlib.import_module("hfgrow.train.loop")
    argv = ["--model", str(Path(a.folder) / "model"), "--data", str(Path(a.folder) / "tokens"),
            "--output-dir", str(out), "--seq-len", str(a.seq_len), "--batch-size", str(a.batch_size),
            "--grad-accum", str(a.grad_accum), "--max-steps", str(total + 1), "--lr", "3e-4",
            "--warmup-steps", "2", "--eval-sequences", "0", "--save-steps", str(10 * total), "--no-export"]
    code = loop.main(argv + (["--compile"] if a.compile else []))
    if code:
        raise SystemExit(code)
    return {"peak_mem_bytes": None}  # a run too fast for the watcher (dry mode) ends here


def worker_trainer(a) -> dict:
    """The HF Trainer on the same model, batch, windows; per-step wall clock after a CUDA sync."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from hfgrow.data.token_folder import TokenFolder

    folder = Path(a.folder)
    domain = TokenFolder(folder / "tokens").domain("text")
    total = a.warmup + a.steps
    n_seq = min(domain.n_windows(a.seq_len), total * a.batch_size * a.grad_accum)
    windows = [torch.from_numpy(domain.window(i % domain.n_windows(a.seq_len), a.seq_len).astype("int64"))
               for i in range(total * a.batch_size * a.grad_accum)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(windows)

        def __getitem__(self, i):
            return {"input_ids": windows[i], "labels": windows[i]}

    cuda = torch.cuda.is_available()
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.time())

    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    args = TrainingArguments(
        output_dir=str(Path(a.run)), per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
        max_steps=total, learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=2, weight_decay=0.1,
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=10, save_strategy="no", report_to="none",
        bf16=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch", dataloader_num_workers=0,
        disable_tqdm=True, seed=0, use_cpu=not cuda,
    )
    Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[Clock()]).train()
    return {"times": times, "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "windows": n_seq}


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
    import statistics

    if len(times) < warmup + 2:
        return None
    t = times[warmup - 1 :] if warmup > 0 else times
    per_step = [b - a for a, b in zip(t, t[1:])]
    return {"tokens_per_s": tokens_per_step * len(per_step) / (t[-1] - t[0]),
            "tokens_per_s_median_step": tokens_per_step / statistics.median(per_step),
            "steps_timed": len(per_step)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="CPU, tiny model, 2 steps (the tests' run)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30; dry 2)")
    p.add_argument("--warmup", type=int, default=None, help="steps before timing (default 5; dry 1)")
    p.add_argument("--seq-len", type=int, default=None, help="default 2048; dry 64")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per micro-step (default 8 on cards with 100+ GiB, else 4; dry 2)")
    p.add_argument("--grad-accum", type=int, default=None, help="default: 16 sequences per step; dry 1")
    p.add_argument("--budget", type=float, default=450, help="seconds for everything (phases share it)")
    p.add_argument("--no-compile", action="store_true", help="skip the --compile run")
    p.add_argument("--worker", choices=["assets", "continue", "trainer"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
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
    a.steps = a.steps or (2 if a.dry else 30)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.dry else 5)
    a.seq_len = a.seq_len or (64 if a.dry else 2048)
    a.batch_size = a.batch_size or (2 if a.dry else (8 if memory >= 100 * 2**30 else 4))
    a.grad_accum = a.grad_accum or (1 if a.dry else max(1, 16 // a.batch_size))
    a.docs = a.docs or (200 if a.dry else 8000)
    cfg = DRY if a.dry else TINYLLAMA
    counts = param_counts(cfg)
    peak = peak_flops(name) if cuda else None
    tokens_per_step = a.batch_size * a.grad_accum * a.seq_len
    report: dict = {"device": name, "peak_bf16_flops": peak, "torch": torch.__version__, "config": cfg,
                    "params": counts, "seq_len": a.seq_len, "batch_size": a.batch_size, "grad_accum": a.grad_accum,
                    "tokens_per_step": tokens_per_step, "warmup_steps": a.warmup, "timed_steps": a.steps,
                    "runs": {}, "errors": []}

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "BENCH_RESULT": str(folder / "result.json")}
        common = ["--folder", str(folder), "--steps", str(a.steps), "--warmup", str(a.warmup), "--seq-len",
                  str(a.seq_len), "--batch-size", str(a.batch_size), "--grad-accum", str(a.grad_accum),
                  "--docs", str(a.docs)] + (["--dry"] if a.dry else [])
        me = [sys.executable, str(Path(__file__).resolve())]

        def left(cap: float) -> float:
            return min(cap, deadline - time.perf_counter())

        got, err = run_child([*me, "--worker", "assets", *common], left(120), env, "assets")
        if got is None:
            raise SystemExit(f"could not build the model and data: {err}")
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "bf16" if cuda else "no", "--dynamo_backend", "no"]
        script = [str(Path(__file__).resolve())]
        phases = [("continue.py", launch + script + ["--worker", "continue"], 150),
                  ("HF Trainer", me + ["--worker", "trainer"], 150)]
        if not a.no_compile:
            phases.append(("continue.py --compile", launch + script + ["--worker", "continue", "--compile"], 300))
        for label, cmd, cap in phases:
            run = folder / label.replace(" ", "_").replace(".", "").replace("-", "")
            if left(cap) < 20:
                report["errors"].append(f"{label}: skipped, the time budget is spent")
                continue
            got, err = run_child([*cmd, *common, "--run", str(run)], left(cap), env, label)
            if label.startswith("continue"):
                log = run / "log.jsonl"
                recs = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
                times = [r["time"] for r in recs if r.get("type") == "train"][: a.warmup + a.steps]
            else:
                times = (got or {}).get("times", [])
            measured = rate(times, a.warmup, tokens_per_step)
            if measured is None:
                report["errors"].append(err or f"{label}: too few steps logged")
                continue
            entry = {**measured, "peak_mem_bytes": (got or {}).get("peak_mem_bytes")}
            if peak:
                for key, n in counts.items():
                    entry[f"mfu_{key}"] = 6 * n * entry["tokens_per_s"] / peak
            report["runs"][label] = entry

    out = json.dumps(report, indent=2) + "\n"
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "bench_gpu.json").write_text(out)
    if not a.dry:
        Path(__file__).with_name("results_gpu.json").write_text(out)
    print_table(report)


def print_table(report: dict) -> None:
    runs = report["runs"]
    print(f"device: {report['device']}; dense bf16 peak: "
          f"{report['peak_bf16_flops'] / 1e12:.0f} TFLOPS" if report["peak_bf16_flops"] else
          f"device: {report['device']}; MFU: not computed (no known peak)")
    p = report["params"]
    print(f"model: Llama {report['config']['num_hidden_layers']} layers x {report['config']['hidden_size']}, "
          f"N = {p['total'] / 1e9:.3f}B ({p['non_embedding'] / 1e9:.3f}B without embeddings/LM head); "
          f"seq {report['seq_len']}, batch {report['batch_size']} x grad-accum {report['grad_accum']} = "
          f"{report['tokens_per_step']:,} tokens/step; {report['timed_steps']} timed steps after "
          f"{report['warmup_steps']} warm-up")
    print(f"{'run':<24}{'tokens/s':>12}{'MFU (N)':>10}{'MFU (N-emb)':>13}{'peak mem GB':>13}{'vs Trainer':>12}")
    base = runs.get("HF Trainer", {}).get("tokens_per_s")
    for label, r in runs.items():
        mfu = f"{r['mfu_total']:.1%}" if "mfu_total" in r else "-"
        mfu_ne = f"{r['mfu_non_embedding']:.1%}" if "mfu_non_embedding" in r else "-"
        mem = f"{r['peak_mem_bytes'] / 1e9:.1f}" if r.get("peak_mem_bytes") else "-"
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"{label:<24}{r['tokens_per_s']:>12,.0f}{mfu:>10}{mfu_ne:>13}{mem:>13}{ratio:>12}")
    for e in report["errors"]:
        print(f"error: {e.splitlines()[0]}")


if __name__ == "__main__":
    main()
