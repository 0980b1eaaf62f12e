"""The architecture contract: stages import only downward, no import cycle, no private name used across modules,
and commands that need no tensors never import torch (checked in CI like any test)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hfgrow"


def test_stages_import_only_downward(capsys):
    from importlinter.cli import lint_imports

    # the layers are declared in pyproject.toml ([tool.importlinter]); function-local imports count too
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_no_import_cycle():
    import grimp

    graph = grimp.build_graph("hfgrow", cache_dir=None, exclude_type_checking_imports=True)  # typing is no cycle
    cycles = [(module, imported) for module in sorted(graph.modules)
              for imported in graph.find_modules_directly_imported_by(module)
              if graph.chain_exists(importer=imported, imported=module)]
    assert cycles == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_is_used_across_modules():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> hfgrow module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hfgrow"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("hfgrow"):
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != _module_name(path)):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert offences == []


TENSOR_FREE = [
    ["--help"], ["plan", "--target", "7B", "--max-tokens", "2T"], ["plan", "--help"], ["mix", "fit", "--help"],
    ["mix", "optimize", "--help"], ["push", "--help"], ["stack", "--help"], ["grow", "--help"], ["train", "--help"],
    ["eval", "--help"], ["compare", "--help"], ["inspect", "--help"], ["verify", "--help"],
]


@pytest.mark.parametrize("argv", TENSOR_FREE, ids=" ".join)
def test_commands_that_need_no_tensors_do_not_import_torch(argv):
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "hfgrow.cli.main", *argv],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "accelerate"}


def test_import_hfgrow_does_not_import_torch():
    run = subprocess.run([sys.executable, "-c", "import hfgrow, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.stdout.strip() == "False"


# Files are opened in the gateways only: hfgrow/io/folder.py (every read of a folder or file a user names) and
# hfgrow/io/output.py (every write), with the modules of io/ that read and write weights on their behalf.
# Anything else that touches the file system is listed here with the reason it is not a user's file.
FILE_GATEWAYS = {
    "hfgrow/io/folder.py": "the read gateway",
    "hfgrow/io/output.py": "the write gateway",
    "hfgrow/io/executor.py": "writes shards into the temporary folder OutputFolder made",
    "hfgrow/io/checkpoint.py": "reads safetensors headers and weights of files Folder resolved",
    "hfgrow/io/files.py": "copies files Folder listed into the temporary folder OutputFolder made",
    "hfgrow/io/source.py": "resolves SRC; writes a merged adapter's base config into its own work folder",
    "hfgrow/io/hub.py": "the Hugging Face cache, written and read through huggingface_hub's layout",
}
FILE_EXCEPTIONS = {
    ("hfgrow/train/launch.py", "read_text"): "/proc/meminfo and cgroup limits: facts of the machine",
    ("hfgrow/eval/tiny.py", "save"): "builds its own tiny model folders (demo, tests)",
    ("hfgrow/eval/tiny.py", "unlink"): "builds its own tiny model folders (demo, tests)",
    ("hfgrow/data/tokens.py", "unlink"): "removes the partial shards of its own resumable token folder",
    ("hfgrow/data/tokens.py", "mkdir"): "creates its own resumable token folder",
    ("hfgrow/train/checkpoints.py", "rmtree"): "prunes the run's own checkpoints",
    ("hfgrow/train/growth.py", "unlink"): "removes the empty marker it left to tell which nodes share a disk",
    ("hfgrow/growth/ligo/placement.py", "rmtree"): "removes its own offload folder",
    ("hfgrow/growth/ligo/placement.py", "mkdir"): "creates its own offload folder",
    ("hfgrow/growth/pipeline.py", "unlink"): "removes the early writer's shards from the temporary folder OutputFolder made",
    ("hfgrow/growth/pipeline.py", "save_file"): "writes sidecars into the temporary folder OutputFolder made",
    ("hfgrow/growth/ligo/operator.py", "load_file"): "the matrices file Folder.file resolved beside the recipe",
    ("hfgrow/train/export.py", "load_file"): "the checkpoint's weights, resolved by Folder.find",
    ("hfgrow/train/export.py", "load"): "the checkpoint's weights (weights_only), resolved by Folder.find",
    ("hfgrow/eval/compare.py", "mkdir"): "creates its own experiment folder",
    ("hfgrow/train/runlog.py", "mkdir"): "creates the run folder",
    ("hfgrow/train/runlog.py", "savefig"): "draws into the file handle io.output.atomic_file gave",
    ("hfgrow/data/tokens.py", "save"): "an array into memory (io.BytesIO), then atomic_write",
}
_FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "memmap", "fromfile", "tofile",
               "savefig", "safe_open", "load_file", "save_file", "rmtree", "copyfile", "copytree", "unlink", "mkdir",
               "touch", "rename", "symlink_to"}
_MODULE_CALLS = {("np", "load"), ("np", "save"), ("numpy", "load"), ("torch", "load"), ("torch", "save"),
                 ("_torch", "save"), ("json", "load"), ("json", "dump"), ("os", "replace"), ("os", "rename"),
                 ("os", "remove"), ("shutil", "move"), ("shutil", "copy"), ("shutil", "copy2")}


def _file_calls(path: Path) -> list[tuple[str, int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(("open", node.lineno, ast.unparse(node)))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            receiver = ast.unparse(func.value)
            if "Folder(" in receiver or receiver.lower().endswith("folder"):
                continue  # a method of the read gateway's Folder
            if (owner, func.attr) in _MODULE_CALLS or (func.attr in _FILE_CALLS and owner not in {"gzip", "io"}
                                                       and func.attr != "open"):
                found.append((func.attr, node.lineno, ast.unparse(node)))
            elif func.attr == "open" and owner not in {"Checkpoint", "gzip", "folder", "self"}:
                found.append(("open", node.lineno, ast.unparse(node)))
    return found


def test_only_the_gateways_open_files():
    """No module outside the read and write gateways opens, writes or deletes a file, except those listed with
    their reason: a new command inherits containment, limits, atomic writes and one-sentence errors by calling
    the gateways, and this test fails when one opens a file on its own."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in FILE_GATEWAYS:
            continue
        for call, line, text in _file_calls(path):
            if (rel, call) not in FILE_EXCEPTIONS:
                offenders.append(f"{rel}:{line}: {text[:100]}")
    assert not offenders, "\n".join(offenders)


def test_the_gateway_check_sees_a_file_opened_on_its_own(tmp_path):
    """The check above is not vacuous: each way of opening a file is found."""
    module = tmp_path / "m.py"
    module.write_text("import json, numpy as np\nfrom pathlib import Path\n"
                      "open('x')\nPath('x').read_text()\nnp.memmap('x')\njson.load(fh)\nPath('y').write_bytes(b'')\n"
                      "gzip.open('z')\nFolder('a').read_bytes('b')\nself.folder.memmap('c')\n")
    assert [call for call, _, _ in _file_calls(module)] == ["open", "read_text", "memmap", "load", "write_bytes"]


TRAINER_FUNCTION_LINES = 60  # the trainer reads top to bottom: no function in hfgrow/train longer than this


def test_no_trainer_function_is_longer_than_a_screen():
    import ast

    long = []
    for path in sorted((PACKAGE / "train").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > TRAINER_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


# What hfgrow says on stderr goes through hfgrow/console.py (the `hfgrow` logger and its one progress bar), so that
# --quiet/-v mean the same in every command and only the main process of a distributed run speaks. Files not yet
# converted are listed with the reason.
CONSOLE_EXCEPTIONS: dict[str, str] = {}


def _console_bypasses(path: Path) -> list[tuple[int, str]]:
    """print(), err=True (click.echo to stderr), sys.stderr, and tqdm (imported or called) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in ("print", "tqdm") or any(keyword.arg == "err" for keyword in node.keywords):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Attribute) and ast.unparse(node) in ("sys.stderr", "sys.__stderr__"):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "tqdm" for alias in node.names):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tqdm":
            found.append((node.lineno, ast.unparse(node)))
    return sorted(set(found))


def test_only_the_console_writes_to_stderr():
    """No module but hfgrow/console.py prints, echoes to stderr or makes a progress bar: status is
    ``hfgrow.console.log``, bars are ``hfgrow.console.progress``, a command's output is ``click.echo`` (stdout)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "hfgrow/console.py" or rel in CONSOLE_EXCEPTIONS:
            continue
        offenders += [f"{rel}:{line}: {text[:100]}" for line, text in _console_bypasses(path)]
    assert not offenders, "\n".join(offenders)


def test_the_console_check_sees_each_way_around_it(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import sys\nfrom tqdm.auto import tqdm\nprint('x', file=sys.stderr)\nclick.echo('w', err=True)\n"
                      "bar = tqdm(total=3)\nsys.stderr.write('y')\nlog.info('fine')\nclick.echo('fine')\n")
    assert [line for line, _ in _console_bypasses(module)] == [2, 3, 3, 4, 5, 6]
