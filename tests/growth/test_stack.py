"""Gstack and the engine: many families, bit-for-bit layers, configs, shards, safety, inputs."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import hfgrow
from helpers.families import FAMILIES
from hfgrow.io.checkpoint import Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.arch.layout import read_layout
from hfgrow.arch.pattern import compact, interpolate_map, parse_pattern
from hfgrow.growth.recipe import Recipe
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.cli.main import main

SOURCE_LAYERS = {"gemma3_text": 3, "qwen3_next": 2}


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0


def read_all(folder: Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint.open(folder)
    return {name: ckpt.load(name) for name in ckpt.tensors}


def hand_assembled(src: Path, out: Path, layer_map: list[int]):
    """The expected grown model, built in torch from the source model's in-memory layers."""
    source = AutoModelForCausalLM.from_pretrained(src).eval()
    grown_config = AutoModelForCausalLM.from_pretrained(out).config
    expected = AutoModelForCausalLM.from_config(grown_config).eval()
    src_blocks = _blocks(source)
    dst_blocks = _blocks(expected)
    assert len(dst_blocks) == len(layer_map)
    with torch.no_grad():
        for position, s in enumerate(layer_map):
            dst_blocks[position].load_state_dict(src_blocks[s].state_dict())
        others_src = {k: v for k, v in source.state_dict().items() if ".layers." not in k and ".h." not in k
                      and ".blocks." not in k}
        missing = expected.load_state_dict(others_src, strict=False)
        assert not missing.unexpected_keys
    return source, expected


def _blocks(model):
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == model.config.num_hidden_layers:
            return module
    raise AssertionError("no block list")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "deepseek_v3"])
def test_gstack_every_family(family, tmp_path):
    n = SOURCE_LAYERS.get(family, 2)
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES[family](n), tokenizer=False)
    result = hfgrow.stack(str(src), out, factor=2, quiet=True)
    layout = result.layout
    assert result.plan.layer_map == list(range(n)) * 2

    # layer i of OUT equals layer i mod L of SRC, bit for bit; globals unchanged
    source, grown = read_all(src), read_all(out)
    for name, tensor in grown.items():
        if name.startswith(layout.prefix):
            index, rest = name[len(layout.prefix):].split(".", 1)
            source_name = f"{layout.prefix}{int(index) % n}.{rest}"
        else:
            source_name = name
        assert torch.equal(tensor, source[source_name]), name
    stored_ties = [target for target in layout.tied if target in source]  # a checkpoint may omit tied copies
    assert len(grown) == len(source) + sum(len(names) for names in layout.layers) - len(stored_ties)

    # config: layer count and every per-layer list follow the map
    src_cfg = json.loads((src / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg[layout.count_key] == 2 * n
    for key, values in layout.per_layer_keys.items():
        assert cfg[key] == values * 2, key
    for key in layout.index_keys:
        expected = [i for i in range(2 * n) if (i % n) in set(src_cfg.get(key, layout.index_keys[key]))]
        assert cfg[key] == expected

    # loads with no missing/unexpected keys and matches a model assembled by hand in torch
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _, expected_model = hand_assembled(src, out, result.plan.layer_map)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, expected_model(ids).logits, rtol=0, atol=0)


def test_layer_types_follow_the_map_not_the_rule(tmp_path):
    # gemma3 derives layer kinds from a rule (every 6th global); the output must list the stacked kinds
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES["gemma3_text"](3), tokenizer=False)
    hfgrow.stack(str(src), out, pattern="0-2*2,1", quiet=True)
    cfg = json.loads((out / "config.json").read_text())
    s, f = "sliding_attention", "full_attention"
    assert cfg["layer_types"] == [s, f, s, s, f, s, f]
    assert AutoModelForCausalLM.from_pretrained(out).config.layer_types == cfg["layer_types"]


def test_index_lists_are_remapped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES["qwen2_moe"](2), tokenizer=False)
    hfgrow.stack(str(src), out, pattern="1,0,1,0", quiet=True)
    assert json.loads((out / "config.json").read_text())["mlp_only_layers"] == [1, 3]
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_rule_based_layer_kinds_refuse_and_suggest(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES["deepseek_v3"](3), tokenizer=False)  # dense, MoE, MoE (first_k_dense_replace=1)
    # an explicit pattern the rule cannot describe is refused, with one that it can
    with pytest.raises(HfgrowError, match=r"--pattern '0-2,1-2,1'"):
        hfgrow.stack(str(src), out, pattern="0-2*2", quiet=True)
    assert not out.exists()
    result = hfgrow.stack(str(src), out, pattern="0-2,1-2,1", quiet=True)
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert result.plan.layer_map == [0, 1, 2, 1, 2, 1]


def test_rule_based_layer_kinds_stack_kind_by_kind(tmp_path):
    # --factor 2 asks for a grown model: each kind is stacked on its own and the rule key follows the depth
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES["deepseek_v3"](3), tokenizer=False)
    result = hfgrow.stack(str(src), out, factor=2, quiet=True)
    assert result.plan.layer_map == [0, 0, 1, 2, 1, 2]
    assert json.loads((out / "config.json").read_text())["first_k_dense_replace"] == 2
    report = result.report()
    assert "kind-preserving stack" in report and "plain Gstack (0-2*2)" in report
    assert "first_k_dense_replace = 2" in report
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # the recipe replays it (the pinned pattern gets the same rule rewrite)
    again = hfgrow.stack(str(src), tmp_path / "again", pattern=result.recipe.params["pattern"], quiet=True)
    assert (tmp_path / "again" / "config.json").read_text() == (out / "config.json").read_text()
    assert again.plan.layer_map == result.plan.layer_map


def test_sharded_output_and_index(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2))
    hfgrow.stack(str(src), out, factor=3, max_shard_size="100KB", quiet=True)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert [p.name for p in shards] == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    data_bytes = 0
    for shard in shards:
        with open(shard, "rb") as f:
            header_len = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(header_len))
        assert header["__metadata__"] == {"format": "pt"}
        assert header_len % 8 == 0
        data_bytes += shard.stat().st_size - 8 - header_len
        with safe_open(shard, "pt") as handle:
            assert set(handle.keys()) == {k for k, v in index["weight_map"].items() if v == shard.name}
    assert index["metadata"]["total_size"] == data_bytes
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_hidden_layers == 6


def test_tied_embeddings_stay_tied(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2, tie_word_embeddings=True))
    hfgrow.stack(str(src), out, factor=2, quiet=True)
    names = set(Checkpoint.open(out).tensors)
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_tokenizer_generation_card_and_recipe(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2))
    (src / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.7}))
    (src / "chat_template.jinja").write_text("{{ messages }}")
    hfgrow.stack(str(src), out, factor=2, quiet=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert "hfgrow" in card.data.tags and "grow-stack" in card.data.tags
    assert card.data.library_name == "transformers"
    assert "hfgrow stack" in card.text and "--pattern '0-1*2'" in card.text
    recipe = Recipe.read(out)
    assert recipe.layer_map == [0, 1, 0, 1] and recipe.new_layers == [2, 3]
    assert recipe.params["pattern"] == "0-1*2" and recipe.command == "stack"
    # a local source is recorded by its folder's name: no path of this machine in a publishable folder
    assert recipe.source.name == "src" and str(tmp_path) not in (out / "hfgrow.yaml").read_text()
    assert str(tmp_path) not in (out / "README.md").read_text()


def test_dtype_conversion(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2), tokenizer=False)
    hfgrow.stack(str(src), out, factor=2, dtype="bfloat16", quiet=True)
    source, grown = read_all(src), read_all(out)
    assert all(t.dtype == torch.bfloat16 for t in grown.values())
    assert torch.equal(grown["model.layers.3.mlp.up_proj.weight"], source["model.layers.1.mlp.up_proj.weight"].bfloat16())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_orders_and_patterns(tmp_path):
    src = tmp_path / "src"
    make_model(src, tiny_llama_config(layers=4), tokenizer=False)
    assert hfgrow.stack(str(src), None, layers=8, order="interpolate", dry_run=True).plan.layer_map == \
        [0, 0, 1, 1, 2, 2, 3, 3]
    assert hfgrow.stack(str(src), None, layers=6, dry_run=True).plan.layer_map == [0, 1, 2, 3, 0, 1]
    solar = hfgrow.stack(str(src), tmp_path / "solar", pattern="0-2,1-3", quiet=True)
    assert solar.plan.layer_map == [0, 1, 2, 1, 2, 3]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "solar").config.num_hidden_layers == 6


def test_pattern_language():
    assert parse_pattern("0-5*4", 6) == list(range(6)) * 4
    assert parse_pattern("0,0,1,1,2,2", 3) == [0, 0, 1, 1, 2, 2]
    assert parse_pattern("0-1,2-5*5,4-5", 6) == [0, 1] + [2, 3, 4, 5] * 5 + [4, 5]
    assert parse_pattern("0-23,8-31", 32) == list(range(24)) + list(range(8, 32))
    assert parse_pattern(" 3-1 ", 4) == [3, 2, 1]
    assert interpolate_map(3, 6) == [0, 0, 1, 1, 2, 2]
    for layer_map in ([0, 1, 2] * 3, [0, 1, 1, 2], [0, 1, 2, 3, 2, 3, 2, 3, 4, 5]):
        assert parse_pattern(compact(layer_map), 6) == layer_map
    with pytest.raises(HfgrowError, match="'7'.*only 6 layers"):
        parse_pattern("0-5,7", 6)
    with pytest.raises(HfgrowError, match="'x-2'"):
        parse_pattern("0-1,x-2", 6)
    with pytest.raises(HfgrowError, match="empty"):
        parse_pattern("  ", 6)
    with pytest.raises(HfgrowError, match="'1-2\\*0'"):
        parse_pattern("1-2*0", 6)


def test_dry_run_writes_nothing(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2), tokenizer=False)
    assert run_cli(["stack", str(src), str(out), "--factor", "4", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert not out.exists()
    assert "layer map  0-1*4" in printed and "dry run: nothing written" in printed
    assert "num_hidden_layers = 8" in printed and "byte copies" in printed


def test_output_safety(tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2), tokenizer=False)
    hfgrow.stack(str(src), out, factor=2, quiet=True)  # an earlier output: a model folder --overwrite may replace
    (out / "keep.txt").write_text("precious")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_cli(["stack", str(src), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert run_cli(["stack", str(src), str(src)]) == 1
    assert run_cli(["stack", str(src), str(src / "inner")]) == 1
    assert not (src / "inner").exists()

    # a crash mid-write leaves OUT as it was and no temporary folder behind
    import hfgrow.io.executor as executor

    real = executor.write_shard

    def crash(shard, source, path, progress=None):
        real(shard, source, path, progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(executor, "write_shard", crash)
    with pytest.raises(KeyboardInterrupt):
        hfgrow.stack(str(src), out, factor=2, overwrite=True, quiet=True)
    assert {p.name for p in tmp_path.iterdir()} == {"src", "out"}
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(executor, "write_shard", real)

    # not enough disk space: refused before writing
    import hfgrow.io.output as output
    import shutil as _shutil

    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(HfgrowError, match="not enough disk space"):
        hfgrow.stack(str(src), out, factor=2, overwrite=True, quiet=True)
    monkeypatch.undo()
    hfgrow.stack(str(src), out, factor=2, overwrite=True, quiet=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_pytorch_bin_fallback_and_malicious_pickle(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, tiny_llama_config(layers=2), tokenizer=False, safe_serialization=False)
    assert (src / "pytorch_model.bin").exists() and not list(src.glob("*.safetensors"))
    hfgrow.stack(str(src), out, factor=2, quiet=True)
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    grown = read_all(out)
    assert torch.equal(grown["model.layers.3.self_attn.q_proj.weight"], state["model.layers.1.self_attn.q_proj.weight"])

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((src / "config.json").read_text())
    with open(evil / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": Payload()}, f)
    assert run_cli(["stack", str(evil), str(tmp_path / "evil-out")]) == 1
    assert not marker.exists() and not (tmp_path / "evil-out").exists()


def test_peft_adapter_is_merged_first(tmp_path):
    from peft import LoraConfig, get_peft_model

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    make_model(base, tiny_llama_config(layers=2))
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(adapter)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config))

    result = hfgrow.stack(str(adapter), tmp_path / "out", factor=2, quiet=True)
    assert result.source.adapter is not None
    merged = peft_model.merge_and_unload().state_dict()
    grown = read_all(tmp_path / "out")
    torch.testing.assert_close(grown["model.layers.2.self_attn.q_proj.weight"], merged["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(grown["model.layers.2.self_attn.q_proj.weight"], read_all(base)["model.layers.0.self_attn.q_proj.weight"])


def test_bad_sources(tmp_path, capsys):
    from transformers import T5Config

    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps(T5Config(d_model=32, num_layers=2).to_dict()))
    cases = {
        str(t5): "encoder-decoder",
        str(tmp_path / "missing" / "dir" / "x"): "neither an existing folder nor a Hub repo id",
        str(tmp_path / "empty"): "no config.json",
    }
    (tmp_path / "empty").mkdir()
    for spec, message in cases.items():
        assert run_cli(["stack", spec, str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    flat = tmp_path / "flat"
    make_model(flat, tiny_llama_config(layers=2), tokenizer=False)
    with safe_open(flat / "model.safetensors", "pt") as f:
        globals_only = {k: f.get_tensor(k) for k in f.keys() if ".layers." not in k}
    from safetensors.torch import save_file

    save_file(globals_only, flat / "model.safetensors", metadata={"format": "pt"})
    assert run_cli(["stack", str(flat), str(tmp_path / "o")]) == 1
    assert "no repeated block" in capsys.readouterr().err


def test_inspect(tmp_path, capsys):
    src = tmp_path / "src"
    make_model(src, FAMILIES["qwen2_moe"](2), tokenizer=False)
    info = hfgrow.inspect(str(src))
    model = AutoModelForCausalLM.from_pretrained(src)
    total = sum(p.numel() for p in model.parameters())
    assert info["params"]["total"] == total
    assert info["params"]["embedding"] == 2 * 128 * 32  # embed_tokens + untied lm_head
    assert info["num_layers"] == 2 and info["layer_index_config_keys"] == ["mlp_only_layers"]
    assert info["bytes_on_disk"] == (src / "model.safetensors").stat().st_size
    assert run_cli(["inspect", str(src)]) == 0
    printed = capsys.readouterr().out
    assert "Qwen2MoeForCausalLM" in printed and "2 under 'model.layers.'" in printed


def test_layout_is_derived_not_listed(tmp_path):
    # GPT-2 stores 'n_layer' and 'transformer.h.<i>'; nothing in hfgrow names either.
    src = tmp_path / "gpt2"
    make_model(src, FAMILIES["gpt2"](2), tokenizer=False)
    ckpt = Checkpoint.open(src)
    layout = read_layout(src, ckpt)
    assert (layout.prefix, layout.count_key, layout.num_layers) == ("transformer.h.", "n_layer", 2)
    assert "transformer.wte.weight" in layout.globals


def test_more_bad_inputs_are_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    make_model(src, tiny_llama_config(layers=2), tokenizer=False)
    assert run_cli(["stack", str(src), str(tmp_path / "o"), "--layers", "1"]) == 1
    assert "shrink" in capsys.readouterr().err

    bad_config = tmp_path / "badcfg"
    make_model(bad_config, FAMILIES["qwen3"](2), tokenizer=False)
    cfg = json.loads((bad_config / "config.json").read_text())
    cfg["layer_types"] = ["full_attention"] * 5  # wrong length: transformers rejects it
    (bad_config / "config.json").write_text(json.dumps(cfg))
    corrupt = tmp_path / "corrupt"
    make_model(corrupt, tiny_llama_config(layers=2), tokenizer=False)
    blob = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [2, 2]}}).encode()
    (corrupt / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    capsys.readouterr()
    for folder, words in ((bad_config, "not a config transformers accepts"), (corrupt, "is corrupt")):
        for command in (["stack", str(folder), str(tmp_path / "o")], ["inspect", str(folder)]):
            assert run_cli(command) == 1
            err = capsys.readouterr().err
            assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_one_layer_source(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_model(src, FAMILIES["qwen3"](1), tokenizer=False)
    hfgrow.stack(str(src), out, factor=3, quiet=True)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 3 and len(model.config.layer_types) == 3


# ---------------------------------------------------------------- issue 15: what a new user hits first


def test_a_pattern_that_drops_source_layers_says_which(tmp_path, capsys):
    """The README's partial-stacking pattern is written for 6 layers; on 8 it silently left out layers 6-7."""
    src = tmp_path / "src"
    make_model(src, tiny_llama_config(layers=8), tokenizer=False)
    capsys.readouterr()
    result = hfgrow.stack(str(src), tmp_path / "out", pattern="0-1,2-5*5,4-5", quiet=True)
    err = capsys.readouterr().err
    # 0,1 + 2..5 five times + 4,5 = 24 layers, none of them a copy of source layer 6 or 7
    assert len(result.plan.layer_map) == 24 and not {6, 7} & set(result.plan.layer_map)
    assert err == "warning: the layer map leaves out source layers 6-7 (2 of 8); the output has 24 layers\n"
    assert "leaves out source layers 6-7" in (tmp_path / "out" / "README.md").read_text()
    # fewer output layers than source layers: said too; a map that uses every layer says nothing
    hfgrow.stack(str(src), None, pattern="0-3", dry_run=True)
    assert capsys.readouterr().err == ("warning: the layer map leaves out source layers 4-7 (4 of 8); the output has "
                                       "4 layers, fewer than the source's 8\n")
    hfgrow.stack(str(src), None, pattern="0-7,7-0", dry_run=True)
    assert capsys.readouterr().err == ""


def test_interpolation_is_recorded_in_the_pattern_language(tmp_path, capsys):
    src = tmp_path / "src"
    make_model(src, tiny_llama_config(layers=3))
    result = hfgrow.stack(str(src), tmp_path / "out", factor=2, order="interpolate", quiet=True)
    assert result.plan.layer_map == [0, 0, 1, 1, 2, 2]
    assert "layer map  0*2,1*2,2*2" in result.report()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`0*2,1*2,2*2`" in card and "--pattern '0*2,1*2,2*2'" in card
    assert Recipe.read(tmp_path / "out").params["pattern"] == "0*2,1*2,2*2"


def test_inspect_shows_width_and_names_layer_kinds(tmp_path, capsys):
    """What width targets are picked from, and layer kinds named by what they are (was 'block-kind-0 x30')."""
    llama = tmp_path / "llama"
    make_model(llama, tiny_llama_config(layers=3, hidden_size=64, intermediate_size=160, num_attention_heads=8,
                                        num_key_value_heads=2, vocab_size=300, max_position_embeddings=512),
               tokenizer=False)
    info = hfgrow.inspect(str(llama))
    assert (info["hidden_size"], info["num_attention_heads"], info["num_key_value_heads"], info["head_dim"]) == \
        (64, 8, 2, 8)
    assert info["ffn_sizes"] == {"intermediate_size": 160}
    assert (info["vocab_size"], info["context_length"]) == (300, 512)
    assert info["layer_types"] == ["dense"] * 3
    assert run_cli(["inspect", str(llama)]) == 0
    printed = capsys.readouterr().out
    assert "width         hidden 64, 8 heads x head_dim 8 (2 key/value), FFN intermediate_size 160\n" in printed
    assert "vocabulary    300 tokens, context 512 tokens\n" in printed
    assert "layer types   dense: 3 layers (0-2)\n" in printed

    # dense then MoE, told apart by the blocks' own parameters (DeepSeek-V3 describes it by a rule, not a list)
    deepseek = tmp_path / "deepseek"
    make_model(deepseek, FAMILIES["deepseek_v3"](3), tokenizer=False)
    info = hfgrow.inspect(str(deepseek))
    assert info["layer_types"] == ["dense"] + ["MoE of 4 experts + shared expert"] * 2
    assert info["ffn_sizes"] == {"intermediate_size": 64, "moe_intermediate_size": 32}

    # the config's layer_types name the attention; the MLP kind is added where it varies (mlp_only_layers)
    qwen2_moe = tmp_path / "qwen2_moe"
    make_model(qwen2_moe, FAMILIES["qwen2_moe"](2), tokenizer=False)
    assert hfgrow.inspect(str(qwen2_moe))["layer_types"] == [
        "full_attention / dense", "full_attention / MoE of 4 experts + shared expert"]
    gemma3 = tmp_path / "gemma3"
    make_model(gemma3, FAMILIES["gemma3_text"](3), tokenizer=False)
    config = json.loads((gemma3 / "config.json").read_text())
    assert hfgrow.inspect(str(gemma3))["layer_types"] == config["layer_types"]
