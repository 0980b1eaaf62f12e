"""One console (issue 22): the `hfgrow` logger and the one progress bar, rank-0 aware; --quiet/-v in every command."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import click
import pytest
from helpers.cli import run_cli

from hfgrow.cli import options
from hfgrow.console import configure, log, progress, quiet


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bars into it."""

    def isatty(self) -> bool:
        return True


def said(capsys) -> str:
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("error: e")
    return capsys.readouterr().err


def test_each_verbosity_shows_its_levels_with_hfgrows_prefixes(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    configure(0)
    assert said(capsys) == "i\nwarning: w\nerror: e\n" and not quiet()
    configure(-1)  # --quiet
    assert said(capsys) == "warning: w\nerror: e\n" and quiet()
    configure(1)  # -v
    assert said(capsys) == "debug: d\ni\nwarning: w\nerror: e\n" and not quiet()
    log.warning("note: an old name", extra={"prefix": ""})  # a line in its own words, at warning level
    assert capsys.readouterr().err == "note: an old name\n"
    assert capsys.readouterr().out == ""  # status never goes to stdout


def test_a_process_that_is_not_the_main_one_shows_errors_only_and_no_bar(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # what torchrun and accelerate set in the second process
    configure(1)
    assert said(capsys) == "error: e\n" and quiet()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress(range(3), desc="train")
    assert bar.disable and list(bar) == [0, 1, 2] and sys.stderr.getvalue() == ""
    monkeypatch.undo()
    configure(0, main_process=True)  # the caller knows better than RANK
    assert said(capsys) == "i\nwarning: w\nerror: e\n"
    monkeypatch.setenv("RANK", "0")
    configure()
    assert said(capsys) == "i\nwarning: w\nerror: e\n"


def test_configure_keeps_one_handler_and_leaves_the_root_logger_alone(capsys):
    root = list(logging.getLogger().handlers)
    for verbosity in (0, -1, 1, 0):
        configure(verbosity)
    ours = [h for h in log.handlers if type(h).__module__ == "hfgrow.console"]  # pytest adds its own beside it
    assert len(ours) == 1 and not log.propagate
    assert logging.getLogger().handlers == root
    log.info("once")
    assert capsys.readouterr().err == "once\n"


def test_the_bar_shows_on_a_terminal_only_and_never_when_quiet(monkeypatch):
    configure(0, main_process=True)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress(total=10, desc="writing", unit="B") as bar:
        shown = not bar.disable  # (closing a bar sets disable)
        bar.update(4)
        log.info("a line above the bar")
    assert shown and "writing" in terminal.getvalue() and "a line above the bar\n" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: no bar (tqdm's disable=None)
    assert progress(total=10, desc="writing").disable
    configure(-1)
    monkeypatch.setattr(sys, "stderr", terminal)
    before = terminal.getvalue()
    with progress(total=10, desc="hidden") as bar:
        hidden = bar.disable
        bar.update(10)
        bar.set_postfix(loss="1.0")
    assert hidden and terminal.getvalue() == before
    configure(0)
    assert progress(total=1, desc="x", disable=True).disable  # a caller silent on its own account


# ------------------------------------------------------------------------------------------------ the commands


def _commands() -> list[tuple[list[str], click.Command]]:
    """Every command `hfgrow` has, as its words on the command line (sub-commands of groups included)."""
    from hfgrow.cli.main import _register, cli

    _register()
    found = []

    def walk(words: list[str], command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk([*words, name], sub)
        else:
            found.append((words, command))

    for name, command in cli.commands.items():
        walk([name], command)
    return found


def test_every_command_takes_the_shared_quiet_and_verbose():
    commands = _commands()
    assert len(commands) >= 15 and ["mix", "fit"] in [words for words, _ in commands]
    for words, command in commands:
        flags = {param.name: param for param in command.params if isinstance(param, click.Option)}
        for name, short in (("quiet", "-q"), ("verbose", "-v")):
            assert name in flags, f"hfgrow {' '.join(words)} has no --{name}: add @console_options"
            assert flags[name].opts == [f"--{name}", short] and flags[name].callback is options._console_option, words


@pytest.mark.parametrize("flag", ["-q", "-v", "--quiet", "--verbose"])
def test_every_command_accepts_them(flag, capsys):
    for words, _ in _commands():
        code, out, err = run_cli([*words, flag, "--help"], capsys)
        assert code == 0 and "Usage:" in out, (words, err)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    from hfgrow.eval.tiny import make_model, tiny_llama_config

    folder = tmp_path_factory.mktemp("console") / "small"
    make_model(folder, tiny_llama_config(layers=2, hidden_size=32, intermediate_size=64, vocab_size=128),
               tokenizer=False)
    return folder


def test_quiet_silences_a_commands_status_and_verbose_adds_debug_lines(small, tmp_path, capsys):
    code, out, err = run_cli(["stack", small, tmp_path / "plain", "--factor", "2"], capsys)
    assert code == 0 and f"tensors to {tmp_path / 'plain'} ...\n" in err and "debug: " not in err
    assert "num_hidden_layers = 4" in out  # the summary: the command's output, on stdout
    code, out, err = run_cli(["stack", small, tmp_path / "quiet", "--factor", "2", "-q"], capsys)
    assert (code, out, err) == (0, "", "")
    code, out, err = run_cli(["stack", small, tmp_path / "verbose", "--factor", "2", "-v"], capsys)
    assert code == 0 and f"debug: {small}: the local folder {small.resolve()}\n" in err and "tensors to" in err
    # a warning is shown with --quiet too, in the words hfgrow always used
    code, out, err = run_cli(["stack", small, tmp_path / "drops", "--pattern", "0*2", "-q"], capsys)
    assert (code, out) == (0, "") and err == ("warning: the layer map leaves out source layer 1 (1 of 2); the output "
                                              "has 2 layers\n")
    code, _, err = run_cli(["stack", small, tmp_path / "both", "-q", "-v"], capsys)
    assert code == 2 and "give --quiet or --verbose, not both." in err and not (tmp_path / "both").exists()


def test_train_passes_quiet_and_verbose_to_the_training_processes(small, monkeypatch, capsys):
    from hfgrow.train import launch
    from hfgrow.train.launch import Machine

    launched: list[list[str]] = []
    monkeypatch.setattr(Machine, "probe", classmethod(lambda cls: Machine(gpus=0, cpu_cores=2, memory=None)))
    monkeypatch.setattr(launch, "run_launcher", lambda command: launched.append(command) or 0)
    args = ["--model", str(small), "--data", str(small / "config.json"), "--output-dir", str(small.parent / "run")]
    code, _, err = run_cli(["train", "--skip-checks", *args], capsys)
    assert code == 0 and launched[-1][-len(args):] == args and err.splitlines()[0].endswith(" ".join(args))
    code, _, err = run_cli(["train", "--skip-checks", "-q", *args], capsys)
    assert code == 0 and launched[-1][-len(args) - 1:] == [*args, "--quiet"] and err == ""
    code, _, err = run_cli(["train", "--skip-checks", *args, "--verbose"], capsys)
    assert code == 0 and launched[-1][-len(args) - 1:] == [*args, "--verbose"] and "debug: machine: " in err
