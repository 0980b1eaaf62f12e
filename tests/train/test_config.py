"""TrainConfig: one typed config for the training run, built from the command line or from Python, owning every
value derived from the options (tokens per step, steps, stages, schedule)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from hfgrow.errors import HfgrowError
from hfgrow.train.config import TrainConfig, build_parser
from hfgrow.train.growth import parse_grow
from hfgrow.train.schedule import lr_at

REQUIRED = ["--model", "m", "--data", "d.txt", "--output-dir", "run"]
ROOT = Path(__file__).resolve().parents[2]


def test_every_option_is_a_field_and_every_field_an_option():
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("derived")}
    assert dests == fields
    documented = [f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("derived")
                  and len(f.metadata["help"]) < 10]
    assert documented == []  # every option says what it does


def test_the_command_line_and_python_build_the_same_config():
    argv = [*REQUIRED, "--data", "code=c.jsonl", "--max-tokens", "2M", "--batch-size", "4", "--grad-accum", "2",
            "--grow", "stack:2@500k", "--lr", "3e-4", "--keep-checkpoints", "5", "-q"]
    from_argv = TrainConfig.from_argv(argv, world_size=2)
    from_python = TrainConfig(model="m", data=["d.txt", "code=c.jsonl"], output_dir="run", max_tokens=2_000_000,
                              batch_size=4, grad_accum=2, grow=[parse_grow("stack:2@500k")], lr=3e-4,
                              save_total_limit=5, quiet=True, world_size=2)
    assert from_argv == from_python
    assert from_argv.data == ("d.txt", "code=c.jsonl") and from_argv.verbosity == -1


def test_derived_values():
    cfg = TrainConfig.from_argv([*REQUIRED, "--max-tokens", "2M", "--batch-size", "4", "--grad-accum", "3"],
                                world_size=2)
    with pytest.raises(ValueError, match="for_model"):
        cfg.tokens_per_step  # noqa: B018 - the sequence length is the model's to decide
    cfg = cfg.for_model(context=1024)
    assert cfg.seq_len == 1024  # min(2048, context)
    assert cfg.global_batch == 8 and cfg.tokens_per_step == 4 * 2 * 3 * 1024 == 24576
    assert cfg.steps == math.ceil(2_000_000 / 24576) == 82
    assert cfg.for_model(context=None).seq_len == 1024  # an explicit length is kept
    assert TrainConfig.from_argv([*REQUIRED, "--max-steps", "7", "--max-tokens", "2M"]).for_model(4096).steps == 7
    with pytest.raises(HfgrowError, match="--seq-len 4096 is larger than the model's context"):
        TrainConfig.from_argv([*REQUIRED, "--max-steps", "1", "--seq-len", "4096"]).for_model(context=2048)


def test_stages_and_schedule_come_from_the_config(tiny_config):
    cfg = TrainConfig.from_argv([*REQUIRED, "--max-steps", "40", "--batch-size", "2", "--seq-len", "256",
                                 "--grow", "stack:2@10240", "--grow-warmup-steps", "3"]).for_model(None)
    plan = cfg.stage_plan(tiny_config)
    assert cfg.tokens_per_step == 512
    assert [(s.start_step, s.layers) for s in plan.stages] == [(0, 2), (20, 4)]  # 10,240 / 512 tokens
    schedule = cfg.schedule(plan.final_params, plan)
    assert (schedule.max_steps, schedule.warmup, schedule.rewarm, schedule.growth_steps) == (40, 20, 3, (20,))
    cosine = [lr_at(step, schedule.max_lr, schedule.min_lr, 20, 40) for step in range(40)]
    assert [schedule.lr(step) / cosine[step] for step in (19, 20, 21, 22, 23)] == pytest.approx([1, 1 / 3, 2 / 3, 1, 1])


@pytest.fixture
def tiny_config() -> dict:
    return {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.mark.parametrize("extra, message", [
    (["--max-steps", "5", "--batch-size", "0"], "--batch-size must be at least 1 (got 0)."),
    (["--max-steps", "5", "--beta2", "1"], "--beta2 must be at least 0 and below 1 (got 1.0)."),
    (["--max-steps", "5", "--lr", "nan"], "--lr must be a finite number (got nan)."),
    (["--max-steps", "5", "--weight-decay", "-1"], "--weight-decay cannot be negative (got -1.0)."),
    (["--max-steps", "0"], "--max-steps must be at least 1 (got 0)."),
    (["--max-steps", "5", "--seq-len", "1"], "--seq-len must be at least 2 (got 1)."),
    ([], "give --max-steps or --max-tokens."),
    (["--max-steps", "5", "-q", "-v"], "--quiet and --verbose contradict each other; give one."),
    (["--max-steps", "5", "--grow", "stack:2@1k", "--train", "lora"],
     "--grow trains every parameter of every stage; it does not combine with --train lora."),
])
def test_bad_settings_are_one_sentence(extra, message):
    with pytest.raises(HfgrowError) as refused:
        TrainConfig.from_argv([*REQUIRED, *extra])
    assert str(refused.value) == message


def test_a_bad_setting_through_the_entry_point_is_one_line(capsys, tmp_path):
    from hfgrow.train.loop import main

    assert main(["--model", "m", "--data", "d.txt", "--output-dir", str(tmp_path / "run"), "--max-steps", "1",
                 "--batch-size", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --batch-size must be at least 1 (got 0)."
    assert not (tmp_path / "run").exists()


def test_tokens_per_step_and_stages_are_computed_in_one_place():
    """Only TrainConfig multiplies the batch into tokens per step and plans the stages; the rest of the package
    asks it (tests/test_architecture.py has the general one-owner checks)."""
    product = re.compile(r"batch_size\s*\*|\*\s*[\w.]*batch_size")
    offenders = []
    for path in sorted((ROOT / "hfgrow").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "train":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if (product.search(code) and re.search(r"seq_len|grad_accum|num_processes|world", code)) or \
                    ("plan_stages(" in code and "def plan_stages" not in code and ">>>" not in code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_no_trainer_function_takes_a_namespace():
    text = "\n".join(p.read_text() for p in (ROOT / "hfgrow" / "train").glob("*.py") if p.name != "config.py")
    assert "argparse" not in text and "Namespace" not in text


def _readme_block(starting: str) -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if b.startswith(starting)]
    assert len(found) == 1, starting
    return found[0]


def test_the_readme_config_example_computes_what_it_says():
    block = _readme_block("from hfgrow.train.config import TrainConfig")
    *setup, last = block.strip().splitlines()
    expression, said = last.split("#", 1)
    scope: dict = {}
    exec("\n".join(setup), scope)  # noqa: S102 - README's own example
    assert eval(expression, scope) == eval(said.split(":")[0].strip())  # noqa: S307


def test_the_readme_loop_is_the_loop():
    import inspect
    import textwrap

    from hfgrow.train import loop

    shown = _readme_block("for step in range(run.start_step, last):")
    lines = inspect.getsource(loop.train).splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("for step in"))
    code = textwrap.dedent("\n".join(lines[first:]))
    strip = lambda text: [line.split("#")[0].rstrip() for line in text.splitlines() if line.split("#")[0].strip()]  # noqa: E731
    assert strip(shown) == strip(code)[:len(strip(shown))]
