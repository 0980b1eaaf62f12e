"""A representative subset of bench/family_sweep.py: one model type per class that used to fail.

Each type is built tiny (bench/tiny_configs.py), stacked x2 by hfgrow, and OUT must pass the sweep's four checks:
it loads with no missing, unexpected or mismatched keys, has twice the blocks (and says so in
``num_hidden_layers``), runs a forward pass and generates 4 tokens with the cache. The full sweep over every
causal-LM type transformers knows is ``python bench/family_sweep.py`` (figures in README, "Which models").
Config rewrites (depth and width) go through transformers' config classes: tested here on the two shapes that
flat JSON keys got wrong (BART's ``num_hidden_layers`` alias, Falcon's derived ``num_key_value_heads``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from family_sweep import run_one  # noqa: E402

CLASSES = {
    "bart": "num_hidden_layers is an alias of encoder_layers (the cache is sized by it); the decoder builds "
            "decoder_layers blocks",
    "prophetnet": "a BART-style decoder with its own count keys (num_decoder_layers)",
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


def _falcon(**kwargs) -> dict:
    from transformers import FalconConfig

    return FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=128, **kwargs).to_dict()


def test_a_width_rewrite_writes_the_key_the_config_class_builds_from():
    # Falcon derives num_key_value_heads from num_kv_heads in __post_init__: the flat key alone is overwritten
    from hfgrow.arch.layout import hf_config_from_dict, rewrite_config

    config = rewrite_config(_falcon(new_decoder_architecture=True, num_kv_heads=2),
                            {"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 4})
    assert config["num_kv_heads"] == 4 and config["hidden_size"] == 64
    rebuilt = hf_config_from_dict({k: v for k, v in config.items() if k != "num_key_value_heads"})
    assert (rebuilt.num_key_value_heads, rebuilt.num_attention_heads) == (4, 8)


def test_a_depth_rewrite_follows_the_attribute_map():
    # BART's num_hidden_layers is encoder_layers: the decoder's cache is sized by it
    from transformers import BartConfig

    from hfgrow.arch.layout import hf_config_from_dict, rewrite_config

    source = BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, vocab_size=128, is_encoder_decoder=False,
                        is_decoder=True).to_dict()
    config = rewrite_config(source, {"decoder_layers": 4, "num_hidden_layers": 4})
    assert (config["decoder_layers"], config["encoder_layers"]) == (4, 4)
    assert "num_hidden_layers" not in config
    assert hf_config_from_dict(config).num_hidden_layers == 4


def test_a_rewrite_the_config_class_cannot_read_is_refused():
    # multi-query Falcon (old architecture) always has one key/value head, whatever config.json says
    from hfgrow.arch.layout import rewrite_config
    from hfgrow.errors import HfgrowError

    with pytest.raises(HfgrowError, match="does not read num_key_value_heads = 4"):
        rewrite_config(_falcon(new_decoder_architecture=False, multi_query=True), {"num_key_value_heads": 4})


def test_falcon_widened_loads_and_keeps_its_function(tmp_path):
    # GQA Falcon grown to 8 heads over 4 key/value heads: config.json says so in Falcon's own key, and the output
    # gives the source's logits
    import torch
    from transformers import AutoModelForCausalLM, FalconConfig

    import hfgrow
    from hfgrow.eval.tiny import make_model

    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FalconConfig(**_falcon(new_decoder_architecture=True, num_kv_heads=2)), tokenizer=False)
    hfgrow.grow(str(src), out, op="direct", hidden_size=64, quiet=True)
    grown = json.loads((out / "config.json").read_text())
    assert (grown["num_kv_heads"], grown["num_attention_heads"], grown["hidden_size"]) == (4, 8, 64)
    ids = torch.arange(3, 11).unsqueeze(0)
    source = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    model, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, source(ids).logits, atol=1e-4, rtol=1e-4)
