"""`hfgrow push`: upload an output folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.options import console_options


@click.command("push")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.argument("repo_id", metavar="ORG/NAME")
@click.option("--private", is_flag=True, help="Create the repo private (an existing public repo is refused).")
@click.option("--revision", metavar="BRANCH", default=None, help="Branch to push to; created from main if missing.")
@click.option("--create-pr", is_flag=True, help="Open a pull request against main instead of committing to it.")
@click.option(
    "--commit-message", "-m", metavar="M", default=None, help="Commit title (default: 'Upload OUT with hfgrow')."
)
@console_options
def push(
    out: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool, commit_message: str | None
) -> None:
    """Upload folder OUT to the Hub model repo ORG/NAME and print the commit (or pull request) URL.

    The repo is created if needed. README.md is uploaded as is (it is the model card). Temporary, partial, cache
    and checkpoint files are never uploaded. Files identical to the ones on the Hub are skipped, so re-running after
    an interruption resumes, and re-running a finished push uploads nothing. The token comes from HF_TOKEN or
    `hf auth login`; HF_ENDPOINT selects another Hub.

    \b
    Examples:
      hfgrow push out/big me/tinyllama-x4
      hfgrow push out/big my-org/tinyllama-x4 --private -m "Gstack x4 of TinyLlama"
      hfgrow push out/big me/tinyllama-x4 --revision step-2000
      hfgrow push out/big someone/their-model --create-pr
    """
    from hfgrow.io.hub import push_folder

    url = push_folder(
        out, repo_id, private=private, revision=revision, create_pr=create_pr, commit_message=commit_message
    )
    click.echo(url)


COMMANDS = [push]
