"""Continued pre-training (hfgrow/continue.py), export and CLI (the data pipeline: tests/data/test_packing.py).

Tiny random Llamas and an offline-trained tokenizer; every training run is a real subprocess
(`python hfgrow/continue.py` or `accelerate launch` for 2 CPU processes). ~1-2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.cli import train as cmd
from hfgrow.errors import HfgrowError
from hfgrow.growth.recipe import Mask
from hfgrow.io import hub
from hfgrow.train.checkpoints import read_state
from hfgrow.train.loop import main as continue_main
from hfgrow.train.msg import MaskRamp
from hfgrow.train.schedule import default_lr, lr_at
from helpers.launch import launch_continue

ROOT = Path(__file__).resolve().parents[2]
CONTINUE = ROOT / "hfgrow" / "continue.py"  # the clone form, `accelerate launch hfgrow/continue.py`

WORDS = ("the cat dog bird sat ran flew on over under a mat log tree red small big quickly slowly "
         "and then it was happy home away").split()


def make_text(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(2, 6)):
            subj, verb, prep, obj = rng.choice(WORDS[1:4]), rng.choice(WORDS[4:7]), rng.choice(WORDS[7:10]), rng.choice(WORDS[11:14])
            sents.append(f"the {subj} {verb} {prep} the {obj}.")
        docs.append(" ".join(sents))
    return docs


def make_model(folder: Path, layers: int = 4, recipe: dict | None = None, tokenizer_text: str = "") -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([tokenizer_text], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|eos|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>")
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(fast), max_position_embeddings=64,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    if recipe is not None:
        import yaml

        (folder / "hfgrow.yaml").write_text(yaml.safe_dump({"source": {"path": "small"}, "params": {}, **recipe}))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    docs_a, docs_b = make_text(300, 1), make_text(200, 2)
    (root / "data").mkdir()
    with open(root / "data" / "a.jsonl", "w") as fh:
        for d in docs_a:
            fh.write(json.dumps({"text": d}) + "\n")
    (root / "data" / "b").mkdir()
    (root / "data" / "b" / "one.txt").write_text("\n".join(docs_b[:100]))
    (root / "data" / "b" / "two.md").write_text("\n".join(docs_b[100:]))
    (root / "data" / "empty.jsonl").write_text("\n")
    text = "\n".join(docs_a + docs_b)
    make_model(root / "model", tokenizer_text=text)
    make_model(root / "grown", recipe={"new_layers": [2, 3], "operation": {"op": "random", "mask": {"layers": [2, 3], "steps": 3}}},
               tokenizer_text=text)
    return root


def continue_args(env: Path, out: str, *extra: str, model: str = "model") -> list[str]:
    return ["--model", str(env / model), "--data", f"a={env / 'data' / 'a.jsonl'}",
            "--data", f"b={env / 'data' / 'b'}", "--output-dir", str(env / out), "--seq-len", "32",
            "--eval-sequences", "4", "--lr", "3e-3", "--warmup-steps", "2", *extra]


def run_continue(env: Path, out: str, *extra: str, model: str = "model", procs: int = 1,
                 env_extra: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return launch_continue(continue_args(env, out, *extra, model=model), procs=procs, env_extra=env_extra, check=check)


@pytest.fixture(scope="module")
def short_run(env) -> Path:
    """2 steps of the model at batch 2, checkpoint-2 kept (--no-export): its step 1 is the model's loss on the first
    batch. Tests that change the run work on a copy."""
    run_continue(env, "short", "--batch-size", "2", "--max-steps", "2", "--save-steps", "2", "--no-export")
    return env / "short"


def train_log(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "train"]


def eval_log(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "eval"]


# --------------------------------------------------------------------------------------------- schedule


def test_default_lr_and_schedule():
    assert default_lr(100e6) == 6e-4 and default_lr(70e9) == 1e-4
    assert abs(default_lr(1.1e9) - 3e-4) < 1e-12 and abs(default_lr(3e9) - 1.6e-4) < 1e-12
    assert 3e-4 > default_lr(2e9) > 1.6e-4
    lrs = [lr_at(s, 1.0, 0.1, 10, 100) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and abs(lrs[-1] - 0.1) < 1e-3
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


# --------------------------------------------------------------------------------------------- training


def held_out_loss_by_hand(env: Path, model_dir: Path, seq_len: int = 32, n: int = 4) -> dict[str, float]:
    """Held-out loss per domain of a saved model, computed here: the same eval split, one forward per domain."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfgrow.data.loading import build_data
    from hfgrow.data.specs import parse_specs

    specs = parse_specs([f"a={env / 'data' / 'a.jsonl'}", f"b={env / 'data' / 'b'}"])
    data = build_data(specs, AutoTokenizer.from_pretrained(model_dir), seq_len, seed=0, eval_sequences=n)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():  # equal-length sequences: the mean over all of them is the mean of equal batches
        return {name: model(input_ids=torch.tensor(seqs), labels=torch.tensor(seqs)).loss.item()
                for name, seqs in data.eval.items()}


def test_single_process_loss_decreases_and_export(env, monkeypatch, tmp_path_factory):
    from click.testing import CliRunner
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from hfgrow.train.export import export_checkpoint

    proc = run_continue(env, "run_a", "--batch-size", "4", "--max-steps", "16", "--save-steps", "8",
                        "--eval-steps", "8")
    run = env / "run_a"
    log = train_log(run)
    assert [r["step"] for r in log] == list(range(1, 17))
    assert sum(r["loss"] for r in log[-3:]) / 3 < log[0]["loss"] - 0.3
    for r in log:
        assert {"loss", "lr", "grad_norm", "tokens", "tokens_per_s"} <= set(r)
    assert log[-1]["tokens"] == 16 * 4 * 32
    # evaluated before training (step 0: the model as it came), then every 8 steps
    evals = eval_log(run)
    assert [e["step"] for e in evals] == [0, 8, 16] and evals[2]["eval_loss"] < evals[0]["eval_loss"]
    by_hand = held_out_loss_by_hand(env, env / "model")
    assert evals[0]["losses"] == pytest.approx(by_hand, abs=1e-5)
    for e in evals:  # one console line per evaluation
        assert f"eval step {e['step']} ({e['tokens']:,} tokens): a {e['losses']['a']:.4f}  b {e['losses']['b']:.4f}" \
            in proc.stdout
    # BiMix observations L(r, s) after training steps only (the law has no value at s = 0)
    obs = [json.loads(line) for line in (run / "eval_observations.jsonl").read_text().splitlines()]
    assert obs[0] == {"mixture": {"a": 0.5, "b": 0.5}, "step": 8, "domain": "a", "loss": evals[1]["losses"]["a"]}
    assert len(obs) == 2 * 2  # two evaluations after training steps, two domains

    # export: a normal HF folder, use_cache restored, the base's tokenizer files as they were
    final = run / "final"
    assert json.loads((final / "config.json").read_text())["use_cache"] is True
    assert (final / "tokenizer.json").read_bytes() == (env / "model" / "tokenizer.json").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.use_cache is True
    assert torch.isfinite(model(torch.tensor([[1, 2, 3, 4]])).logits).all()
    # nothing in final/, run.json or a checkpoint's state names a path of this machine (the model's folder is
    # recorded relative to the run folder)
    root = str(tmp_path_factory.getbasetemp())
    assert root not in (run / "run.json").read_text() and root not in (run / "checkpoint-16" / "hfgrow_state.json").read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["model_spec"] == "../model"
    # one stage, recorded like a growth run's: FLOPs count its parameters (a mixture of experts: its active ones)
    assert info["stages"] == [{"stage": 0, "start_step": 0, "start_tokens": 0, "layers": 4, "n_params": info["n_params"]}]
    for path in final.rglob("*"):
        assert root.encode() not in path.read_bytes(), path

    # the card of a trained folder: the run, not the grown model's card
    card = (final / "README.md").read_text()
    # a local model is not a Hub id: the card names it by its folder's name, not in base_model metadata
    assert "base_model:" not in card and "This model is `model` after" in card and "# run_a\n" in card
    assert "| steps | 16 |" in card and "| tokens | 2,048 |" in card  # 16 steps x 4 sequences x 32 tokens
    assert f"| train loss at step 16 | {log[-1]['loss']:.4f} |" in card
    for domain in ("a", "b"):
        assert f"| {domain} | {evals[0]['losses'][domain]:.4f} | {evals[2]['losses'][domain]:.4f} |" in card
    assert "| a | `a.jsonl` (local) | 0.500 |" in card
    assert "--data a=a.jsonl --data b=b " in card and "pip install -e ." in card
    for stale in ("has not been trained", "Continue pre-training", "hfgrow.yaml", "pip install hfgrow", "## Growth"):
        assert stale not in card, stale
    hub_named = export_checkpoint(run / "checkpoint-16", run / "hub-named", base_model_id="org/grown-model")
    hub_card = (hub_named / "README.md").read_text()
    assert "base_model: org/grown-model" in hub_card and "base_model_relation: finetune" in hub_card
    assert "[org/grown-model](https://huggingface.co/org/grown-model)" in hub_card

    # hfgrow export / plot through the CLI (in process)
    res = CliRunner().invoke(cmd.export, [str(run / "checkpoint-16"), str(env / "exp16")])
    assert res.exit_code == 0, res.output
    a, b = load_file(final / "model.safetensors"), load_file(env / "exp16" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "lm_head.weight" not in a  # tied duplicate dropped
    res = CliRunner().invoke(cmd.plot, [str(run), "--x", "flops", "--out", str(env / "loss.png")])
    assert res.exit_code == 0, res.output
    assert (env / "loss.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(cmd.export, [str(run / "checkpoint-16"), str(env / "exp16")])
    assert res.exit_code != 0 and "already exists" in str(res.exception)
    pushed = []
    monkeypatch.setattr(hub, "push_folder", lambda folder, repo_id, **kw: pushed.append((Path(folder), repo_id)))
    res = CliRunner().invoke(cmd.export, [str(run / "checkpoint-8"), str(env / "exp8"), "--push-to", "me/grown-cpt"])
    assert res.exit_code == 0, res.output
    assert pushed == [(env / "exp8", "me/grown-cpt")]
    exp8 = (env / "exp8" / "README.md").read_text()
    assert "| steps | 8 |" in exp8 and f"| train loss at step 8 | {log[7]['loss']:.4f} |" in exp8


def test_two_processes_match_one_and_resume_after_sigkill(env, capsys):
    common = ("--grad-accum", "2", "--max-steps", "6", "--save-steps", "3", "--eval-steps", "3")
    run_continue(env, "one", "--batch-size", "4", *common)
    run_continue(env, "two", "--batch-size", "2", *common, procs=2)
    one, two = train_log(env / "one"), train_log(env / "two")
    assert json.loads((env / "two" / "run.json").read_text())["world_size"] == 2
    assert len(one) == len(two) == 6
    for x, y in zip(one, two):
        assert abs(x["loss"] - y["loss"]) < 1e-5 * max(1.0, abs(x["loss"])), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) < 1e-4
        assert x["tokens"] == y["tokens"]
    for x, y in zip(eval_log(env / "one"), eval_log(env / "two")):
        assert all(abs(x["losses"][k] - y["losses"][k]) < 1e-5 for k in x["losses"])
    ranks = [json.loads(p.read_text()) for p in sorted((env / "two" / "ranks").glob("rank-*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["sequences"] == 6 * 2 * 2 for r in ranks)
    assert not set(ranks[0]["ids"]) & set(ranks[1]["ids"])  # each rank its own slice of the global batch
    assert sorted(ranks[0]["ids"] + ranks[1]["ids"]) == list(range(6 * 2 * 4))

    # SIGKILL while writing checkpoint-6 (after checkpoint-3 is complete), then --resume
    proc = run_continue(env, "killed", "--batch-size", "4", *common,
                        env_extra={"HFGROW_DEBUG_KILL_IN_SAVE": "6"}, check=False)
    assert proc.returncode != 0
    killed = env / "killed"
    assert (killed / ".tmp-checkpoint-6").is_dir() and not (killed / "checkpoint-6").exists()
    # never silently restarts over a run (checked before any process group: in process)
    assert continue_main(continue_args(env, "killed", "--batch-size", "4", *common)) == 1
    assert "--resume" in capsys.readouterr().err
    run_continue(env, "killed", "--batch-size", "4", *common, "--resume")
    resumed = train_log(killed)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in resumed] == [(r["loss"], r["grad_norm"], r["lr"]) for r in one]
    assert [e["losses"] for e in eval_log(killed)] == [e["losses"] for e in eval_log(env / "one")]
    assert (killed / "checkpoint-6").is_dir() and not (killed / ".tmp-checkpoint-6").exists()


def test_sigterm_stops_cleanly_and_the_next_run_starts_fresh_logs(env):
    import signal
    import time

    args = ["-m", "hfgrow.continue", "--model", str(env / "model"), "--data", f"a={env / 'data' / 'a.jsonl'}",
            "--output-dir", str(env / "stopped"), "--seq-len", "32", "--eval-sequences", "2", "--batch-size", "2"]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, *args, "--max-steps", "100000"], env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = env / "stopped" / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # stop it once it trains, before any checkpoint
        if log.is_file() and '"type": "train"' in log.read_text():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"stopped by SIGTERM; every complete checkpoint in {env / 'stopped'} is "
                                            "intact (rerun with --resume to continue from the latest).")
    assert train_log(env / "stopped") and not list((env / "stopped").glob("checkpoint-*"))
    # a new run in the same folder starts its own logs: each step once
    subprocess.run([sys.executable, *args, "--max-steps", "2", "--no-export"], env=e, check=True, capture_output=True)
    assert [r["step"] for r in train_log(env / "stopped")] == [1, 2]
    assert [r["step"] for r in eval_log(env / "stopped")] == [0, 2]


def test_train_new_only_updates_new_layers_with_mask_ramp(env):
    from safetensors.torch import load_file

    run_continue(env, "new", "--model", str(env / "grown"), "--train", "new", "--batch-size", "2",
                 "--max-steps", "5", "--save-steps", "5", "--gradient-checkpointing")
    log = train_log(env / "new")
    assert [r.get("mask_c") for r in log] == [0.0, 1 / 3, 2 / 3, 1.0, None]
    before = load_file(env / "grown" / "model.safetensors")
    after = load_file(env / "new" / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    for k in before:
        if ".layers.2." in k or ".layers.3." in k:
            assert before[k].dim() < 2 or not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k  # bit-identical
    assert json.loads((env / "new" / "final" / "config.json").read_text())["use_cache"] is True
    # the card tells the growth the trained model came from (the base's recipe), and the recipe itself stays
    # behind: final/ is trained, its new layers must not ramp from c = 0 again when someone trains it on
    card = (env / "new" / "final" / "README.md").read_text()
    assert "## Growth" in card and "`grown` was grown from `small`" in card and "New layers: 2, 3." in card
    assert "| parameters trained | the new layers only (2, 3) |" in card and "over the first 3 steps" in card
    assert not (env / "new" / "final" / "hfgrow.yaml").exists()


def test_mask_at_step_zero_equals_model_without_masked_layers(env):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(env / "grown").eval()
    ramp = MaskRamp(model, Mask(layers=(2, 3), steps=10))
    ramp.set_step(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        masked = model(ids).logits
        ramp.set_step(5)
        half = model(ids).logits
        ramp.remove()
        full = model(ids).logits
    short = AutoModelForCausalLM.from_pretrained(env / "grown").eval()
    short.model.layers = torch.nn.ModuleList(list(short.model.layers)[:2])
    with torch.no_grad():
        ref = short(ids).logits
    assert torch.equal(masked, ref)
    assert not torch.allclose(half, ref) and not torch.allclose(half, full)
    ramp2 = MaskRamp(model, Mask(layers=(2, 3), steps=4))
    assert ramp2.set_step(4) == 1.0 and not ramp2.active  # hooks dropped once c reaches 1


def test_width_mask_ramp_starts_from_the_source_function(env, short_run):
    from safetensors.torch import load_file

    from hfgrow.growth.pipeline import grow

    grow(str(env / "model"), env / "wide", op="random", hidden_size=48, num_heads=6, mask_steps=3, quiet=True)
    common = ("--batch-size", "2", "--eval-steps", "5")
    # no weight decay: a weight then changes only where its gradient is non-zero
    run_continue(env, "wide-run", *common, "--max-steps", "5", "--save-steps", "5", "--weight-decay", "0",
                 model="wide")
    log, narrow = train_log(env / "wide-run"), train_log(short_run)
    assert [r.get("mask_c") for r in log] == [0.0, 1 / 3, 2 / 3, 1.0, None]
    assert abs(log[0]["loss"] - narrow[0]["loss"]) < 1e-4  # c = 0: the source model's loss on the same batch
    assert all(math.isfinite(r["loss"]) for r in log)
    width = json.loads((env / "wide-run" / "run.json").read_text())["mask"]["width"]
    assert width["hidden_size"] == [32, 48] and width["new_heads"] == [4, 5]
    before = load_file(env / "wide" / "model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    after = load_file(env / "wide-run" / "final" / "model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    assert not torch.equal(before[:, 64:], after[:, 64:])  # the new FFN units trained once c > 0


def test_lora_exports_merged_weights(env):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_continue(env, "lora", "--train", "lora", "--lora-r", "4", "--batch-size", "2", "--max-steps", "3",
                 "--save-steps", "3")
    final = env / "lora" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert not [k for k in model.state_dict() if "lora" in k]
    base, merged = load_file(env / "model" / "model.safetensors"), load_file(final / "model.safetensors")
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all("proj" in k for k in changed)  # LoRA on the linear layers only


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("extra, message", [
    (["--data", "c=/nonexistent/file.jsonl"], "does not exist"),
    (["--data", "e={data}/empty.jsonl"], "contains no text"),
    (["--seq-len", "65"], "larger than the model's context"),
    (["--mixture", "{root}/badmix.json"], "unknown domain 'web'"),
    (["--train", "new"], "no recorded new layers"),
    ([], "give --max-steps or --max-tokens"),
])
def test_bad_input_one_clear_line(env, capsys, extra, message):
    (env / "badmix.json").write_text(json.dumps({"domains": {"a": {"proportion": 1}, "web": {"proportion": 1}}}))
    extra = [x.format(data=env / "data", root=env) for x in extra]
    steps = [] if message.startswith("give") else ["--max-steps", "2"]
    argv = ["--model", str(env / "model"), "--data", f"a={env / 'data' / 'a.jsonl'}", "--output-dir",
            str(env / "bad"), "--seq-len", "32", "--eval-sequences", "2", *steps, *extra]
    code = continue_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (env / "bad").exists()


def test_corrupt_checkpoint_on_resume(env, short_run):
    import shutil

    shutil.copytree(short_run, env / "corrupt")  # a run of 2 steps at batch 2 with checkpoint-2
    weights = env / "corrupt" / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    proc = run_continue(env, "corrupt", "--batch-size", "2", "--max-steps", "4", "--resume", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1 and "checkpoint" in lines[0] and "corrupt" in lines[0], proc.stderr[-2000:]
    (env / "corrupt" / "checkpoint-2" / "hfgrow_state.json").write_text("{not json")
    with pytest.raises(HfgrowError, match="corrupt"):
        read_state(env / "corrupt" / "checkpoint-2")


def test_tokenizer_larger_than_the_embedding_is_refused_at_start(env, tmp_path, capsys):
    # a token id past the embedding's rows used to crash mid-run with an IndexError
    import shutil

    model = tmp_path / "small-vocab"
    shutil.copytree(env / "model", model)
    config = json.loads((model / "config.json").read_text())
    n_tokens = config["vocab_size"]  # the test tokenizer has exactly as many tokens as the model has rows
    (model / "config.json").write_text(json.dumps(dict(config, vocab_size=n_tokens - 10)))
    code = continue_main(["--model", str(model), "--data", f"a={env / 'data' / 'a.jsonl'}", "--output-dir",
                          str(tmp_path / "run"), "--seq-len", "32", "--max-steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"has {n_tokens:,} tokens but the model's embedding has {n_tokens - 10:,} rows" in err[0]


def test_hfgrow_train_cli_checks_prints_the_command_then_launches(env):
    from click.testing import CliRunner

    base = ["--model", str(env / "model"), "--data", f"a={env / 'data' / 'a.jsonl'}", "--seq-len", "32",
            "--eval-sequences", "2", "--batch-size", "2", "--max-steps", "2"]
    res = CliRunner().invoke(cmd.train, [*base, "--output-dir", str(env / "cli_bad"), "--train", "new"])
    assert isinstance(res.exception, HfgrowError) and "no recorded new layers" in str(res.exception)
    res = CliRunner().invoke(cmd.train, ["--config-file", str(env / "nope.yaml"), *base, "--output-dir", str(env / "x")])
    assert isinstance(res.exception, HfgrowError) and "does not exist" in str(res.exception)
    # a real launch through accelerate's launcher (1 process, CPU config), the command printed first
    config = ROOT / "configs" / "cpu.yaml"
    args = [*base, "--output-dir", str(env / "cli_run"), "--no-export"]
    proc = subprocess.run([sys.executable, "-m", "hfgrow.cli.main", "train", "--config-file", str(config), *args],
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(config),
                "--num_processes", "1", "-m", "hfgrow.continue", *args]
    assert proc.stderr.splitlines()[0] == shlex.join(expected)
    assert [r["step"] for r in train_log(env / "cli_run")] == [1, 2]
    # --no-export: the run ends with its last checkpoint (resumable, exportable later) and no final/
    assert (env / "cli_run" / "checkpoint-2" / "hfgrow_state.json").is_file()
    assert not (env / "cli_run" / "final").exists()
    assert f"`hfgrow export {env / 'cli_run' / 'checkpoint-2'} OUT`" in proc.stderr
