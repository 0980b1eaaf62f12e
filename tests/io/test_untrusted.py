"""A model folder is untrusted input (issue 16): hostile and broken folders, built here, offline.

Every refusal is checked the same way: exit status 1, one line on stderr that starts with ``error:`` and ends with
a period, no traceback, the source folder and any pre-existing OUT byte-identical, and no byte from outside the
model folder in OUT.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.hostile import SECRET, no_outside_bytes, refused, tree
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, tiny_llama_config



# --------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("untrusted") / "tiny"
    make_model(folder, tiny_llama_config(layers=2, hidden_size=32, intermediate_size=64, vocab_size=128))
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return folder


@pytest.fixture
def src(tiny: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny model, in tmp_path/work/src (tmp_path/secret holds the secret outside it)."""
    folder = tmp_path / "work" / "src"
    shutil.copytree(tiny, folder)
    (tmp_path / "secret").write_bytes(SECRET)
    return folder








def write_safetensors(path: Path, header: object, data: bytes = b"", length: int | None = None) -> None:
    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)


def header_of(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


# --------------------------------------------------------------------------------------------------- security


@pytest.mark.parametrize("name", ["tokenizer.json", "generation_config.json", "o200k.tiktoken",
                                  "additional_chat_templates/x.jinja"])
def test_carried_over_link_outside_the_folder_is_refused(src, tmp_path, capsys, name):
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).unlink(missing_ok=True)
    (src / name).symlink_to(tmp_path / "secret")  # tokenizer.json -> ~/.cache/huggingface/token
    before = tree(src)
    out = tmp_path / "out"
    refused(run_cli(["stack", src, out, "--factor", "2", "--push-to", "org/x"], capsys), name,
            "outside the folder")
    assert not out.exists() and tree(src) == before
    refused(run_cli(["inspect", src], capsys), name)


def test_linked_folder_of_templates_outside_is_refused(src, tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "t.jinja").write_bytes(SECRET)
    (src / "additional_chat_templates").symlink_to(tmp_path / "elsewhere")
    refused(run_cli(["stack", src, tmp_path / "out"], capsys), "additional_chat_templates",
            "outside the folder")
    assert not (tmp_path / "out").exists()


def test_links_inside_the_folder_are_followed(src, tmp_path, capsys):
    (src / "shared").mkdir()
    (src / "tokenizer.json").rename(src / "shared" / "tokenizer.json")
    (src / "tokenizer.json").symlink_to("shared/tokenizer.json")
    code, _, err = run_cli(["stack", src, tmp_path / "out", "--factor", "2", "-q"], capsys)
    assert code == 0, err
    copied = tmp_path / "out" / "tokenizer.json"
    assert not copied.is_symlink() and copied.read_bytes() == (src / "shared" / "tokenizer.json").read_bytes()


def hf_cache_snapshot(tiny: Path, cache: Path, repo: str = "org--tiny") -> Path:
    """The layout huggingface_hub writes: snapshots/<sha>/<file> -> ../../blobs/<hash>."""
    storage = cache / f"models--{repo}"
    sha = "a" * 40
    snapshot = storage / "snapshots" / sha
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(sha)
    for i, path in enumerate(sorted(p for p in tiny.iterdir() if p.is_file())):
        blob = storage / "blobs" / f"{i:040x}"
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_hf_cache_snapshot_links_into_blobs_work(tiny, tmp_path, capsys, monkeypatch, hf_offline):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = hf_cache_snapshot(tiny, cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for spec in (snapshot, "org/tiny"):  # the snapshot folder itself, and the repo id served from the cache
        out = tmp_path / f"out-{len(str(spec))}"
        code, _, err = run_cli(["stack", spec, out, "--factor", "2", "-q"], capsys)
        assert code == 0, err
        assert (out / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
        no_outside_bytes(out)

    # a snapshot link that leaves the repo's blobs (into another repo's, or anywhere) is refused
    other = hf_cache_snapshot(tiny, cache, "org--other")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(other.parent.parent / "blobs" / os.listdir(other.parent.parent / "blobs")[0])
    refused(run_cli(["stack", snapshot, tmp_path / "o3"], capsys), "tokenizer.json", "outside the folder")


@pytest.mark.parametrize("where", ["relative", "absolute", "passwd"])
def test_index_naming_files_outside_the_folder_is_refused(src, tmp_path, capsys, where):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(src / "model.safetensors", outside)  # a valid file whose bytes must not reach OUT
    header, _ = header_of(outside)
    target = {"relative": "../../outside.safetensors", "absolute": str(outside), "passwd": "/etc/passwd"}[where]
    index = {"metadata": {}, "weight_map": {name: target for name in header if name != "__metadata__"}}
    (src / "model.safetensors").unlink()
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    before = tree(src)
    err = refused(run_cli(["stack", src, tmp_path / "out"], capsys), "model.safetensors.index.json")
    assert "outside the folder" in err or "not a file name inside" in err
    refused(run_cli(["inspect", src], capsys), "model.safetensors.index.json")
    assert not (tmp_path / "out").exists() and tree(src) == before


def test_weight_file_linked_outside_is_refused(src, tmp_path, capsys):
    shutil.move(src / "model.safetensors", tmp_path / "elsewhere.safetensors")
    (src / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    refused(run_cli(["stack", src, tmp_path / "out"], capsys), "model.safetensors", "outside the folder")
    assert not (tmp_path / "out").exists()


def test_special_files_are_not_read(src, tmp_path, capsys):
    (src / "tokenizer.json").unlink()
    os.mkfifo(src / "tokenizer.json")  # reading it would block forever
    refused(run_cli(["stack", src, tmp_path / "out"], capsys), "tokenizer.json", "not a regular file")


def test_push_refuses_a_folder_with_links_outside(src, tmp_path):
    from hfgrow.io.hub import push_folder

    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to(tmp_path / "secret")
    with pytest.raises(HfgrowError, match="tokenizer.json .*outside the folder"):
        push_folder(src, "org/x", token="hf_x")  # refused before any request


def test_adapter_merge_refuses_links_outside(src, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(src), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path=str(src))))
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to(tmp_path / "secret")  # in the base model folder
    capsys.readouterr()
    refused(run_cli(["stack", adapter, tmp_path / "out"], capsys), "tokenizer.json", "outside the folder")
    (src / "tokenizer.json").unlink()
    (adapter / "adapter_model.safetensors").rename(tmp_path / "w.safetensors")
    (adapter / "adapter_model.safetensors").symlink_to(tmp_path / "w.safetensors")  # in the adapter folder
    refused(run_cli(["stack", adapter, tmp_path / "out"], capsys), "adapter_model.safetensors")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- data loss


def test_overwrite_replaces_only_model_folders(src, tmp_path, capsys, monkeypatch):
    notes = tmp_path / "work" / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    before = tree(notes)
    refused(run_cli(["stack", src, notes, "--overwrite"], capsys), "--overwrite replaces only", "neither")
    assert tree(notes) == before

    monkeypatch.chdir(notes)  # OUT=. would delete the current folder's files
    refused(run_cli(["stack", src, ".", "--overwrite"], capsys), "current folder")
    refused(run_cli(["stack", src, "..", "--overwrite"], capsys))  # holds the current folder (and SRC)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    refused(run_cli(["stack", src, ".", "-q"], capsys), "current folder")  # even empty: OUT is renamed into place
    assert tree(notes) == before and (src / "model.safetensors").is_file()
    monkeypatch.chdir(tmp_path)

    model_out = tmp_path / "grown"
    assert run_cli(["stack", src, model_out, "-q"], capsys)[0] == 0
    code, _, err = run_cli(["stack", src, model_out, "--factor", "2", "-q", "--overwrite"], capsys)
    assert code == 0, err  # a model folder (an earlier output) is replaced
    assert json.loads((model_out / "config.json").read_text())["num_hidden_layers"] == 4


def test_stale_temporary_folders_are_removed(src, tmp_path, capsys):
    out = tmp_path / "out"
    dead = tmp_path / ".out.hfgrow-tmp-999999999"  # a run killed by SIGKILL (no such process)
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
    old = tmp_path / ".out.hfgrow-old-999999998"
    old.mkdir()
    live = tmp_path / f".out.hfgrow-tmp-{os.getppid()}"  # a process that is still running: kept
    live.mkdir()
    other = tmp_path / ".notes.hfgrow-tmp-999999999"  # another OUT's: not this run's business
    other.mkdir()
    assert run_cli(["stack", src, out, "-q"], capsys)[0] == 0
    assert not dead.exists() and not old.exists() and live.exists() and other.exists()


def test_write_failures_are_one_sentence_and_leave_out_intact(src, tmp_path, capsys, monkeypatch):
    import hfgrow.io.executor as executor

    out = tmp_path / "out"
    assert run_cli(["stack", src, out, "-q"], capsys)[0] == 0
    before = tree(out)
    real = executor.write_shard

    def disk_full(shard, source, path, progress=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(executor, "write_shard", disk_full)
    refused(run_cli(["stack", src, out, "--factor", "2", "--overwrite", "-q"], capsys), "the disk is full",
            "left as it was")
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out", "secret", "work"]
    monkeypatch.setattr(executor, "write_shard", real)

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if ".hfgrow-tmp-" in self.name:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    refused(run_cli(["stack", src, tmp_path / "ro" / "out"], capsys), "read-only")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)

    long = tmp_path / ("n" * 250)  # fits, but ".NAME.hfgrow-tmp-PID" would not: the temporary name is shortened
    code, _, err = run_cli(["stack", src, long, "-q"], capsys)
    assert code == 0, err
    refused(run_cli(["stack", src, tmp_path / ("n" * 300)], capsys), "too long")


# --------------------------------------------------------------------------------------------------- wrong output


def _rename(src: Path, old: str, new: str) -> None:
    header, data = header_of(src / "model.safetensors")
    write_safetensors(src / "model.safetensors",
                      {k.replace(old, new) if k != "__metadata__" else k: v for k, v in header.items()}, data)


@pytest.mark.parametrize("case, words", [
    ("renamed tensor", ["model.layers.0.mlp.upp_proj.weight", "model.layers.0.mlp.up_proj.weight is missing"]),
    ("renamed prefix", ["model.layerz.0", "missing"]),
    ("wrong shape", ["lm_head.weight has shape [64, 32]", "expects [128, 32]"]),
    ("hidden_size", ["has shape", "expects"]),
])
def test_checkpoint_must_match_the_model_its_config_describes(src, tmp_path, capsys, case, words):
    if case == "renamed tensor":
        _rename(src, "layers.0.mlp.up_proj", "layers.0.mlp.upp_proj")
    elif case == "renamed prefix":
        _rename(src, "model.layers.", "model.layerz.")
        (src / "config.json").write_text(json.dumps(json.loads((src / "config.json").read_text())))
    elif case == "wrong shape":
        header, data = header_of(src / "model.safetensors")
        entry = header["lm_head.weight"]
        begin, end = entry["data_offsets"]
        entry["shape"] = [64, 32]
        half = (end - begin) // 2
        for other in header.values():  # keep the offsets tiling the data
            if isinstance(other, dict) and "data_offsets" in other and other["data_offsets"][0] > begin:
                other["data_offsets"] = [o - half for o in other["data_offsets"]]
        entry["data_offsets"] = [begin, end - half]
        write_safetensors(src / "model.safetensors", header, data[:end - half] + data[end:])
    else:
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps(dict(config, hidden_size=64, head_dim=16)))
    before = tree(src)
    if case == "renamed prefix":
        refused(run_cli(["stack", src, tmp_path / "out"], capsys))
    else:
        refused(run_cli(["stack", src, tmp_path / "out"], capsys), "does not match", *words)
        refused(run_cli(["inspect", src], capsys), "does not match")
    assert not (tmp_path / "out").exists() and tree(src) == before


def _shift(header: dict, name: str, delta: int) -> None:
    header[name]["data_offsets"] = [o + delta for o in header[name]["data_offsets"]]


@pytest.mark.parametrize("case, words", [
    ("overlap", ["overlaps"]),
    ("gap", ["gap"]),
    ("truncated", ["truncated"]),
    ("trailing", ["after the last tensor"]),
    ("list header", ["not a JSON object"]),
    ("null header", ["not a JSON object"]),
    ("metadata list", ["__metadata__"]),
    ("float offsets", ["data_offsets"]),
    ("header too long", ["past the end of the file"]),
    ("index list", ["JSON object"]),
    ("index without map", ["weight_map"]),
    ("config list", ["config.json", "JSON object"]),
    ("config binary", ["config.json", "not valid JSON"]),
])
def test_malformed_files_are_one_sentence(src, tmp_path, capsys, case, words):
    path = src / "model.safetensors"
    header, data = header_of(path)
    names = [k for k in header if k != "__metadata__"]
    by_offset = sorted(names, key=lambda k: header[k]["data_offsets"][0])
    if case == "overlap":
        _shift(header, by_offset[1], -4)
        write_safetensors(path, header, data)
    elif case == "gap":
        for name in by_offset[1:]:
            _shift(header, name, 8)
        write_safetensors(path, header, data[:header[by_offset[0]]["data_offsets"][1]] + b"\0" * 8
                          + data[header[by_offset[0]]["data_offsets"][1]:])
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif case == "trailing":
        path.write_bytes(path.read_bytes() + b"\0" * 16)
    elif case in ("list header", "null header"):
        write_safetensors(path, [] if case == "list header" else None, data)
    elif case == "metadata list":
        write_safetensors(path, dict(header, __metadata__=["pt"]), data)
    elif case == "float offsets":
        header[by_offset[0]]["data_offsets"] = [0.0, float(header[by_offset[0]]["data_offsets"][1])]
        write_safetensors(path, header, data)
    elif case == "header too long":
        blob = json.dumps(header).encode()
        write_safetensors(path, blob, data, length=len(blob) + len(data) + 1)
    elif case.startswith("index"):
        path.rename(src / "model-00001-of-00001.safetensors")
        index = [] if case == "index list" else {"metadata": {}}
        (src / "model.safetensors.index.json").write_text(json.dumps(index))
    elif case == "config list":
        (src / "config.json").write_text("[1, 2]")
    elif case == "config binary":
        (src / "config.json").write_bytes(b"\xff\xfe\x00{")
    before = tree(src)
    for command in (["stack", src, tmp_path / "out"], ["inspect", src]):
        refused(run_cli(command, capsys), *words)
    assert not (tmp_path / "out").exists() and tree(src) == before


# --------------------------------------------------------------------------------------------------- limits, hangs


@pytest.mark.parametrize("argv, words", [
    (["--layers", "5000000", "--dry-run"], ["5,000,000 layers", "at most 4,096"]),
    (["--pattern", "0-1*99999999999", "--dry-run"], ["199,999,999,998 layers"]),
    (["--factor", "10000"], ["20,000 layers"]),
    (["--factor", "nan"], ["--factor"]),
    (["--factor", "inf"], ["--factor"]),
])
def test_sizes_are_checked_before_anything_large_is_built(src, tmp_path, capsys, argv, words):
    start = time.monotonic()
    refused(run_cli(["stack", src, tmp_path / "out", *argv], capsys), *words)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "out").exists()


def test_disk_space_is_checked_before_planning(src, tmp_path, capsys, monkeypatch):
    import hfgrow.io.output as output
    import hfgrow.growth.pipeline as pipeline

    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    planned = []
    monkeypatch.setattr(pipeline, "check_grown", lambda *a: planned.append(a))
    refused(run_cli(["stack", src, tmp_path / "out", "--factor", "1000"], capsys), "not enough disk space")
    assert not planned and not (tmp_path / "out").exists()


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hub_that_never_answers_times_out(silent_server, src, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    import hfgrow.io.hub as hub

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", silent_server)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    sleeps = []
    monkeypatch.setattr(hub, "_sleep", sleeps.append)
    _http.close_session()
    try:
        start = time.monotonic()
        with pytest.raises(HfgrowError, match=r"^network problem while trying to download 'org/x' .*3 attempts"):
            hub.download_source("org/x", progress=False)
        with pytest.raises(HfgrowError, match=r"^network problem while trying to push to 'org/x'"):
            hub.push_folder(src, "org/x", token="hf_x")
        assert time.monotonic() - start < 30
        assert sleeps == [*hub.RETRY_DELAYS, *hub.RETRY_DELAYS]  # backed off between the attempts
    finally:
        _http.close_session()


# --------------------------------------------------------------------------------------------------- other inputs


def test_missing_org_name_folder_says_neither_exists(tmp_path, capsys, monkeypatch, hf_offline):
    monkeypatch.chdir(tmp_path)
    refused(run_cli(["stack", "org/name", "out"], capsys), "no local folder org/name", "not (fully) in the local")


def test_malformed_recipes_and_options(src, tmp_path, capsys):
    out = tmp_path / "grown"
    assert run_cli(["stack", src, out, "-q"], capsys)[0] == 0
    recipe = (out / "hfgrow.yaml").read_text()
    for bad, words in (("params: [1, 2]", ["not an hfgrow recipe"]),
                       ("params: {pattern: [1, 2]}", ["pattern", "not a string"]),
                       ("params: {layers: '5'}", ["layers", "not an integer"]),
                       ("source: {name: [1]}", ["not an hfgrow recipe"])):
        key = bad.split(":")[0]
        text = "\n".join(bad if line.startswith(key + ":") else line for line in recipe.splitlines())
        (tmp_path / "r.yaml").write_text(text)
        refused(run_cli(["grow", src, tmp_path / "o", "--recipe", tmp_path / "r.yaml"], capsys), *words)
    (tmp_path / "r.yaml").write_bytes(b"\x00\xff\xfe")
    refused(run_cli(["grow", "--recipe", tmp_path / "r.yaml", tmp_path / "o"], capsys), "cannot read recipe")
    code, _, err = run_cli(["verify", src, src, "--max-tokens", "inf"], capsys)
    assert code == 2 and "not a valid count" in err and "Traceback" not in err
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    refused(run_cli(["grow", src, tmp_path / "o", "--op", "learn", "--factor", "2", "--data", tmp_path / "bad.txt.gz"],
                    capsys), "not gzip-compressed")
    (tmp_path / "fit.jsonl").write_bytes(bytes(range(256)) * 4)
    refused(run_cli(["mix", "fit", tmp_path / "fit.jsonl"], capsys), "fit.jsonl")
    assert not (tmp_path / "o").exists()


def test_folders_handed_to_transformers_are_checked_first(src, tmp_path, capsys):
    # eval, verify and the mixture tokenizer let transformers read the folder: a link out of it is refused first
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to(tmp_path / "secret")
    (tmp_path / "a.txt").write_text("some text to score\n")
    refused(run_cli(["eval", src, "--data", tmp_path / "a.txt"], capsys), "tokenizer.json", "outside")
    refused(run_cli(["verify", src, src], capsys), "tokenizer.json", "outside")
    refused(run_cli(["mix", "entropy", "--data", f"a={tmp_path / 'a.txt'}", "--data", f"b={tmp_path / 'a.txt'}",
                     "--tokenizer", src, "--out", tmp_path / "m.json"], capsys), "tokenizer.json", "outside")
