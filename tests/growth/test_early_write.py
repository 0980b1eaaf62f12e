"""Gstack starts writing from the headers while the checks run alongside (growth/pipeline._header_plan): the
output is the checked path's byte for byte, a header plan that differs from the checked one is thrown away and
written again, and a check that fails leaves nothing at OUT and no temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.growth import pipeline
from hfgrow.growth.pipeline import WriteOptions, grow_model
from hfgrow.growth.spec import Depth, GrowSpec


def gstack(factor: int) -> GrowSpec:
    return GrowSpec(op="direct", depth=Depth(factor, None, None, "stack"), dtype="keep", command="stack")


def files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; the recipe without its creation time."""
    out = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    out["hfgrow.yaml"] = b"".join(line for line in out["hfgrow.yaml"].splitlines(True) if not line.startswith(b"created:"))
    return out


@pytest.fixture()
def small(tmp_path) -> Path:
    make_model(tmp_path / "small", tiny_llama_config(layers=3), dtype=torch.bfloat16, tokenizer=False)
    return tmp_path / "small"


def test_header_plan_needs_neither_torch_nor_transformers(small):
    code = ("import sys; from pathlib import Path; from hfgrow.growth import pipeline as p; "
            "from hfgrow.growth.spec import Depth, GrowSpec; "
            "e = p._header_plan(GrowSpec(op='direct', depth=Depth(4, None, None, 'stack'), command='stack'), "
            f"Path({str(small)!r}), p.WriteOptions()); "
            "print(e is not None, len(e[0].tensors), 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["True", str(2 + 4 * 3 * 9 + 1), "False", "False"]  # embed, 12 blocks x 9, norm, head


def test_early_write_is_the_checked_write_byte_for_byte(small, tmp_path, monkeypatch):
    """`hfgrow stack` (a fresh process: the early writer runs) against the checked path in this process."""
    code = ("import sys; from hfgrow.growth import pipeline as p; from hfgrow.cli.main import main; "
            "init = p._EarlyWriter.__init__; "
            "p._EarlyWriter.__init__ = lambda self, *a: (print('early writer', file=sys.stderr), init(self, *a))[1]; "
            "sys.argv = ['hfgrow', *sys.argv[1:]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, "stack", str(small), str(tmp_path / "early" / "out"), "--factor",
                           "4", "--max-shard-size", "100KB", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "early writer\n", proc.stderr
    assert not pipeline._can_fork()  # torch is loaded here: grow_model writes only after the checks
    grow_model(str(small), tmp_path / "checked" / "out", gstack(4), WriteOptions(quiet=True, max_shard_size="100KB"))
    early, checked = files(tmp_path / "early" / "out"), files(tmp_path / "checked" / "out")
    assert len([n for n in early if n.endswith(".safetensors")]) > 1  # several shards and an index
    assert early == checked


def test_a_header_plan_the_checks_contradict_is_written_again(small, tmp_path, monkeypatch):
    """The early plan (here deliberately x2) is not the checked one (x4): its weights are discarded and the
    checked plan's written, so the result equals a plain checked write."""
    monkeypatch.setattr(pipeline, "_can_fork", lambda: True)  # forking this process is fine for file copies
    real = pipeline._header_plan
    monkeypatch.setattr(pipeline, "_header_plan", lambda growth, *a: real(gstack(2), *a))
    grow_model(str(small), tmp_path / "rewritten" / "out", gstack(4), WriteOptions(quiet=True, max_shard_size="100KB"))
    monkeypatch.setattr(pipeline, "_can_fork", lambda: False)
    grow_model(str(small), tmp_path / "checked" / "out", gstack(4), WriteOptions(quiet=True, max_shard_size="100KB"))
    rewritten, checked = files(tmp_path / "rewritten" / "out"), files(tmp_path / "checked" / "out")
    assert rewritten == checked
    assert json.loads(rewritten["config.json"])["num_hidden_layers"] == 12


def test_a_failing_check_leaves_nothing_at_out(small, tmp_path, monkeypatch):
    """config.json says a wider FFN than the tensors have: the headers still give a plan (writing starts), the
    skeleton check refuses it; OUT does not exist afterwards and no temporary folder is left beside it."""
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "intermediate_size": 256}))
    monkeypatch.setattr(pipeline, "_can_fork", lambda: True)
    started = []
    real = pipeline._header_plan
    monkeypatch.setattr(pipeline, "_header_plan", lambda *a: started.append(real(*a)) or started[-1])
    out = tmp_path / "out" / "grown"
    with pytest.raises(HfgrowError, match="intermediate|shape|re-initiali"):
        grow_model(str(small), out, gstack(4), WriteOptions(quiet=True))
    assert started and started[0] is not None  # the early write did start
    assert not out.exists() and list(out.parent.iterdir()) == []
