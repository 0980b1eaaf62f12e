"""Run the real `hfgrow` command in-process from tests."""

from __future__ import annotations

from hfgrow.cli import main as cli_main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run `hfgrow ARGV`; return (exit code, stdout, stderr)."""
    code = 0
    try:
        cli_main.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
