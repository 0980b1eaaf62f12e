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


# ------------------------------------------------------------------- token folders and training checkpoints


def _paths(value, prefix=()) -> list[tuple]:
    """Every key path of a JSON value (dict keys and list indices), leaves and inner nodes."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def mutate_json(rng: random.Random, data):
    """One random change at a random place of a JSON value: a junk value, a deletion, or a nudged number."""
    path = rng.choice(_paths(data)[1:])
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    kind = rng.randrange(3)
    if kind == 0:
        parent[key] = rng.choice([*JUNK, "../../secret", "/etc/passwd", -64, 10**12])
    elif kind == 1 and isinstance(parent, dict):
        del parent[key]
    elif isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] += rng.choice([-10**6, -1, 1, 7, 10**9])
    else:
        parent[key] = rng.choice(JUNK)
    return f"{'.'.join(map(str, path))} ({['junk', 'deleted', 'nudged'][kind]})"


@pytest.fixture(scope="module")
def token_world(tmp_path_factory):
    from hfgrow.data.specs import parse_specs
    from hfgrow.data.tokens import tokenize_to_folder
    from hfgrow.eval.tiny import make_tokenizer

    root = tmp_path_factory.mktemp("fuzz-tokens")
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    rng = random.Random(0)
    (root / "a.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(30)) for _ in range(200)))
    tok = make_tokenizer(text=(root / "a.txt").read_text(), vocab_size=64)
    tokenize_to_folder(parse_specs([f"a={root / 'a.txt'}"]), tok, root / "tok", shard_chars=3000)
    return root, tok


def test_mutated_token_indexes_are_refused_or_read_in_bounds(token_world, tmp_path):
    from hfgrow.data.token_folder import TokenFolder

    root, tok = token_world
    (tmp_path / "secret").write_bytes(b"x" * 4096)
    rng = random.Random(21)
    outcomes = {"refused": 0, "read": 0}
    for case in range(CASES):
        folder = tmp_path / "w" / f"case{case}" / "tok"
        shutil.copytree(root / "tok", folder)
        index = json.loads((folder / "tokens.json").read_text())
        what = mutate_json(rng, index)
        (folder / "tokens.json").write_text(json.dumps(index))
        try:
            tokens = TokenFolder(folder)
            tokens.check_tokenizer(tok)
            for name in tokens.names:
                domain = tokens.domain(name)
                windows = [domain.window(w, 16) for w in range(domain.n_windows(16))]
                assert all(int(w.max()) < 64 for w in windows), (case, what)
                domain.document_ends()
        except HfgrowError as exc:
            message = str(exc)
            assert message and "\n" not in message and message.endswith("."), (case, what, message)
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - a traceback a user would see
            pytest.fail(f"case {case} ({what}) raised {type(exc).__name__}: {exc}")
        else:
            outcomes["read"] += 1
        shutil.rmtree(folder.parent)
    print(outcomes)
    assert outcomes["refused"] > CASES // 3 and outcomes["read"] > 5, outcomes


def test_mutated_checkpoint_states_are_refused_or_resume_in_bounds(token_world, tmp_path):
    from hfgrow.data.loading import build_data
    from hfgrow.data.specs import parse_specs
    from hfgrow.train.checkpoints import read_state

    root, tok = token_world
    data = build_data(parse_specs([f"a={root / 'tok'}"]), tok, seq_len=16, seed=0, eval_sequences=2)
    batch_tokens = 4 * 16
    for _ in range(3):
        data.train.next_batch(4)
    state = {"step": 3, "tokens": 3 * batch_tokens, "stage": 0, "data": data.train.state_dict(),
             "run": {"tokens_per_step": batch_tokens, "seq_len": 16, "stages": [{"layers": 2}]}}
    rng = random.Random(22)
    outcomes = {"refused": 0, "resumed": 0}
    for case in range(CASES):
        folder = tmp_path / f"checkpoint-3"
        folder.mkdir(exist_ok=True)
        mutated = json.loads(json.dumps(state))
        what = mutate_json(rng, mutated)
        (folder / "hfgrow_state.json").write_text(json.dumps(mutated))
        try:
            loaded = read_state(folder)
            data.train.load_state_dict(loaded.data)
            batch = data.train.next_batch(4)
            assert all(0 <= t < 64 for _, _, seq in batch for t in seq), (case, what)
        except HfgrowError as exc:
            message = str(exc)
            assert message and "\n" not in message and message.endswith("."), (case, what, message)
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"case {case} ({what}) raised {type(exc).__name__}: {exc}")
        else:
            outcomes["resumed"] += 1
    print(outcomes)
    assert outcomes["refused"] > CASES // 3 and outcomes["resumed"] > 5, outcomes
