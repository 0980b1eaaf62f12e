"""The card of a trained folder, built in process from a run's records: a Hub base that was grown."""

from __future__ import annotations

import transformers as tf
import yaml

from hfgrow.growth.recipe import Operation, Recipe, SourceRef
from hfgrow.train.checkpoints import RunState
from hfgrow.train.export import card_text
from hfgrow.train.runlog import RunLog

RUN = {
    "model": "org/big", "model_source": {"repo_id": "org/big", "commit": "c0ffee"}, "model_spec": "org/big",
    "base_model_id": "org/big", "train": "all", "lora": None, "n_params": 1_100_048_384, "seq_len": 2048,
    "batch_size": 8, "grad_accum": 16, "world_size": 8, "tokens_per_step": 8 * 8 * 16 * 2048, "max_steps": 4,
    "max_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 1, "weight_decay": 0.1, "betas": [0.9, 0.95],
    "grad_clip": 1.0, "seed": 0, "mixture": {"web": 0.75, "code": 0.25}, "mixture_file": "mix.json",
    "data": {"web": "hf:HuggingFaceFW/fineweb-edu:sample-10BT", "code": "/home/someone/corpora/code.jsonl"},
    "eval_data": {}, "mask": None,
}


def test_card_of_a_trained_grown_hub_model(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    Recipe(command="grow", params={"op": "zero"}, source=SourceRef(repo_id="org/small", commit="abc"),
           operation=Operation(op="zero", function_preserving=True), layer_map=[0, 0, 1, 1], new_layers=[1, 3],
           command_line="hfgrow grow org/small big --op zero").write(base)
    run = tmp_path / "run"
    with RunLog(run, resume_step=None, write=True) as log:
        log.eval(0, 0, {"web": 3.5, "code": 2.5}, RUN["mixture"])
        for step in range(1, 7):  # the run went on past the exported checkpoint (step 4)
            log.train({"step": step, "loss": 3.0 - 0.1 * step, "tokens": step * RUN["tokens_per_step"]})
        log.eval(4, 4 * RUN["tokens_per_step"], {"web": 3.1, "code": 2.2}, RUN["mixture"])
        log.eval(6, 6 * RUN["tokens_per_step"], {"web": 3.0, "code": 2.1}, RUN["mixture"])
    state = RunState(step=4, tokens=4 * RUN["tokens_per_step"], run=RUN, last_loss=2.6)
    card = card_text(run / "checkpoint-4", state, base, tf.LlamaConfig(), "big-cpt", None)

    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["base_model"] == "org/big" and metadata["base_model_relation"] == "finetune"
    assert metadata["datasets"] == ["HuggingFaceFW/fineweb-edu"]
    assert metadata["tags"] == ["hfgrow", "model-growth", "grow-zero", "continued-pretraining", "llama"]
    assert "# big-cpt" in card and "This model is [org/big](https://huggingface.co/org/big) after" in card
    # the growth, from the base's recipe
    assert "`org/big` was grown from [org/small](https://huggingface.co/org/small)" in card
    assert "G-up-zero" in card and "computing the same function as its source" in card
    assert "Layer map (layer i is a copy of source layer pattern[i]): `0*2,1*2`." in card
    assert "New layers: 1, 3." in card and "Growth command: `hfgrow grow org/small big --op zero`." in card
    # the training: 4 steps of 8 processes x 8 sequences x 16 micro-steps x 2048 tokens = 8,388,608 tokens
    assert "| tokens | 8,388,608 |" in card
    assert "| tokens per step | 2,097,152 (processes × sequences × micro-steps × tokens = 8 × 8 × 16 × 2048) |" in card
    assert "| learning rate | 0.0003 → 3e-05: linear warmup over 1 step, then cosine decay |" in card
    assert "| train loss at step 4 | 2.6000 |" in card  # 3.0 - 0.1·4, the log's step 4, not its last step
    assert "| domain | step 0 (before training) | step 4 |" in card
    assert "| web | 3.5000 | 3.1000 |" in card and "| code | 2.5000 | 2.2000 |" in card
    # data: a Hub dataset by id and link, a local file by its name only
    assert "| web | [HuggingFaceFW/fineweb-edu](https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu) | 0.750 |" \
        in card
    assert "| code | `code.jsonl` (local) | 0.250 |" in card and "/home/someone" not in card
    assert ("hfgrow train --num-processes 8 --model org/big --data web=hf:HuggingFaceFW/fineweb-edu:sample-10BT "
            "--data code=code.jsonl --mixture mix.json --output-dir run/") in card
