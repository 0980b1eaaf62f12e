"""Every command a card or recipe prints runs (issue 25), and cards and run files name no path of this machine.

Tiny models, offline. The folders: a Gstack-grown folder, a LiGO-grown folder (its --data given as an absolute
path), a trained final/ of a run that grew from random initialisation, a trained final/ of a run on a token folder
of two domains, and an `hfgrow export` of that run's checkpoint. Every command is taken from the files as written
(fenced ``bash`` blocks, inline `hfgrow ...` spans, the recipe's ``command_line`` and header) and run with the
`hfgrow` console script in a fresh folder that holds the inputs the card names (and not its output), beside them
as the card says; the only flags added are the ones the card itself prints for a quick check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfgrow.eval.tiny import make_model, make_tokenizer, python_docs_corpus, tiny_llama_config
from helpers.launch import ROOT, launch_continue

INPUTS = ("small", "base", "grown", "ligo", "tok", "corpus.jsonl", "corpus.txt", "web.jsonl", "code.jsonl")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    cwd = os.getcwd()
    os.chdir(root)  # the commands are typed here, as a user would: the cards name things relative to it
    try:
        docs = python_docs_corpus(max_chars=40_000)
        text = "\n".join(docs)
        for name, part in (("corpus.jsonl", docs), ("web.jsonl", docs[::2]), ("code.jsonl", docs[1::2])):
            Path(name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
        Path("corpus.txt").write_text(text)
        tokenizer = make_tokenizer(root / "small", text=text, vocab_size=300)
        make_model(root / "small", tiny_llama_config(layers=2, vocab_size=len(tokenizer), tie_word_embeddings=True),
                   tokenizer=False)
        (root / "base").mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(root / "small" / name, root / "base" / name)
        for argv in (["stack", "small", "grown", "--factor", "2"],
                     ["grow", "small", "ligo", "--op", "learn", "--factor", "2", "--data", str(root / "corpus.txt"),
                      "--learn-steps", "2", "--seq-len", "32", "--batch-size", "2"],
                     ["tokenize", "tok", "--data", "web=web.jsonl", "--data", "code=code.jsonl", "--tokenizer",
                      "grown"]):
            assert cli(argv) == 0, argv
        common = ["--seq-len", "32", "--batch-size", "2", "--eval-sequences", "2"]
        launch_continue(["--model", str(root / "grown"), "--data", str(root / "tok"), "--output-dir",
                         str(root / "run-tok"), "--max-steps", "2", *common])
        launch_continue(["--model", str(root / "base"), "--data", f"web={root / 'corpus.jsonl'}", "--output-dir",
                         str(root / "run-grow"), "--max-steps", "4", "--grow", "stack:2@128", *common])
        assert cli(["export", "run-tok/checkpoint-2", "exported"]) == 0
    finally:
        os.chdir(cwd)
    return root


def cli(argv: list[str]) -> int:
    """`hfgrow ARGV` in process; its exit code."""
    from click.testing import CliRunner

    from hfgrow.cli.main import _register, cli as group

    _register()
    result = CliRunner().invoke(group, argv)
    assert result.exit_code == 0, f"{argv}: {result.output[-2000:]}"
    return result.exit_code


CARDS = ("grown", "ligo", "run-grow/final", "run-tok/final", "exported")


def commands(root: Path) -> list[tuple[str, Path, list[str]]]:
    """(command, the folder it is printed in, extra flags the card prints for a quick run) of every card and
    recipe."""
    out = []
    for name in CARDS:
        folder = root / name
        card = (folder / "README.md").read_text()
        quick = re.findall(r"Adding `([^`]+)` checks", card)
        for block in re.findall(r"```bash\n(.*?)```", card, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip():
                    out.append((line.strip(), folder, quick[0].split() if quick and "--max-tokens" in line else []))
        # inline commands (with arguments; "`hfgrow tokenize`" alone names a command, it is not one to run)
        out += [(span, folder, []) for span in re.findall(r"`(hfgrow [a-z]+ [^`]+)`", card)]
        if (folder / "hfgrow.yaml").is_file():
            recipe_text = (folder / "hfgrow.yaml").read_text()
            out.append((yaml.safe_load(recipe_text)["command_line"], folder, []))
            out += [(span, folder, []) for span in re.findall(r"`(hfgrow [a-z]+ [^`]+)`", recipe_text.splitlines()[0])]
    seen, unique = set(), []
    for command, folder, extra in out:
        if command not in seen:
            seen.add(command)
            unique.append((command, folder, extra))
    return unique


def test_cards_and_run_files_name_no_local_path(folders):
    root = str(folders)
    for name in CARDS:
        for path in (folders / name).glob("*"):
            if path.suffix in (".md", ".yaml", ".json") and path.name not in ("tokenizer.json",):
                assert root not in path.read_text(), path
    for run in ("run-tok", "run-grow"):
        for path in [folders / run / "run.json", *(folders / run).glob("checkpoint-*/hfgrow_state.json")]:
            text = path.read_text()
            assert root not in text and '"/' not in text, path
        assert json.loads((folders / run / "run.json").read_text())["model_spec"].startswith("../")


def test_what_the_cards_say(folders):
    grow_card = (folders / "run-grow" / "final" / "README.md").read_text()
    assert "was grown from `stage-0`" not in grow_card and "continued pre-training" not in grow_card
    assert "pre-trained from random initialisation with hfgrow for 4 steps" in grow_card
    assert "the run grew\nit from 2 to 4 layers with `stack` ×2 after step 2 (128 tokens)" in grow_card
    assert "base_model:" not in grow_card and "- pretraining" in grow_card
    tok_card = (folders / "run-tok" / "final" / "README.md").read_text()
    assert " --data tok " in tok_card and "web=tok" not in tok_card and "--grow-optimizer" not in tok_card
    assert "after\n2 steps (128 tokens) of continued pre-training" in tok_card
    assert "Growth command: `hfgrow stack small grown --pattern '0-1*2'`" in tok_card
    ligo = yaml.safe_load((folders / "ligo" / "hfgrow.yaml").read_text())
    assert ligo["params"]["data"] == ["corpus.txt"] and " --data corpus.txt " in ligo["command_line"]


def test_every_printed_command_runs(folders, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    found = commands(folders)
    kinds = {tuple(shlex.split(c)[:2]) for c, _, _ in found}
    assert {("hfgrow", "stack"), ("hfgrow", "grow"), ("hfgrow", "train")} <= kinds, found
    for k, (command, folder, extra) in enumerate(found):
        argv = shlex.split(command)
        assert argv[0] == "hfgrow", command
        work = tmp_path / f"c{k}"
        work.mkdir()
        # the command's output must not exist yet: `hfgrow stack SRC OUT` / `hfgrow grow SRC OUT`
        outputs = {argv[3]} if argv[1] in ("stack", "grow") and not argv[2].startswith("-") else set()
        for name in INPUTS:
            if name not in outputs:
                (work / name).symlink_to(folders / name)
        cwd = work
        if "--recipe" in argv:  # "replay the recipe shipped in this folder": typed inside a copy of the folder
            cwd = work / "copy"
            shutil.copytree(folder, cwd)
        proc = subprocess.run(argv + extra, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command} (from {folder.name}) exited {proc.returncode}:\n{proc.stderr[-2000:]}"
