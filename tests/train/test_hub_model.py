"""Training a grown model named by its Hub id: config, tokenizer, weights and recipe come from one resolved folder."""

from __future__ import annotations

from hfgrow.eval.tiny import make_model, make_tokenizer, tiny_llama_config
from hfgrow.growth.pipeline import grow
from hfgrow.growth.recipe import Recipe
from hfgrow.io.source import open_source
from hfgrow.train.args import preflight
from hfgrow.train.config import TrainConfig


def test_a_hub_model_brings_its_recipe(hub_server, tmp_path):
    tokenizer = make_tokenizer(tmp_path / "small", vocab_size=300)
    make_model(tmp_path / "small", tiny_llama_config(layers=2, vocab_size=len(tokenizer)), tokenizer=False)
    grow(str(tmp_path / "small"), tmp_path / "grown", op="random", factor=2, mask_steps=7, quiet=True)  # <= 8 steps
    files = {p.name: p.read_bytes() for p in (tmp_path / "grown").iterdir()}
    hub_server.create_repo("org/grown", files=files)
    (tmp_path / "d.txt").write_text("the cat sat on the mat. " * 100)
    cfg = TrainConfig.from_argv(["--model", "org/grown", "--data", str(tmp_path / "d.txt"), "--output-dir",
                                 str(tmp_path / "run"), "--seq-len", "32", "--max-steps", "8", "--train", "new"])
    with open_source(cfg.model, progress=False) as source:
        setup = preflight(cfg, source)
        assert source.repo_id == "org/grown" and (source.path / "hfgrow.yaml").read_bytes() == files["hfgrow.yaml"]
    local = Recipe.read(tmp_path / "grown")
    assert setup.new_layers == list(local.new_layers) == [1, 3]  # factor 2 of a 2-layer model: 0,0,1,1
    assert setup.mask == local.operation.mask and setup.mask.steps == 7
    assert len(setup.tokenizer) == len(tokenizer)
