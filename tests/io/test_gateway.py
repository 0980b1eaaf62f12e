"""One way in, one way out (issue 21): the entry points added after the model-folder rules (token folders, export,
resume, recipes, tokenize, mix, training) read and write through the same gateways (hfgrow/io/folder.py,
hfgrow/io/output.py) and inherit their rules.

Every refusal is checked as tests/io/test_untrusted.py checks them: exit status 1, one ``error:`` sentence last, no
traceback, sources and pre-existing outputs byte-identical, nothing from outside in any output.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.hostile import SECRET, no_outside_bytes, refused, tree
from hfgrow.data.specs import parse_specs
from hfgrow.data.tokens import tokenize_to_folder
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.io.tokenizer import load_tokenizer
from hfgrow.train.loop import main as continue_main

WORDS = "the cat sat on a mat while dogs ran far and birds sang over green hills".split()


def documents(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 40)))) for _ in range(n)]


def train_args(model: Path, data: str, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--data", data, "--output-dir", str(out), "--seq-len", "32", "--batch-size", "2",
            "--eval-sequences", "2", "--lr", "1e-3", "--warmup-steps", "1", *[str(e) for e in extra]]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny model, a text corpus, its token folder, and a trained run with one checkpoint (step 2)."""
    root = tmp_path_factory.mktemp("gateway")
    make_model(root / "model", tiny_llama_config(layers=2, hidden_size=32, intermediate_size=64, vocab_size=256))
    (root / "data.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(300, 1)))
    tokenize_to_folder(parse_specs([f"web={root / 'data.jsonl'}"]), load_tokenizer(root / "model"), root / "tok",
                       shard_chars=4000)
    assert continue_main(train_args(root / "model", f"web={root / 'data.jsonl'}", root / "run", "--max-steps", "2",
                                    "--save-steps", "2", "--no-export")) == 0
    return root


@pytest.fixture
def work(world: Path, tmp_path: Path) -> Path:
    """A scratch copy of the world in tmp_path/work (tmp_path/secret holds a secret outside it)."""
    shutil.copytree(world, tmp_path / "work", symlinks=True)
    (tmp_path / "secret").write_bytes(SECRET)
    return tmp_path / "work"








def train_refused(argv: list[str], capsys, *words: str) -> str:
    code = continue_main(argv)
    return refused((code, "", capsys.readouterr().err), *words)


def entropy(work: Path, web: Path | str) -> list:
    """`hfgrow mix entropy` of two domains: ``web`` and the text corpus."""
    return ["mix", "entropy", "--data", f"web={web}", "--data", f"text={work / 'data.jsonl'}", "--tokenizer",
            work / "model"]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------ token folders


@pytest.mark.parametrize("how", ["relative", "absolute", "link"])
def test_a_token_index_cannot_name_a_shard_outside_its_folder(work, tmp_path, capsys, how):
    tok = work / "tok"
    shard = tok / "web" / "000000.bin"
    if how == "link":
        (tmp_path / "secret").write_bytes(shard.read_bytes())  # a file that would even pass the size check
        shard.unlink()
        shard.symlink_to(tmp_path / "secret")
    else:
        target = "../../secret" if how == "relative" else str(tmp_path / "secret")
        edit_json(tok / "tokens.json", lambda d: d["domains"]["web"]["shards"][0].update(file=target))
    before = tree(tok)
    words = ("outside the folder",) if how == "link" else ("not a file inside the token folder",)
    train_refused(train_args(work / "model", str(tok), tmp_path / "run", "--max-steps", "2"), capsys, *words)
    refused(run_cli(entropy(work, tok), capsys), *words)
    refused(run_cli(["eval", work / "model", "--data", f"web={tok}"], capsys), *words)
    assert tree(tok) == before and not (tmp_path / "run" / "log.jsonl").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["domains"]["web"]["shards"][0].update(tokens="12"), ("token count", "'12'")),
    (lambda d: d["domains"]["web"].update(shards=-1), ("no list of shards",)),
    (lambda d: d.update(dtype="float64"), ("dtype 'float64'",)),
    (lambda d: d.pop("tokenizer"), ("no tokenizer record",)),
    (lambda d: d["domains"]["web"]["shards"][0].update(tokens=-64), ("-64", "at least 0")),
    (lambda d: d["domains"]["web"].update(tokens=5), ("gives domain 'web' 5 tokens",)),
    (lambda d: d.update(domains=[]), ("lists no domains",)),
])
def test_a_hand_edited_token_index_is_one_sentence(work, tmp_path, capsys, edit, words):
    edit_json(work / "tok" / "tokens.json", edit)
    train_refused(train_args(work / "model", str(work / "tok"), tmp_path / "run", "--max-steps", "2"), capsys, *words)
    refused(run_cli(entropy(work, work / "tok"), capsys), *words)


def test_token_ids_past_the_vocabulary_are_refused(work, tmp_path, capsys):
    index = json.loads((work / "tok" / "tokens.json").read_text())
    shard = work / "tok" / "web" / "000000.bin"
    ids = np.fromfile(shard, dtype=index["dtype"])
    ids[5] = 60000
    ids.tofile(shard)
    # the index still records the true largest id (a lie now): the first window read says it, naming the shard
    argv = train_args(work / "model", str(work / "tok"), tmp_path / "run", "--max-steps", "2")
    train_refused(argv, capsys, "token shard 'web/000000.bin'", "holds id 60,000", "past its tokenizer's")
    # recorded honestly, it is refused before anything is read
    edit_json(work / "tok" / "tokens.json", lambda d: d["domains"]["web"]["shards"][0].update(max_id=60000))
    train_refused(argv, capsys, "holds id 60,000 in domain 'web'", "past the tokenizer's")
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_folder_without_recorded_ids_is_scanned(work, tmp_path, capsys):
    """Token folders written before the largest id was recorded are read once to find it."""
    edit_json(work / "tok" / "tokens.json",
              lambda d: [s.pop("max_id") for s in d["domains"]["web"]["shards"]])
    from hfgrow.data.token_folder import TokenFolder

    folder = TokenFolder(work / "tok")
    shards = [np.fromfile(work / "tok" / s["file"], dtype=folder.index["dtype"])
              for s in folder.index["domains"]["web"]["shards"]]
    assert folder.domain("web").max_id() == max(int(s.max()) for s in shards)
    assert continue_main(train_args(work / "model", str(work / "tok"), tmp_path / "run", "--max-steps", "1",
                                    "--no-export")) == 0


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.update(step=-100), ("step is -100",)),
    (lambda s: s.update(step="2"), ("step is '2'",)),
    (lambda s: s.update(step=3, tokens=3 * s["run"]["tokens_per_step"]), ("step 3 in a folder named checkpoint-2",)),
    (lambda s: s.update(tokens=7), ("7 tokens at step 2",)),
    (lambda s: s["data"]["domains"]["web"].update(taken=-5), ("data position domains.web.taken = -5",)),
    (lambda s: s.update(stage=4), ("stage 4 of a run with",)),
])
def test_an_edited_checkpoint_state_is_refused_before_resuming(work, capsys, edit, words):
    state = work / "run" / "checkpoint-2" / "hfgrow_state.json"
    edit_json(state, edit)
    before = tree(work / "run")
    argv = train_args(work / "model", f"web={work / 'data.jsonl'}", work / "run", "--max-steps", "4", "--resume")
    train_refused(argv, capsys, "checkpoint", "hfgrow_state.json", *words)
    assert tree(work / "run") == before


def test_an_edited_data_buffer_past_the_embedding_is_refused(work, capsys):
    edit_json(work / "run" / "checkpoint-2" / "hfgrow_state.json",
              lambda s: s["data"]["domains"]["web"].update(buffer=[99999] * 64))
    argv = train_args(work / "model", f"web={work / 'data.jsonl'}", work / "run", "--max-steps", "4", "--resume",
                      "--no-export")
    train_refused(argv, capsys, "token id 99,999", "embedding has 256 rows")


def test_a_checkpoint_with_a_link_outside_is_not_resumed(work, tmp_path, capsys):
    weights = work / "run" / "checkpoint-2" / "model.safetensors"
    shutil.copyfile(weights, tmp_path / "secret")
    weights.unlink()
    weights.symlink_to(tmp_path / "secret")
    argv = train_args(work / "model", f"web={work / 'data.jsonl'}", work / "run", "--max-steps", "4", "--resume")
    train_refused(argv, capsys, "model.safetensors", "outside the folder")


# ------------------------------------------------------------------------------------------ export


def test_export_reads_no_weights_linked_outside_the_checkpoint(work, tmp_path, capsys):
    weights = work / "run" / "checkpoint-2" / "model.safetensors"
    shutil.copyfile(weights, tmp_path / "secret")  # real weights: only containment can refuse them
    weights.unlink()
    weights.symlink_to(tmp_path / "secret")
    refused(run_cli(["export", work / "run" / "checkpoint-2", tmp_path / "out"], capsys), "outside the folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["notes", "run", "parent"])
def test_export_overwrite_never_deletes_what_is_not_a_model(work, tmp_path, capsys, target):
    (work / "notes").mkdir()
    (work / "notes" / "ideas.txt").write_text("keep me")
    out = {"notes": work / "notes", "run": work / "run", "parent": work}[target]
    before = tree(work)
    refused(run_cli(["export", work / "run" / "checkpoint-2", out, "--overwrite"], capsys))
    assert tree(work) == before


def test_export_overwrite_replaces_a_model_folder(work, tmp_path, capsys):
    assert run_cli(["export", work / "run" / "checkpoint-2", tmp_path / "out"], capsys)[0] == 0
    (tmp_path / "out" / "stale.txt").write_text("from the first export")
    assert run_cli(["export", work / "run" / "checkpoint-2", tmp_path / "out", "--overwrite"], capsys)[0] == 0
    assert not (tmp_path / "out" / "stale.txt").exists() and (tmp_path / "out" / "config.json").is_file()
    no_outside_bytes(tmp_path / "out")


# ------------------------------------------------------------------------------------------ recipes, tokenizers


def test_a_recipe_names_its_source_by_name_only(work, tmp_path, capsys):
    grown = tmp_path / "grown"
    assert run_cli(["stack", work / "model", grown, "--factor", "2", "-q"], capsys)[0] == 0
    (tmp_path / "other").mkdir()  # what ../other would name, from the recipe's folder
    for name in ["../other", str(tmp_path / "other"), "a/b"]:
        recipe = (grown / "hfgrow.yaml").read_text().replace("name: model", f"name: {json.dumps(name)}")
        (grown / "hfgrow.yaml").write_text(recipe)
        refused(run_cli(["grow", "--recipe", grown / "hfgrow.yaml", tmp_path / "again"], capsys),
                "is a path, not a folder name", "hfgrow grow SRC OUT --recipe")
        (grown / "hfgrow.yaml").write_text(recipe.replace(f"name: {json.dumps(name)}", "name: model"))
    # a 0.1 recipe's absolute source.path is looked up by its last component, beside the grown folder
    shutil.copytree(work / "model", tmp_path / "model")
    recipe = (grown / "hfgrow.yaml").read_text().replace("name: model", "path: /somewhere/else/model")
    (grown / "hfgrow.yaml").write_text(recipe)
    assert run_cli(["grow", "--recipe", grown / "hfgrow.yaml", tmp_path / "again", "-q"], capsys)[0] == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (grown / "model.safetensors").read_bytes()


def test_tokenizer_links_outside_are_refused_by_every_command(work, tmp_path, capsys):
    (tmp_path / "secret").write_bytes((work / "model" / "tokenizer.json").read_bytes())  # a working tokenizer
    (work / "model" / "tokenizer.json").unlink()
    (work / "model" / "tokenizer.json").symlink_to(tmp_path / "secret")
    refused(run_cli(["tokenize", tmp_path / "tok2", "--data", f"web={work / 'data.jsonl'}", "--tokenizer",
                     work / "model"], capsys), "tokenizer.json", "outside the folder")
    refused(run_cli(entropy(work, work / "data.jsonl"), capsys), "outside the folder")
    train_refused(train_args(work / "model", f"web={work / 'data.jsonl'}", tmp_path / "run", "--max-steps", "1"),
                  capsys, "outside the folder")
    assert not (tmp_path / "tok2").exists() and not (tmp_path / "run" / "log.jsonl").exists()


def test_a_model_holding_a_malicious_pickle_is_one_sentence(work, tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    model = tmp_path / "evil"
    shutil.copytree(work / "model", model)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    train_refused(train_args(model, f"web={work / 'data.jsonl'}", tmp_path / "run", "--max-steps", "1"), capsys,
                  "pickled weight file", "nothing of it was run")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------ training options


@pytest.mark.parametrize("extra, words", [
    (["--lr", "nan"], ("--lr must be a finite number",)),
    (["--min-lr", "inf"], ("--min-lr must be a finite number",)),
    (["--beta2", "nan"], ("--beta2 must be at least 0 and below 1",)),
    (["--grow", "stack:1.0000000001@64"], ("turns 2 layers into 2", "must add layers")),
])
def test_training_options_that_cannot_work_are_one_sentence(work, tmp_path, capsys, extra, words):
    argv = train_args(work / "model", f"web={work / 'data.jsonl'}", tmp_path / "run", "--max-steps", "4", *extra)
    train_refused(argv, capsys, *words)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_the_output_dir_may_not_be_the_model_folder(work, capsys):
    before = tree(work / "model")
    for out in (work / "model", work / "model" / "run"):
        train_refused(train_args(work / "model", f"web={work / 'data.jsonl'}", out, "--max-steps", "1"), capsys,
                      "is the model folder")
    assert tree(work / "model") == before


def test_a_bad_json_line_is_found_before_the_first_step(work, tmp_path, capsys):
    data = work / "late.jsonl"
    data.write_text((work / "data.jsonl").read_text() + '{"text": "ok"}\n{"txt": "the 302nd line"}\n')
    train_refused(train_args(work / "model", f"web={data}", tmp_path / "run", "--max-steps", "100"), capsys,
                  f"{data}:302", 'has no "text" field')
    assert not (tmp_path / "run" / "log.jsonl").exists()


# ------------------------------------------------------------------------------------------ mix


def test_mix_fit_of_deeply_nested_json_is_one_sentence(tmp_path, capsys):
    log = tmp_path / "obs.jsonl"
    log.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    refused(run_cli(["mix", "fit", log], capsys), f"{log}:1", "nested too deeply")


def test_mix_outputs_on_a_read_only_file_system_are_one_sentence(work, tmp_path, capsys, monkeypatch):
    import hfgrow.io.output as output

    def read_only(fd):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output.os, "fsync", read_only)
    out = tmp_path / "mix.json"
    refused(run_cli([*entropy(work, work / "tok"), "--out", out], capsys), "the file system is read-only",
            "was left as it was")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "hfgrow-tmp" in p.name]


# ------------------------------------------------------------------------------------------ signals, disk


def test_sigterm_during_a_growth_is_like_ctrl_c(work, tmp_path, capsys, monkeypatch):
    import hfgrow.io.executor as executor

    real = executor.write_shard

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's SIGTERM, while the shard is being written
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "write_shard", terminated)
    code, _, err = run_cli(["stack", work / "model", tmp_path / "big", "--factor", "2", "-q"], capsys)
    assert code == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "stopped by SIGTERM; nothing was written to the output folder."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "work"]  # no OUT, no temporary folder
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the command


def test_killing_hfgrow_train_stops_its_training_processes(work, tmp_path):
    psutil = pytest.importorskip("psutil")
    argv = [sys.executable, "-m", "hfgrow.cli.main", "train", *train_args(
        work / "model", f"web={work / 'data.jsonl'}", tmp_path / "run", "--max-steps", "100000", "--save-steps",
        "100000", "--eval-steps", "100000", "--no-export")]
    proc = subprocess.Popen(argv, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.is_file() and '"type": "train"' in log.read_text()):
        time.sleep(0.5)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the launcher started no process"
    proc.kill()  # SIGKILL: nothing can be passed on
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]


def test_a_small_output_fits_a_small_file_system_and_sizes_are_said_in_their_unit(tmp_path, monkeypatch):
    import hfgrow.io.output as output

    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 0, 50 << 20))
    output.check_free_space(tmp_path, 1_300_000)  # 1.3 MB on a file system with 50 MiB free: room enough
    with pytest.raises(HfgrowError) as info:
        output.check_free_space(tmp_path, 50_000_000)
    assert str(info.value) == (f"not enough disk space at {tmp_path}: the output needs 50 MB (and 5 MB to spare), "
                               "52.4 MB free.")


def test_a_data_folder_is_read_inside_itself_and_its_hidden_folders_are_not_data(work, tmp_path):
    from hfgrow.data.text import list_files

    data = work / "corpus"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("inside")
    (data / ".git").mkdir()
    (data / ".git" / "HEAD.txt").symlink_to(tmp_path / "secret")  # hidden: never read, never refused for
    assert list_files(data) == [data / "sub" / "a.txt"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.txt").write_text("outside")
    (data / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HfgrowError, match="outside the folder"):
        list_files(data)
    (data / "linked").unlink()
    (data / "c.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(HfgrowError, match="c.txt .*outside the folder"):
        list_files(data)
