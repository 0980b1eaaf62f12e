"""Fuzz: random mutations of a valid tiny checkpoint's safetensors header and shard index (a seeded loop).

Each mutated folder must either be refused with an HfgrowError (the CLI's one sentence) or, if hfgrow accepts it,
grow into an OUT that transformers loads with no missing, unexpected or mismatched keys. Any other exception is a
traceback a user would see, and fails the test with the case that caused it.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import pytest

import hfgrow
from hfgrow.arch.layout import open_model
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, tiny_llama_config

CASES = 300
JUNK = [None, True, -1, 0, 2**70, 1.5, float("nan"), "x", "F32", [], [1], [1, 2, 3], [-1, 4], [0.0, 4.0], {},
        {"a": 1}, [[1]], "0" * 50]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    config = tiny_llama_config(layers=2, hidden_size=16, intermediate_size=32, vocab_size=64, num_attention_heads=2,
                               num_key_value_heads=1)
    make_model(root / "single", config, tokenizer=False)
    make_model(root / "sharded", config, tokenizer=False, max_shard_size="20KB")
    assert (root / "sharded" / "model.safetensors.index.json").is_file()
    return {"single": root / "single", "sharded": root / "sharded"}


def _read(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header, data: bytes, *, length_delta: int = 0, raw_header: bytes | None = None) -> None:
    blob = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", max(0, len(blob) + length_delta)) + blob + data)


def mutate_header(rng: random.Random, path: Path) -> str:
    """One random change to a safetensors file; returns what was done (for the failure message)."""
    header, data = _read(path)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    kind = rng.randrange(14)
    if kind == 0:
        field = rng.choice(["dtype", "shape", "data_offsets"])
        value = rng.choice(JUNK)
        header[name][field] = value
        _write(path, header, data)
        return f"{name}.{field} = {value!r}"
    if kind == 1:
        field = rng.choice(["dtype", "shape", "data_offsets"])
        del header[name][field]
        _write(path, header, data)
        return f"del {name}.{field}"
    if kind == 2:
        del header[name]
        _write(path, header, data)
        return f"del {name}"
    if kind == 3:
        i = rng.randrange(len(name))
        new = name[:i] + rng.choice("xq._0") + name[i + 1:]
        header[new] = header.pop(name)
        _write(path, header, data)
        return f"rename {name} -> {new}"
    if kind == 4:
        header[name + "_copy"] = dict(header[name])
        _write(path, header, data)
        return f"duplicate {name}"
    if kind == 5:
        other = rng.choice(names)
        header[name]["data_offsets"], header[other]["data_offsets"] = header[other]["data_offsets"], header[name]["data_offsets"]
        _write(path, header, data)
        return f"swap offsets {name} <-> {other}"
    if kind == 6:
        header[name]["dtype"] = rng.choice(["F16", "BF16", "I32", "F64", "U8", "BOOL", "F8_E4M3", "I4", "Q8"])
        _write(path, header, data)
        return f"{name}.dtype = {header[name]['dtype']}"
    if kind == 7:
        shape = header[name]["shape"]
        header[name]["shape"] = list(reversed(shape)) if len(shape) > 1 else [1, *shape]
        _write(path, header, data)
        return f"{name}.shape = {header[name]['shape']}"
    if kind == 8:
        delta = rng.choice([-9, -1, 1, 8, 1 << 20, 1 << 40])
        _write(path, header, data, length_delta=delta)
        return f"header length {delta:+d}"
    if kind == 9:
        raw = path.read_bytes()
        cut = rng.randrange(len(raw))
        path.write_bytes(raw[:cut] if rng.random() < 0.7 else raw + bytes(rng.randrange(1, 64)))
        return f"truncate/extend at {cut}"
    if kind == 10:
        value = rng.choice([[], None, 3, "s", [header], {"__metadata__": {}}])
        _write(path, value, data)
        return f"header = {str(value)[:40]}"
    if kind == 11:
        header["__metadata__"] = rng.choice([{"format": "pt", "extra": "ok"}, {"format": "tf"}, {"format": 1},
                                             [], None, "pt", {"a": {"b": 1}}, {}])
        _write(path, header, data)
        return f"__metadata__ = {header['__metadata__']!r}"
    if kind == 12:
        blob = bytearray(json.dumps(header).encode())
        for _ in range(rng.randrange(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        _write(path, None, data, raw_header=bytes(blob))
        return "flip header bytes"
    offsets = header[name]["data_offsets"]
    header[name]["data_offsets"] = [offsets[0] + rng.choice([-4, 4]), offsets[1] + rng.choice([-4, 0, 4])]
    _write(path, header, data)
    return f"{name}.data_offsets = {header[name]['data_offsets']}"


def mutate_index(rng: random.Random, folder: Path) -> str:
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    weight_map = index["weight_map"]
    name = rng.choice(sorted(weight_map))
    shards = sorted(set(weight_map.values()))
    kind = rng.randrange(8)
    if kind == 0:
        weight_map[name] = rng.choice(["../outside.safetensors", "/etc/passwd", "", ".", "sub/../" + shards[0],
                                       "missing.safetensors", "/", "model.safetensors.index.json"])
        what = f"weight_map[{name}] = {weight_map[name]!r}"
    elif kind == 1:
        other = [s for s in shards if s != weight_map[name]]
        weight_map[name] = rng.choice(other) if other else weight_map[name]
        what = f"{name} moved to another shard"
    elif kind == 2:
        del weight_map[name]
        what = f"del weight_map[{name}]"
    elif kind == 3:
        weight_map[name + ".extra"] = shards[0]
        what = "extra index entry"
    elif kind == 4:
        index["weight_map"] = rng.choice(JUNK)
        what = f"weight_map = {index['weight_map']!r}"
    elif kind == 5:
        index = rng.choice(JUNK)
        what = f"index = {index!r}"
    elif kind == 6:
        weight_map[name] = rng.choice([1, None, ["a"], {"x": 1}])
        what = f"weight_map[{name}] = {weight_map[name]!r}"
    else:
        path.write_bytes(path.read_bytes()[: rng.randrange(1, 40)])
        return "truncated index"
    path.write_text(json.dumps(index))
    return what


def test_mutated_checkpoints_are_refused_or_load(bases, tmp_path):
    from transformers import AutoModelForCausalLM

    (tmp_path / "outside.safetensors").write_bytes((bases["single"] / "model.safetensors").read_bytes())
    rng = random.Random(16)
    outcomes = {"refused": 0, "grown": 0}
    for case in range(CASES):
        kind = rng.choice(["single", "sharded", "index"])
        folder = tmp_path / "w" / f"case{case}"
        shutil.copytree(bases["sharded" if kind != "single" else "single"], folder)
        if kind == "index":
            what = mutate_index(rng, folder)
        else:
            files = sorted(folder.glob("*.safetensors"))
            what = mutate_header(rng, rng.choice(files))
        out = tmp_path / "out" / f"case{case}"
        try:
            open_model(folder)
            hfgrow.stack(str(folder), out, factor=2, quiet=True)
        except HfgrowError as exc:
            message = str(exc)
            assert message and "\n" not in message and message.endswith("."), (case, what, message)
            assert not out.exists(), (case, what)
            outcomes["refused"] += 1
            shutil.rmtree(folder)
            continue
        except Exception as exc:  # noqa: BLE001 - exactly what must never happen
            pytest.fail(f"case {case} ({kind}: {what}) raised {type(exc).__name__}: {exc}")
        try:
            _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"case {case} ({kind}: {what}) grew an OUT that does not load: {type(exc).__name__}: {exc}")
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        assert not bad, (case, kind, what, bad)
        outcomes["grown"] += 1
        shutil.rmtree(folder)
        shutil.rmtree(out)
    # the loop exercised both sides: most mutations are refused, harmless ones (metadata, swapped equal-size
    # offsets, extra bytes that are really gaps...) still grow
    print(outcomes)
    assert outcomes["refused"] > CASES // 2 and outcomes["grown"] > 5, outcomes
