"""The `hfgrow` command. Each sub-command lives in its own module under cli/."""

from __future__ import annotations

import sys

import click

from hfgrow.console import log
from hfgrow.errors import HfgrowError

# module name -> command names it defines; imported lazily so `hfgrow --help` stays fast
COMMAND_MODULES = [
    "hfgrow.cli.grow",
    "hfgrow.cli.upcycle",
    "hfgrow.cli.inspect",
    "hfgrow.cli.train",
    "hfgrow.cli.plan",
    "hfgrow.cli.eval",
    "hfgrow.cli.compare",
    "hfgrow.cli.mix",
    "hfgrow.cli.tokenize",
    "hfgrow.cli.hub",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hfgrow")
def cli() -> None:
    """hfgrow: grow Hugging Face causal LMs (Gstack and friends), keep pre-training them, publish them.

    \b
    Examples:
      hfgrow demo                                   # tiny offline end-to-end run
      hfgrow inspect TinyLlama/TinyLlama_v1.1
      hfgrow stack TinyLlama/TinyLlama_v1.1 out/ --factor 4
      hfgrow stack ./small ./big --pattern '0-5*4' --dry-run
    """


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in module.COMMANDS:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    from hfgrow.io.output import Terminated, stop_on_signals

    _register()
    try:
        with stop_on_signals():  # SIGTERM unwinds like Ctrl-C: temporary folders are removed, OUT is as it was
            cli.main(args=argv, prog_name="hfgrow", standalone_mode=False)
    except HfgrowError as exc:  # the exit path: one sentence on stderr (written as given) and the exit code
        log.error(f"error: {exc}")
        sys.exit(1)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Terminated):
            log.error("stopped by SIGTERM; nothing was written to the output folder.")
            sys.exit(143)
        log.error("aborted." if exc.__cause__ is None else "interrupted; nothing was written to the output folder.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            log.error("stopped by SIGTERM; nothing was written to the output folder.")
            sys.exit(143)
        log.error("interrupted; nothing was written to the output folder.")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
