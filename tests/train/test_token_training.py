"""continue.py on a token folder (`hfgrow tokenize` output): process-count independence and exact resume.

Each run is a real subprocess (`python hfgrow/continue.py`, or `accelerate launch` with
configs/multi_cpu.yaml for 2 CPU processes) on a tiny random Llama. ~1 minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.launch import launch_continue

ROOT = Path(__file__).resolve().parents[2]
CONTINUE = ROOT / "hfgrow" / "continue.py"
WORDS = "the cat dog bird sat ran flew on over under a mat log tree red small big and then it was".split()


def documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hfgrow.eval.tiny import make_tokenizer

    root = tmp_path_factory.mktemp("token-train")
    web, code = documents(400, 1), documents(200, 2)
    (root / "web.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in web))
    (root / "code.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in code))
    tok = make_tokenizer(root / "model", text="\n".join(web + code), vocab_size=300)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "model")
    return root


def tokenize(root: Path, capsys) -> Path:
    out = root / "tokens"
    if not out.exists():
        code, _, err = run_cli(["tokenize", out, "--data", f"web={root / 'web.jsonl'}", "--data",
                                f"code={root / 'code.jsonl'}", "--tokenizer", root / "model", "-j", "2", "-q",
                                "--shard-size", "8kB"], capsys)
        assert code == 0, err
    return out


def run_continue(root: Path, out: str, *extra: str, procs: int = 1, env_extra: dict | None = None,
                 check: bool = True) -> subprocess.CompletedProcess:
    args = ["--model", str(root / "model"), "--data", str(root / "tokens"), "--output-dir", str(root / out),
            "--seq-len", "32", "--eval-sequences", "2", "--lr", "3e-3", "--warmup-steps", "2", "--max-steps", "6",
            "--save-steps", "3", "--eval-steps", "3", *extra]
    return launch_continue(args, procs=procs, script=True, env_extra=env_extra, check=check)


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_token_folder_one_process_x8_equals_two_processes_x4(env, capsys):
    tokenize(env, capsys)
    run_continue(env, "one", "--batch-size", "8")
    run_continue(env, "two", "--batch-size", "4", procs=2)
    one, two = records(env / "one", "train"), records(env / "two", "train")
    assert json.loads((env / "two" / "run.json").read_text())["world_size"] == 2
    run = json.loads((env / "one" / "run.json").read_text())  # relative to the run folder: no path of the machine
    assert run["data"] == {"web": "../tokens", "code": "../tokens"}
    assert run["data_parts"] == {"web": "web", "code": "code"}
    assert len(one) == len(two) == 6
    for x, y in zip(one, two):  # same global batch; only the reduction order differs (2 ranks x 4 vs 8)
        assert abs(x["loss"] - y["loss"]) < 1e-5 * max(1.0, abs(x["loss"])), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) < 1e-4
        assert x["tokens"] == y["tokens"] == x["step"] * 8 * 32
    for x, y in zip(records(env / "one", "eval"), records(env / "two", "eval")):
        assert set(x["losses"]) == {"web", "code"}
        assert all(abs(x["losses"][k] - y["losses"][k]) < 1e-5 for k in x["losses"])
    ranks = [json.loads(p.read_text()) for p in sorted((env / "two" / "ranks").glob("rank-*.json"))]
    assert [r["sequences"] for r in ranks] == [24, 24]
    assert sorted(ranks[0]["ids"] + ranks[1]["ids"]) == list(range(48)) and not set(ranks[0]["ids"]) & set(ranks[1]["ids"])
    state = json.loads((env / "two" / "checkpoint-6" / "hfgrow_state.json").read_text())["data"]
    assert state["kind"] == "tokens" and state["drawn"] == 48
    assert sum(d["taken"] for d in state["domains"].values()) == 48


def test_token_folder_sigkill_then_resume_is_exact(env, capsys):
    tokenize(env, capsys)
    if not (env / "one").exists():
        run_continue(env, "one", "--batch-size", "8")
    proc = run_continue(env, "killed", "--batch-size", "8", env_extra={"HFGROW_DEBUG_KILL_AT_STEP": "5"}, check=False)
    assert proc.returncode != 0
    killed = env / "killed"
    assert (killed / "checkpoint-3").is_dir() and not (killed / "checkpoint-6").exists()
    run_continue(env, "killed", "--batch-size", "8", "--resume")
    resumed, one = records(killed, "train"), records(env / "one", "train")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in resumed] == [(r["loss"], r["grad_norm"], r["lr"]) for r in one]
    assert [e["losses"] for e in records(killed, "eval")] == [e["losses"] for e in records(env / "one", "eval")]


def test_a_token_folder_of_another_tokenizer_is_refused_by_continue(env, capsys):
    from hfgrow.eval.tiny import make_tokenizer

    tokenize(env, capsys)
    other = env / "other-model"
    (other).mkdir(exist_ok=True)
    for f in (env / "model").iterdir():
        if not f.name.startswith("tokenizer"):
            (other / f.name).write_bytes(f.read_bytes())
    make_tokenizer(other, text=" ".join(WORDS) * 3, vocab_size=280)
    proc = subprocess.run([sys.executable, str(CONTINUE), "--model", str(other), "--data", str(env / "tokens"),
                           "--output-dir", str(env / "refused"), "--seq-len", "32", "--max-steps", "1"],
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1 and "not this model's tokenizer" in lines[0], proc.stderr[-2000:]
