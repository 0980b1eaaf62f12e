"""`hfgrow train` (continued pre-training through accelerate's launcher), `hfgrow export`, `hfgrow plot`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from hfgrow.errors import HfgrowError

CONTINUE_PY = Path(__file__).resolve().parents[1] / "continue.py"


def _continue_script() -> Path:
    import hfgrow

    for base in [Path(p) for p in hfgrow.__path__]:
        if (base / "continue.py").is_file():
            return base / "continue.py"
    return CONTINUE_PY


def _continue_module():
    import importlib

    return importlib.import_module("hfgrow.train.loop")  # `continue` is a keyword: no plain import


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    short_help="Continued pre-training with accelerate (args go to hfgrow/continue.py).",
)
@click.option("--config-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="accelerate config (see configs/README.md).")
@click.option("--num-processes", type=int, default=None, help="Processes to launch (default: from the config, else 1).")
@click.option("--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]), default=None,
              help="Override the config's mixed precision.")
@click.option("--main-process-port", type=int, default=None, help="Rendezvous port for several processes.")
@click.option("--skip-checks", is_flag=True, help="Do not check the arguments before launching.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(config_file, num_processes, mixed_precision, main_process_port, skip_checks, args) -> None:
    """Continued pre-training: run hfgrow/continue.py through `accelerate launch`.

    \b
    Every other argument goes to continue.py (`hfgrow train -h` lists them all):
      hfgrow train --model grown/ --data web=web.jsonl --output-dir run --max-tokens 1e9
      hfgrow train --config-file configs/ddp.yaml --num-processes 8 --model grown/ ...
      hfgrow train --config-file configs/multi_cpu.yaml --model grown/ ...   # 2 CPU processes
    """
    args = list(args)
    module = _continue_module()
    if "-h" in args or "--help" in args:
        click.echo(click.get_current_context().get_help())
        click.echo("\ncontinue.py options:\n")
        click.echo(module.build_parser().format_help())
        return
    parsed = module.build_parser().parse_args(args)  # argparse prints usage + error, exits 2
    if not skip_checks:
        module.preflight(parsed)  # clear one-line errors before any process starts
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    if config_file is not None:
        if not config_file.is_file():
            raise HfgrowError(f"accelerate config {str(config_file)!r} does not exist.")
        launch += ["--config_file", str(config_file)]
    if num_processes is not None:
        if num_processes < 1:
            raise HfgrowError("--num-processes must be at least 1.")
        launch += ["--num_processes", str(num_processes)]
        if num_processes > 1 and config_file is None:
            launch += ["--multi_gpu"]  # DDP; continue.py falls back to gloo on CPU-only machines
    elif config_file is None:
        launch += ["--num_processes", "1"]
    if config_file is None:  # spell out what accelerate would otherwise warn about
        launch += ["--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", mixed_precision or "no"]
    elif mixed_precision:
        launch += ["--mixed_precision", mixed_precision]
    if main_process_port:
        launch += ["--main_process_port", str(main_process_port)]
    cmd = [*launch, str(_continue_script()), *args]
    env = dict(os.environ)
    code = subprocess.call(cmd, env=env)
    if code != 0:
        sys.exit(code)


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--base-model-id", default=None, help="Hub id of the grown model for the card (default: recorded).")
@click.option("--max-shard-size", default="5GB", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--push-to", metavar="ORG/NAME", default=None, help="Push OUT to this Hub repo when done.")
def export(checkpoint: Path, out: Path, base_model_id, max_shard_size, overwrite, push_to) -> None:
    """Write a training checkpoint (RUN/checkpoint-N) as a normal Hugging Face model folder OUT.

    \b
    LoRA runs are merged into the weights; the config gets use_cache back; the model card
    records base_model (the grown model), base_model_relation finetune, data, tokens, losses.
      hfgrow export run/checkpoint-2000 my-model
    """
    from hfgrow.train.export import export_checkpoint, push

    path = export_checkpoint(checkpoint, out, replace=overwrite, max_shard_size=max_shard_size,
                             base_model_id=base_model_id)
    click.echo(f"wrote {path}")
    if push_to:
        push(path, push_to)


@click.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write (default DIR/loss.png).")
@click.option("--x", "x", type=click.Choice(["tokens", "flops"]), default="tokens", show_default=True,
              help="x axis: tokens seen, or training FLOPs ≈ 6·N·tokens.")
def plot(run_dir: Path, out, x) -> None:
    """Plot train and per-domain eval loss of a training run (DIR/log.jsonl) to a PNG."""
    from hfgrow.train.export import plot_run

    click.echo(f"wrote {plot_run(run_dir, out, x)}")


COMMANDS = [train, export, plot]
