"""`hfgrow inspect` describes a config-only folder (what `hfgrow train` starts from at random initialisation) as it
describes the same model with weights: layers, layer kinds, parameters, tying (issue 25)."""

from __future__ import annotations

import json
import shutil

import pytest

from hfgrow.eval.tiny import make_model, tiny_gemma3_config, tiny_llama_config
from helpers.cli import run_cli


@pytest.mark.parametrize("config", [tiny_llama_config(layers=3), tiny_gemma3_config(layers=4, bos_token_id=2,
                                                                                     eos_token_id=0)],
                         ids=["llama", "gemma3-tied"])
def test_config_only_folder_is_described_like_its_weights(config, tmp_path, capsys):
    make_model(tmp_path / "full", config)
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "full" / "config.json", tmp_path / "bare" / "config.json")
    code, out, err = run_cli(["inspect", tmp_path / "full", "--json"], capsys)
    assert code == 0, err
    full = json.loads(out)
    code, out, err = run_cli(["inspect", tmp_path / "bare", "--json"], capsys)
    assert code == 0, err
    bare = json.loads(out)
    for key in ("num_layers", "layer_types", "params", "tied_embeddings", "hidden_size", "num_attention_heads",
                "num_key_value_heads", "tensors_per_layer"):
        assert bare[key] == full[key], key
    assert bare["format"] == "config only" and bare["files"] == 0 and bare["bytes_on_disk"] == 0
    code, out, _ = run_cli(["inspect", tmp_path / "bare"], capsys)
    assert code == 0 and "no weights: a config-only folder" in out
