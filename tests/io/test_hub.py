"""Hub integration: the real huggingface_hub client over real HTTP against tests/hub_server.py."""

from __future__ import annotations

import json
import shutil
import time
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download

from hfgrow.errors import HfgrowError
from hfgrow.io.hub import PUSH_IGNORE_PATTERNS, download_source, looks_like_repo_id, push_folder
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.cli.main import main
from helpers.hub_server import DEFAULT_GITATTRIBUTES, HubServer

CARD = """\
---
license: apache-2.0
base_model: org/small
library_name: transformers
pipeline_tag: text-generation
tags:
- hfgrow
- gstack
---

# tiny-grown

A 2-layer Llama grown with hfgrow.
"""

# Local junk that must never reach the Hub.
JUNK = {
    ".tiny.hfgrow-tmp-123/model.safetensors": b"half-written",
    "model-00001-of-00002.safetensors.partial": b"partial",
    ".cache/huggingface/upload/model.safetensors.lock": b"lock",
    ".cache/other/state.json": b"{}",
    "checkpoint-10/optimizer.pt": b"optimizer state",
    "sub/x.incomplete": b"?",
}


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip huggingface_hub's retry back-off sleeps (1-8 s each) without touching time.sleep globally."""
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    fake = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    fake.sleep = lambda seconds: None
    monkeypatch.setattr(file_download, "time", fake)
    monkeypatch.setattr(_http, "time", fake)
    monkeypatch.setattr("hfgrow.io.hub._sleep", lambda seconds: None)  # hfgrow's own retries


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (safetensors + tokenizer + generation config) with a model card."""
    folder = tmp_path_factory.mktemp("tiny")
    make_model(folder, tiny_llama_config(layers=2, hidden_size=32, intermediate_size=64, vocab_size=128))
    (folder / "README.md").write_text(CARD)
    return folder


@pytest.fixture
def model_dir(tiny_model: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny model folder, with local temporary/partial junk in it."""
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model, folder)
    for rel, data in JUNK.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def pushable(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in files_under(folder).items() if k not in JUNK}


# --------------------------------------------------------------------------------------------------- push


def test_push_every_file_byte_for_byte_with_card(hub_server: HubServer, model_dir: Path) -> None:
    local = pushable(model_dir)
    before = files_under(model_dir)
    url = push_folder(model_dir, "org/tiny", commit_message="first")

    head = hub_server.head("org/tiny")
    assert url == f"{hub_server.endpoint}/org/tiny/commit/{head}"
    assert hub_server.list_files("org/tiny") == sorted([*local, ".gitattributes"])
    for rel, data in local.items():
        assert hub_server.file_bytes("org/tiny", rel) == data, rel
    assert hub_server.file_bytes("org/tiny", ".gitattributes") == DEFAULT_GITATTRIBUTES.encode()
    assert hub_server.file_entry("org/tiny", "model.safetensors").lfs  # weights went through LFS
    assert not hub_server.file_entry("org/tiny", "config.json").lfs
    assert hub_server.stats["lfs_uploads"] == 1 and hub_server.stats["commits"] == 1
    assert hub_server.repos["org/tiny"].commits[head].title == "first"
    assert files_under(model_dir) == before  # the local folder is only read

    card = ModelCard.load("org/tiny")  # README.md through /resolve, as the Hub renders it
    assert card.content == CARD
    assert card.data.license == "apache-2.0" and card.data.base_model == "org/small"
    assert card.data.tags == ["hfgrow", "gstack"]
    info = HfApi().model_info("org/tiny")
    assert info.card_data.license == "apache-2.0" and not info.private


def test_push_twice_uploads_nothing_new(hub_server: HubServer, model_dir: Path) -> None:
    first = push_folder(model_dir, "org/tiny")
    head = hub_server.head("org/tiny")
    hub_server.reset_stats()
    second = push_folder(model_dir, "org/tiny")
    assert second == first
    assert hub_server.head("org/tiny") == head
    assert hub_server.stats["lfs_uploads"] == 0 and hub_server.stats["commits"] == 0
    assert hub_server.stats["lfs_upload_bytes"] == 0

    # one changed file: one commit, and only that file's bytes travel
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace("32", "32 "))
    hub_server.reset_stats()
    push_folder(model_dir, "org/tiny")
    assert hub_server.stats["commits"] == 1 and hub_server.stats["lfs_uploads"] == 0
    assert hub_server.file_bytes("org/tiny", "config.json") == (model_dir / "config.json").read_bytes()


def test_push_with_xet_installed_uses_the_pipelined_upload(
    hub_server: HubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's default path when hf_xet is installed (streamed multi-commit pipeline).

    The test server does not emulate Xet storage, so it asks for every file as a regular (inline) upload.
    """
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    hub_server.force_regular_uploads = True
    local = pushable(model_dir)
    push_folder(model_dir, "org/piped")
    for rel, data in local.items():
        assert hub_server.file_bytes("org/piped", rel) == data, rel
    hub_server.reset_stats()
    push_folder(model_dir, "org/piped")
    assert hub_server.stats["commits"] == 0

    url = push_folder(model_dir / "..", "org/piped", create_pr=True)  # new files -> a PR, main untouched
    assert url == f"{hub_server.endpoint}/org/piped/discussions/1"
    assert "tiny/config.json" in hub_server.list_files("org/piped", "refs/pr/1")
    assert "tiny/config.json" not in hub_server.list_files("org/piped")


def test_push_branch_pr_private(hub_server: HubServer, model_dir: Path) -> None:
    push_folder(model_dir, "org/tiny")
    main_head = hub_server.head("org/tiny")
    (model_dir / "config.json").write_text("{}")

    push_folder(model_dir, "org/tiny", revision="step-2")  # branch created from main
    assert hub_server.head("org/tiny") == main_head
    assert hub_server.file_bytes("org/tiny", "config.json", "step-2") == b"{}"

    url = push_folder(model_dir, "org/tiny", create_pr=True, commit_message="please merge")
    assert url == f"{hub_server.endpoint}/org/tiny/discussions/1"
    assert hub_server.file_bytes("org/tiny", "config.json", "refs/pr/1") == b"{}"
    assert hub_server.head("org/tiny") == main_head

    push_folder(model_dir, "tester/secret", private=True)
    assert hub_server.repos["tester/secret"].private
    with pytest.raises(HfgrowError, match="already exists and is public"):
        push_folder(model_dir, "org/tiny", private=True)
    with pytest.raises(HfgrowError, match="--create-pr"):
        push_folder(model_dir, "org/tiny", create_pr=True, revision="step-2")


def test_push_errors_are_one_clear_sentence(
    hub_server: HubServer, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HfgrowError, match="not a folder"):
        push_folder(tmp_path / "missing", "org/x")
    with pytest.raises(HfgrowError, match="not a Hub model id"):
        push_folder(model_dir, "not a repo")
    junk_only = tmp_path / "junk"
    (junk_only / "checkpoint-1").mkdir(parents=True)
    (junk_only / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(HfgrowError, match="nothing to push"):
        push_folder(junk_only, "org/x")

    with pytest.raises(HfgrowError, match="write access to the 'someone' namespace"):
        push_folder(model_dir, "someone/theirs")  # 403: not our namespace
    reader = hub_server.add_user("reader", orgs=["org"], role="read")
    with pytest.raises(HfgrowError, match="HTTP 403"):
        push_folder(model_dir, "org/x", token=reader)
    with pytest.raises(HfgrowError, match="rejected your token"):
        push_folder(model_dir, "org/x", token="hf_not_a_real_token")

    bad_card = tmp_path / "bad"
    bad_card.mkdir()
    (bad_card / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(HfgrowError, match="YAML metadata of README.md"):
        push_folder(bad_card, "org/badcard")

    monkeypatch.delenv("HF_TOKEN")
    hub_server.reset_stats()
    with pytest.raises(HfgrowError, match="needs a token with write access"):
        push_folder(model_dir, "org/x")
    assert hub_server.stats["requests"] == 0  # refused before any request


def test_push_network_down_mid_upload_keeps_local_and_resumes(
    hub_server: HubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_sleep(monkeypatch)
    before = files_under(model_dir)
    hub_server.create_repo("org/tiny", author="tester")
    initial = hub_server.head("org/tiny")
    fault = hub_server.add_fault("PUT", r"^/lfs-upload/", "drop", times=-1)
    with pytest.raises(HfgrowError, match=r"network problem while trying to push to 'org/tiny'.*re-run") as info:
        push_folder(model_dir, "org/tiny")
    assert "\n" not in str(info.value)
    assert fault.hits >= 2  # huggingface_hub retried before giving up
    assert hub_server.head("org/tiny") == initial  # nothing half-committed
    assert files_under(model_dir) == before

    fault.times = 0
    hub_server.add_fault("POST", r"/commit/", "status", status=500, times=1)
    with pytest.raises(HfgrowError, match=r"server error \(HTTP 500\)"):
        push_folder(model_dir, "org/tiny")
    hub_server.reset_stats()
    push_folder(model_dir, "org/tiny")  # the LFS object arrived last time: only the commit remains
    assert hub_server.stats["lfs_uploads"] == 0 and hub_server.stats["commits"] == 1
    assert hub_server.file_bytes("org/tiny", "model.safetensors") == before["model.safetensors"]


def test_cli_push_prints_the_url(hub_server: HubServer, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = run_cli(["push", str(model_dir), "org/cli", "--private", "-m", "from the CLI"])
    out, err = capsys.readouterr()
    head = hub_server.head("org/cli")
    assert code == 0
    assert out.strip().splitlines()[-1] == f"{hub_server.endpoint}/org/cli/commit/{head}"
    assert hub_server.repos["org/cli"].private
    assert hub_server.repos["org/cli"].commits[head].title == "from the CLI"

    code = run_cli(["push", str(model_dir), "someone/else"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err

    code = run_cli(["push", "--help"])
    out, _ = capsys.readouterr()
    assert code == 0 and "hfgrow push out/big me/tinyllama-x4" in out


def test_ignore_patterns_cover_hfgrow_temporaries() -> None:
    from huggingface_hub.utils import filter_repo_objects

    paths = [*JUNK, "model.safetensors", "sub/config.json"]
    kept = list(filter_repo_objects(paths, ignore_patterns=list(PUSH_IGNORE_PATTERNS)))
    assert kept == ["model.safetensors", "sub/config.json"]


# --------------------------------------------------------------------------------------------------- pull


def test_download_equals_pushed_files_and_second_run_downloads_nothing(
    hub_server: HubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_folder(model_dir, "org/tiny")
    head = hub_server.head("org/tiny")
    hub_server.reset_stats()
    folder, sha = download_source("org/tiny", progress=False)
    assert sha == head and folder.name == head
    assert Path(constants.HF_HUB_CACHE) in folder.parents  # the normal HF cache
    assert files_under(folder) == pushable(model_dir)
    downloads = hub_server.stats["downloads"]
    assert downloads == len(pushable(model_dir))
    # LFS bytes came from the CDN, which never saw the token
    cdn = [entry for entry in hub_server.log if entry["role"] == "cdn"]
    assert cdn and not any(entry["auth"] for entry in cdn)

    hub_server.reset_stats()
    again, sha2 = download_source("org/tiny", progress=False)
    assert (again, sha2) == (folder, sha)
    assert hub_server.stats["downloads"] == 0 and hub_server.stats["requests"] == 1  # just the revision lookup

    # a repo of which another tool cached only the config
    hub_server.create_repo("org/partial", files={"config.json": b"{}", "model.safetensors": b"\0weights"})
    hf_hub_download("org/partial", "config.json")

    # offline: from the cache, no request at all, by branch or by sha
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_server.reset_stats()
    assert download_source("org/tiny", progress=False) == (folder, sha)
    assert download_source("org/tiny", revision=sha, progress=False) == (folder, sha)
    assert hub_server.stats["requests"] == 0
    with pytest.raises(HfgrowError, match=r"not \(fully\) in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        download_source("org/never-downloaded", progress=False)
    with pytest.raises(HfgrowError, match="HF_HUB_OFFLINE"):
        download_source("org/tiny", revision="other-branch", progress=False)
    with pytest.raises(HfgrowError, match=r"'org/partial' is not \(fully\) in the local Hugging Face cache"):
        download_source("org/partial", progress=False)


def test_download_falls_back_on_cache_when_hub_unreachable(
    hub_server: HubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_sleep(monkeypatch)
    push_folder(model_dir, "org/tiny")
    folder, sha = download_source("org/tiny", progress=False)
    dead = HubServer().start()
    endpoint = dead.endpoint
    dead.stop()  # nothing listens there any more
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    assert download_source("org/tiny", progress=False) == (folder, sha)
    with pytest.raises(HfgrowError, match="network problem while trying to download 'org/other'"):
        download_source("org/other", progress=False)


def test_revision_pinning(hub_server: HubServer, model_dir: Path) -> None:
    push_folder(model_dir, "org/tiny")
    first = hub_server.head("org/tiny")
    old = pushable(model_dir)
    (model_dir / "config.json").write_text('{"changed": true}')
    (model_dir / "model.safetensors").write_bytes(old["model.safetensors"][:-4] + b"\0\0\0\0")
    push_folder(model_dir, "org/tiny")
    second = hub_server.head("org/tiny")
    assert second != first
    hub_server.repos["org/tiny"].tags["v1"] = first

    folder, sha = download_source("org/tiny", revision=first, progress=False)
    assert sha == first and files_under(folder) == old
    assert download_source("org/tiny", revision="v1", progress=False) == (folder, first)
    assert download_source("org/tiny", revision=first[:10], progress=False) == (folder, first)
    latest, sha = download_source("org/tiny", progress=False)
    assert sha == second and files_under(latest) == pushable(model_dir)


def _bin_bytes(tiny_model: Path) -> bytes:
    import io

    from safetensors.torch import load_file

    buffer = io.BytesIO()
    torch.save(load_file(tiny_model / "model.safetensors"), buffer)
    return buffer.getvalue()


SHARD_INDEX = "model.safetensors.index.json"


@pytest.mark.parametrize(
    "layout, expected_weights",
    [
        ("both", ["model.safetensors"]),
        ("bin-only", ["pytorch_model.bin"]),
        ("sharded", ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", SHARD_INDEX]),
        ("adapter", ["adapter_config.json", "adapter_model.safetensors"]),
    ],
)
def test_only_one_weight_format_is_downloaded(
    hub_server: HubServer, tiny_model: Path, layout: str, expected_weights: list[str]
) -> None:
    names = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")
    small = {name: (tiny_model / name).read_bytes() for name in names}
    st = (tiny_model / "model.safetensors").read_bytes()
    extra = {
        "tf_model.h5": b"\0tf",
        "flax_model.msgpack": b"\0flax",
        "onnx/model.onnx": b"\0onnx",
        "notes/train.log": b"log",
    }
    if layout == "both":
        weights = {"model.safetensors": st, "pytorch_model.bin": _bin_bytes(tiny_model)}
    elif layout == "bin-only":
        weights = {"pytorch_model.bin": _bin_bytes(tiny_model), "training_args.bin": b"\0args"}
    elif layout == "sharded":
        shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
        weights = {
            SHARD_INDEX: json.dumps({"metadata": {}, "weight_map": shards}).encode(),
            "model-00001-of-00002.safetensors": b"\0one",
            "model-00002-of-00002.safetensors": b"\0two",
            "consolidated.safetensors": b"\0mistral format",
        }
    else:
        weights = {
            "adapter_config.json": json.dumps({"base_model_name_or_path": "org/base", "peft_type": "LORA"}).encode(),
            "adapter_model.safetensors": b"\0lora",
            "adapter_model.bin": b"\0lora-bin",
        }
        small.pop("config.json")
    hub_server.create_repo("org/formats", files={**small, **weights, **extra})
    folder, _ = download_source("org/formats", progress=False)
    assert sorted(files_under(folder)) == sorted([*small, *[w for w in expected_weights if w not in small]])
    resolved = [e["path"].split("/resolve/", 1)[1] for e in hub_server.log if "/resolve/" in e["path"]]
    downloaded = {path.split("/", 1)[1] for path in resolved}
    assert downloaded == set(files_under(folder))  # nothing else was even asked for


def test_repo_without_supported_weights(hub_server: HubServer) -> None:
    hub_server.create_repo("org/gguf", files={"config.json": b"{}", "model-q4.gguf": b"\0gguf"})
    with pytest.raises(HfgrowError, match=r"no weights hfgrow can read \(it has model-q4.gguf\)"):
        download_source("org/gguf", progress=False)
    hub_server.create_repo("org/broken", files={SHARD_INDEX: b'{"weight_map": {"a": "gone.safetensors"}}'})
    with pytest.raises(HfgrowError, match="lists gone.safetensors"):
        download_source("org/broken", progress=False)


def test_private_gated_missing_and_bad_token(
    hub_server: HubServer, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"config.json": b"{}", "model.safetensors": (tiny_model / "model.safetensors").read_bytes()}
    hub_server.create_repo("org/secret", private=True, files=files)
    hub_server.create_repo("acme/gated", gated="manual", files=files)

    folder, _ = download_source("org/secret", progress=False)  # HF_TOKEN of an org member
    assert files_under(folder) == files

    with pytest.raises(HfgrowError, match="not found, or it is private and no token was sent.*HF_TOKEN"):
        download_source("org/secret", token=False, progress=False)
    outsider = hub_server.add_user("outsider")
    with pytest.raises(HfgrowError, match="not found or your token cannot access it"):
        download_source("org/secret", token=outsider, progress=False)
    with pytest.raises(HfgrowError, match="rejected your token"):
        download_source("org/secret", token="hf_wrong", progress=False)
    with pytest.raises(HfgrowError, match="'acme/gated' is gated: request access at http://127.0.0.1"):
        download_source("acme/gated", progress=False)
    with pytest.raises(HfgrowError, match="is gated"):
        download_source("acme/gated", token=False, progress=False)
    hub_server.repos["acme/gated"].granted.add("tester")
    assert files_under(download_source("acme/gated", progress=False)[0]) == files

    with pytest.raises(HfgrowError, match="'org/nope' was not found"):
        download_source("org/nope", progress=False)
    with pytest.raises(HfgrowError, match="revision 'no-such-branch' does not exist in Hub repo 'org/secret'"):
        download_source("org/secret", revision="no-such-branch", progress=False)
    with pytest.raises(HfgrowError, match="does not exist"):
        download_source("org/secret", revision="0" * 40, progress=False)
    with pytest.raises(HfgrowError, match="not a Hub model id"):
        download_source("./local/path", progress=False)

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfgrowError, match="private and no token was sent"):
        download_source("org/secret", progress=False)


def test_network_down_mid_download(hub_server: HubServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_sleep(monkeypatch)
    push_folder(model_dir, "org/tiny")
    expected = pushable(model_dir)

    # the connection drops once in the middle of the weights: huggingface_hub retries (with a Range request once
    # it has received a full 10 MB chunk; this file is smaller, so it starts over)
    resume = hub_server.add_fault("GET", r"^/lfs-download/", "truncate", times=1)
    folder, _ = download_source("org/tiny", progress=False)
    assert files_under(folder) == expected
    gets = [e for e in hub_server.log if e["path"].startswith("/lfs-download/")]
    assert resume.hits == 1 and len(gets) == 2

    # it keeps dropping: one clear error, the cache keeps only complete files, the next run finishes the job
    hub_server.create_repo("org/flaky", files=expected)
    fault = hub_server.add_fault("GET", r"^/lfs-download/", "truncate", times=-1)
    with pytest.raises(HfgrowError, match=r"network problem while trying to download 'org/flaky'.*re-run to resume"):
        download_source("org/flaky", progress=False)
    cache = Path(constants.HF_HUB_CACHE) / "models--org--flaky"
    assert not list(cache.rglob("*.incomplete"))
    fault.times = 0
    hub_server.reset_stats()
    folder, _ = download_source("org/flaky", progress=False)
    assert files_under(folder) == expected
    assert hub_server.stats["downloads"] == 1  # only the weights were still missing


def test_looks_like_repo_id() -> None:
    good = ["TinyLlama/TinyLlama_v1.1", "org/name", "a/b", "Qwen/Qwen3-0.6B", "user_1/model.v2"]
    bad = ["gpt2", "./small", "/abs/path", "org/", "/name", "a/b/c", "org/na--me", "org/..", "org/x.git",
           "org/-x", "~/models", "org/name ", "C:\\models\\x", ""]
    assert all(looks_like_repo_id(x) for x in good)
    assert not any(looks_like_repo_id(x) for x in bad)


# --------------------------------------------------------------------------------------------------- end to end


def test_stack_pulls_a_pushed_grown_model_and_equals_a_local_run(
    hub_server: HubServer, tiny_model: Path, tmp_path: Path
) -> None:
    import hfgrow
    from hfgrow.io.checkpoint import Checkpoint

    grown = hfgrow.stack(str(tiny_model), tmp_path / "grown", factor=2, quiet=True, push_to="org/grown")
    pushed = files_under(grown.out)
    for rel, data in pushed.items():
        assert hub_server.file_bytes("org/grown", rel) == data, rel
    head = hub_server.head("org/grown")

    from_hub = hfgrow.stack("org/grown", tmp_path / "from-hub", factor=2, quiet=True)
    local = hfgrow.stack(str(grown.out), tmp_path / "from-local", factor=2, quiet=True)
    assert from_hub.source.repo_id == "org/grown" and from_hub.source.commit == head

    def tensors(folder: Path) -> dict[str, torch.Tensor]:
        ckpt = Checkpoint.open(folder)
        try:
            return {name: ckpt.load(name).clone() for name in ckpt.tensors}
        finally:
            ckpt.close()

    hub_t, local_t = tensors(from_hub.out), tensors(local.out)
    assert hub_t.keys() == local_t.keys()
    assert all(torch.equal(hub_t[k], local_t[k]) for k in hub_t)
    hub_files, local_files = files_under(from_hub.out), files_under(local.out)
    assert hub_files.keys() == local_files.keys()
    for rel in hub_files:
        if rel.endswith((".safetensors", ".json")) or rel.startswith("tokenizer"):
            assert hub_files[rel] == local_files[rel], rel
    assert head in from_hub.command and "org/grown" in hub_files["README.md"].decode()
