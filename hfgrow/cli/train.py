"""`hfgrow train` (training through accelerate's launcher, after checking the arguments and the machine),
`hfgrow export` (checkpoint -> model folder) and `hfgrow plot` (a run's loss curves)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from hfgrow.cli.options import console_options, forwarded_verbosity
from hfgrow.console import log


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    short_help="Continued pre-training with accelerate (the other arguments go to hfgrow.continue).",
)
@click.option("--config-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="accelerate config (see configs/README.md: which hardware each is for).")
@click.option("--num-processes", type=int, default=None,
              help="Processes to launch (default: the config's; one per GPU when it says -1; else 1).")
@click.option("--mixed-precision", type=click.Choice(["no", "bf16", "fp16"]), default=None,
              help="Override the config's mixed precision.")
@click.option("--main-process-port", type=int, default=None, help="Rendezvous port for several processes.")
@click.option("--skip-checks", is_flag=True,
              help="Launch without checking the arguments and the machine (GPUs, cores, memory) first.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@console_options
def train(config_file, num_processes, mixed_precision, main_process_port, skip_checks, args) -> None:
    """Continued pre-training: checks the arguments and the machine, prints the launch command, runs it.

    It runs `accelerate launch -m hfgrow.continue ARGS` (the same as typing that; in a clone,
    `accelerate launch hfgrow/continue.py ARGS` works too). Every other argument goes to
    hfgrow.continue (`hfgrow train -h` lists them all); --quiet/--verbose also go to it.

    \b
    Examples:
      hfgrow train --model grown/ --data web=web.jsonl --output-dir run --max-tokens 1B
      hfgrow train --config-file configs/ddp.yaml --model org/grown --data hf:HuggingFaceFW/fineweb-edu \\
          --output-dir run --seq-len 2048 --batch-size 8 --grad-accum 16 --max-tokens 2B
      hfgrow train --config-file configs/multi_cpu.yaml --model grown/ ...   # 2 CPU processes
      hfgrow train --config-file configs/fsdp2.yaml --model base-config/ --grow stack:4@auto \
          --data tok/ --output-dir run --max-tokens 2T     # pre-training with growth (Gstack x4, the paper's d)
    """
    from hfgrow.train.config import TrainConfig, build_parser

    args = list(args)
    if "-h" in args or "--help" in args:
        click.echo(click.get_current_context().get_help())
        click.echo("\nhfgrow.continue options:\n")
        click.echo(build_parser().format_help())
        return
    build_parser().parse_args(args)  # argparse prints usage + error, exits 2

    from hfgrow.train.launch import Machine, launch_command, plan_launch, run_launcher

    machine = Machine.probe()
    log.debug(f"machine: {machine}")
    plan = plan_launch(config_file, num_processes, machine, mixed_precision=mixed_precision,
                       main_process_port=main_process_port)
    if not skip_checks:
        _check(TrainConfig.from_argv(args, world_size=plan.total_processes), plan, machine)
    command = launch_command(plan, [*args, *forwarded_verbosity(click.get_current_context())])
    log.info(shlex.join(command))
    code = run_launcher(command)
    if code != 0:
        sys.exit(code)


def _check(cfg, plan, machine) -> None:
    """preflight (clear one-line errors before any process starts), the growth stages, and the machine check
    (for the largest model the run trains: the last stage's, with --grow)."""
    from hfgrow.arch.layout import read_config, text_config
    from hfgrow.io.source import open_source
    from hfgrow.train.args import preflight
    from hfgrow.train.launch import check_machine, trained_fraction

    with open_source(cfg.model) as source:
        setup = preflight(cfg, source)
        text = text_config(setup.config)
        fraction = trained_fraction(cfg.train, setup.new_layers, getattr(text, "num_hidden_layers", None))
        # the largest stage's parameters, counted from its config (one owner: growth.timing.count_params, tied
        # weights once), whether or not the folder holds weights
        n_params = setup.cfg.stage_plan(read_config(source.path)).final_params
        check_machine(plan, machine, n_params, fraction)


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--base-model-id", default=None,
              help="Hub id of the model the run trained, for the card (default: the one recorded, if any).")
@click.option("--max-shard-size", default="5GB", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--push-to", metavar="ORG/NAME", default=None, help="Push OUT to this Hub repo when done.")
@console_options
def export(checkpoint: Path, out: Path, base_model_id, max_shard_size, overwrite, push_to) -> None:
    """Write a training checkpoint (RUN/checkpoint-N) as a normal Hugging Face model folder OUT.

    LoRA runs are merged into the weights; the config gets use_cache back; the tokenizer, chat
    template and generation config come from the model the run started from; the model card
    describes the run (base model, data, tokens, steps, LR schedule, train and held-out losses)
    and the growth the base came from.

    \b
    Examples:
      hfgrow export run/checkpoint-2000 my-model
      hfgrow export run/checkpoint-2000 my-model --base-model-id my-org/grown --push-to my-org/grown-cpt
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
@console_options
def plot(run_dir: Path, out, x) -> None:
    """Plot the train loss and per-domain held-out loss of a training run (DIR/log.jsonl) to a PNG.

    \b
    Examples:
      hfgrow plot run/                              # run/loss.png, loss vs tokens
      hfgrow plot run/ --x flops --out run-flops.png
    """
    from hfgrow.train.runlog import plot_run

    click.echo(f"wrote {plot_run(run_dir, out, x)}")


COMMANDS = [train, export, plot]
