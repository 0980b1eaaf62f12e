"""A representative subset of bench/family_sweep.py: one model type per class that used to fail.

Each type is built tiny from its config class's defaults (bench/tiny_configs.py), stacked x2 by hfgrow and loaded
back by transformers with no missing, unexpected or mismatched keys. The full sweep over every causal-LM type
transformers builds is ``python bench/family_sweep.py`` (figures in README, "Safety").
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from family_sweep import run_one  # noqa: E402

CLASSES = {
    "bart": "num_hidden_layers is an alias of encoder_layers; the decoder builds decoder_layers blocks",
    "gemma3": "a composite (vision + language) config: the language model's text_config grows",
    "bamba": "hybrid attention/SSM with validated fields and an Infinity in config.json",
    "deepseek_v3": "layer kinds by a rule (first_k_dense_replace): rewritten, kind-preserving stack",
    "recurrent_gemma": "a cycle of block types shorter than the model: written out per layer",
    "modernbert-decoder": "the first layer has no attention norm: a kind of its own",
}


@pytest.mark.parametrize("model_type", sorted(CLASSES))
def test_type_stacks_and_loads_cleanly(model_type):
    result = run_one(model_type)
    assert result["status"] == "ok", (CLASSES[model_type], result)


def test_per_layer_slices_of_a_global_follow_the_layer_map(tmp_path):
    # Gemma 3n packs one input embedding per layer into one tensor [vocab, L * d]: layer i of OUT gets the slice of
    # source layer map[i]
    import torch
    from tiny_configs import tiny_config

    import hfgrow
    from hfgrow.eval.tiny import make_model
    from hfgrow.io.checkpoint import Checkpoint

    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_config("gemma3n_text", 2), tokenizer=False)
    result = hfgrow.stack(str(src), out, pattern="1,0,1", quiet=True)
    name = "model.embed_tokens_per_layer.weight"
    source, grown = Checkpoint.open(src).load(name), Checkpoint.open(out).load(name)
    d = source.shape[1] // 2
    assert grown.shape == (source.shape[0], 3 * d)
    for i, s in enumerate(result.plan.layer_map):
        assert torch.equal(grown[:, i * d:(i + 1) * d], source[:, s * d:(s + 1) * d])
