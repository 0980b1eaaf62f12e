"""`hfgrow upcycle`: dense to mixture-of-experts (also `hfgrow grow --op upcycle`)."""

from __future__ import annotations

from pathlib import Path

import click

from hfgrow.cli.options import apply, console_options, hub_options, output_options, report

TARGETS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]  # checked against hfgrow.growth.ops.upcycle.TARGETS in tests
#: the options of upcycling (hfgrow grow refuses them for the other operators)
UPCYCLE_ONLY = ("experts", "top_k", "to", "granularity", "drop_rate", "shared_experts", "router", "router_std",
                "norm_topk_prob", "router_logits")


def upcycle_options(fn):
    return apply(fn, [
        click.option("--experts", type=int, default=8, show_default=True, help="Routed experts per layer (E)."),
        click.option("--top-k", type=int, default=2, show_default=True, help="Experts per token (k)."),
        click.option("--to", type=click.Choice(TARGETS), default=None,
                     help="Target type [default: SRC's sibling: llama/mistral -> mixtral, qwen2 -> qwen2_moe, "
                          "qwen3 -> qwen3_moe, olmo/olmo2 -> olmoe]."),
        click.option("--granularity", type=int, default=1, show_default=True,
                     help="Fine-grained experts: cut each MLP into G slices, each repeated E/G times (Megatron-Core "
                          "granular upcycling); G must divide E and the MLP size."),
        click.option("--drop-rate", type=float, default=0.0, show_default=True, metavar="R",
                     help="Drop-Upcycling: per expert, draw a seeded fraction R of the intermediate units again "
                          "(normal with the replaced weights' mean and std); the paper's default is 0.5."),
        click.option("--shared-experts", type=int, default=None, metavar="S",
                     help="Qwen2-MoE: size of the shared expert in expert slices (a multiple of G) [default: G, "
                          "the dense MLP's size]."),
        click.option("--router", type=click.Choice(["zero", "random"]), default=None,
                     help="Router init [default: random where the target renormalises the top-k weights, zero where "
                          "it does not, so step 0 keeps the function]."),
        click.option("--router-std", type=float, default=None,
                     help="--router random: std of the router's normal init [default: the config's initializer_range]."),
        click.option("--norm-topk-prob/--no-norm-topk-prob", default=None,
                     help="Qwen2-MoE, Qwen3-MoE, OLMoE: renormalise the top-k weights [default: on for Qwen3-MoE, as "
                          "its Hub checkpoints, off for the others, as theirs]."),
        click.option("--router-logits", is_flag=True,
                     help="Write the config with output_router_logits on, so training adds the router's "
                          "load-balancing loss (router_aux_loss_coef); what --grow upcycle does in a run."),
    ])


@click.command()
@click.argument("src")
@click.argument("out", type=click.Path(path_type=Path), required=False)
@upcycle_options
@click.option("--noise", type=float, default=None, metavar="ALPHA",
              help="Blend every weight matrix with seeded noise: W <- (1-a)W + a*eps (Stacking paper's scales).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice and value.")
@output_options
@hub_options
@console_options
def upcycle(src, out, experts, top_k, to, granularity, drop_rate, shared_experts, router, router_std, norm_topk_prob,
            router_logits, noise, seed, dtype, max_shard_size, dry_run, overwrite, push_to, revision, token):
    """Dense to mixture-of-experts: every MLP of SRC becomes E experts and a router; write OUT.

    OUT is the MoE sibling of SRC's family that transformers ships (Mixtral, Qwen2-MoE,
    Qwen3-MoE, OLMoE), stored with one tensor per expert as the Hub stores such models.
    Attention, norms and embeddings are copied byte for byte. The recipe says whether OUT
    computes SRC's function at step 0 (`hfgrow verify SRC OUT --expect preserved` checks it):
    copies do wherever the target renormalises the top-k weights, or with a zero router.

    \b
    Examples:
      hfgrow upcycle ./llama-small ./moe --experts 8 --top-k 2              # sparse upcycling -> Mixtral
      hfgrow upcycle ./llama-small ./drop --experts 8 --drop-rate 0.5       # Drop-Upcycling
      hfgrow upcycle Qwen/Qwen3-0.6B ./fine --experts 32 --top-k 8 --granularity 4     # fine-grained, Qwen3-MoE
      hfgrow upcycle ./qwen2 ./q2moe --experts 16 --top-k 4 --granularity 4 --shared-experts 4
      hfgrow grow ./llama-small ./moe --op upcycle --experts 8               # the same operator in grow
    """
    from hfgrow.growth.pipeline import upcycle as run_upcycle

    if out is None and not dry_run:
        raise click.UsageError("OUT is required unless --dry-run is given.")
    result = run_upcycle(src, out, experts=experts, top_k=top_k, to=to, granularity=granularity, drop_rate=drop_rate,
                         shared_experts=shared_experts, router=router, router_std=router_std,
                         norm_topk_prob=norm_topk_prob, router_logits=router_logits, noise=noise, seed=seed,
                         dtype=dtype, revision=revision, token=token, max_shard_size=max_shard_size, dry_run=dry_run,
                         overwrite=overwrite, push_to=push_to)
    report(result, dry_run)


COMMANDS = [upcycle]
