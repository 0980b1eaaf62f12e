"""One vocabulary for the options of every command: counts, byte sizes, dtypes, Hub access, output.

Options that mean the same thing are declared once here, so they are spelled, typed and explained the
same way in every command: a token or parameter count accepts ``2T``/``500M``/``1e9`` (:data:`COUNT`),
a size in bytes ``5GB``/``2GiB`` (:data:`BYTES`), every command that reaches the Hub takes
``--revision`` and ``--token``, and every command takes ``--quiet/-q`` and ``--verbose/-v``
(:func:`console_options`). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from hfgrow.console import configure, log, quiet
from hfgrow.errors import HfgrowError
from hfgrow.io.dtypes import OUTPUT_CHOICES


class _Count(click.ParamType):
    """A count written like 2T, 500M, 250k, 1e9 or 1000 (hfgrow.units.parse_count)."""

    name = "count"

    def convert(self, value: Any, param, ctx) -> int:
        from hfgrow.units import parse_count

        if isinstance(value, int):
            return value
        try:
            return parse_count(value, "count", "2T")
        except HfgrowError as exc:
            self.fail(str(exc), param, ctx)


class _Bytes(click.ParamType):
    """A size in bytes written like 5GB, 500MB or 2GiB (hfgrow.units.parse_bytes)."""

    name = "size"

    def convert(self, value: Any, param, ctx) -> int | str:
        from hfgrow.units import parse_bytes

        try:
            parse_bytes(value, "size")
        except HfgrowError as exc:
            self.fail(str(exc), param, ctx)
        return value


class Operator(click.ParamType):
    """A growth operator's name, checked against :mod:`hfgrow.growth.registry` when the command runs (so an
    operator registered by a plugin or a test is found); an old name gives its one-line deprecation note."""

    name = "operator"

    def __init__(self, depth: bool = False, width: bool = False, in_run: bool = False):
        self.filters = dict(depth=depth, width=width, in_run=in_run)

    def get_metavar(self, param, ctx=None) -> str:
        from hfgrow.growth.registry import names

        return "[" + "|".join(names(**self.filters)) + "]"

    def shell_complete(self, ctx, param, incomplete: str):
        from click.shell_completion import CompletionItem

        from hfgrow.growth.registry import get, names

        return [CompletionItem(name, help=get(name).help) for name in names(**self.filters)
                if name.startswith(incomplete)]

    def convert(self, value: Any, param, ctx) -> str:
        from hfgrow.growth.registry import names, resolve

        flag = param.opts[0] if param is not None else "--op"
        try:
            entry, note = resolve(str(value), flag)
        except HfgrowError:
            self.fail(f"'{value}' is not one of {', '.join(names(**self.filters))}.", param, ctx)
        if entry.name not in names(**self.filters, public=False):  # hidden entries too, but only those that fit
            self.fail(f"'{value}' is not one of {', '.join(names(**self.filters))}.", param, ctx)
        if note:  # a deprecation: shown with --quiet too, in its own words ("note: ...")
            log.warning(note, extra={"prefix": ""})
        return entry.name


COUNT = _Count()
BYTES = _Bytes()


def apply(fn: Callable, decorators: list[Callable]) -> Callable:
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


#: ctx.meta key: the verbosity the command was configured with (-1 --quiet, 0, 1 --verbose)
VERBOSITY = "hfgrow.verbosity"


def _console_option(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Both flags are eager, so they are read before any other option or argument is converted; the second one
    read configures the console (hfgrow.console.configure), once per command."""
    if ctx.resilient_parsing:  # shell completion: nothing runs
        return
    flags = ctx.meta.setdefault("hfgrow.console-flags", {})
    flags[param.name] = value
    if len(flags) < 2:
        return
    if flags["quiet"] and flags["verbose"]:
        raise click.UsageError("give --quiet or --verbose, not both.", ctx)
    ctx.meta[VERBOSITY] = -1 if flags["quiet"] else 1 if flags["verbose"] else 0
    configure(ctx.meta[VERBOSITY])


def console_options(fn: Callable) -> Callable:
    """--quiet/-q and --verbose/-v: every command takes both and they mean the same in each (tests/test_console.py
    fails for a command without them). The command itself never sees them: they configure hfgrow.console, and
    what depends on them asks :func:`hfgrow.console.quiet`."""
    return apply(fn, [
        click.option("--quiet", "-q", is_flag=True, is_eager=True, expose_value=False, callback=_console_option,
                     help="Only warnings and errors on stderr: no progress bars, no status lines or summary."),
        click.option("--verbose", "-v", is_flag=True, is_eager=True, expose_value=False, callback=_console_option,
                     help="Also debug lines on stderr (what was resolved, which path a step took)."),
    ])


def forwarded_verbosity(ctx: click.Context) -> list[str]:
    """The flag that gives a launched hfgrow process this command's verbosity: [] or ["--quiet"] / ["--verbose"]."""
    return {-1: ["--quiet"], 1: ["--verbose"]}.get(ctx.meta.get(VERBOSITY, 0), [])


def hub_options(fn: Callable) -> Callable:
    """--revision and --token: every command that reads a model from the Hub takes both."""
    return apply(fn, [
        click.option("--revision", default=None, help="Hub branch, tag or commit of the model read from the Hub."),
        click.option("--token", default=None, envvar="HF_TOKEN", show_envvar=True,
                     help="Hub token for private/gated repos (default: your `hf auth login` token)."),
    ])


def output_options(fn: Callable) -> Callable:
    """How a grown folder OUT is written."""
    return apply(fn, [
        click.option("--dtype", type=click.Choice(["keep", *OUTPUT_CHOICES]), default="keep", show_default=True,
                     help="Dtype of floating-point tensors in OUT."),
        click.option("--max-shard-size", type=BYTES, default="5GB", show_default=True,
                     help="Largest safetensors shard, e.g. 5GB or 2GiB."),
        click.option("--dry-run", is_flag=True, help="Print the plan (layer map, sizes); write nothing."),
        click.option("--overwrite", is_flag=True, help="Replace OUT if it exists."),
        click.option("--push-to", metavar="ORG/NAME", default=None, help="Push OUT to this Hub repo when done."),
    ])


def depth_options(orders: tuple[str, ...] = ("stack", "interpolate"), order_default: str | None = "stack",
                  order_help: str = "How --factor/--layers place copies: whole-model repeats or each layer in place."
                  ) -> Callable[[Callable], Callable]:
    """--factor, --layers, --pattern and --order (its choices and default differ between stack and grow)."""
    return lambda fn: apply(fn, [
        click.option("--factor", "-g", type=float, default=None, help="Depth growth factor g: L*g output layers."),
        click.option("--layers", "-n", type=int, default=None, help="Number of output layers (instead of --factor)."),
        click.option("--pattern", "-p", default=None,
                     help="Exact layer map, e.g. '0-5*4' (Gstack), '0*2,1*2' (interpolate), '0-23,8-31' (SOLAR)."),
        click.option("--order", type=click.Choice(list(orders)), default=order_default,
                     show_default=order_default is not None, help=order_help),
    ])


def width_options(fn: Callable) -> Callable:
    return apply(fn, [
        click.option("--hidden-size", type=int, default=None,
                     help="Width: new hidden size (heads and FFN follow it unless given; head_dim stays fixed)."),
        click.option("--intermediate-size", type=int, default=None, help="Width: new FFN size."),
        click.option("--num-heads", type=int, default=None, help="Width: new number of query heads."),
        click.option("--num-kv-heads", type=int, default=None,
                     help="Width: new number of key/value heads [default: grow with the query heads; MQA stays 1]."),
    ])


def renamed(new: str, old: str, new_value, old_value, *, default=None):
    """The value of an option given by its new spelling or, for one release, its old one (with a warning).

    Example:
        >>> renamed("--max-tokens", "--tokens", None, "2T")     # warns: --tokens is now --max-tokens
        '2T'
    """
    if old_value is not None:
        log.warning(f"{old} is now {new}, as in every command; {old} goes in the next release.")
        if new_value is not None and new_value != old_value:
            raise click.UsageError(f"give {new} once ({old} is its old spelling).")
        return old_value
    return default if new_value is None else new_value


def given(ctx: click.Context, names) -> list[str]:
    """The options among ``names`` the user typed (command line or environment), as ``--flag`` strings."""
    from click.core import ParameterSource

    typed = [name for name in names
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    return ["--" + name.replace("_", "-") for name in typed]


def refuse(flags: list[str], reason: str) -> None:
    """A usage error naming the first offending option, e.g. ``--noise does not apply to --op learn``."""
    if flags:
        raise click.UsageError(f"{flags[0]} {reason}")


def report(result, dry_run: bool) -> None:
    """What every growth command prints: the plan summary (always with --dry-run; not with --quiet otherwise)."""
    if dry_run:
        click.echo(result.report())
        click.echo("dry run: nothing written.")
    elif not quiet():
        click.echo(result.report())
