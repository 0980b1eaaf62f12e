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

    graph = grimp.build_graph("hfgrow", cache_dir=None)
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
    ["--help"], ["plan", "--target", "7B", "--tokens", "2T"], ["plan", "--help"], ["mix", "fit", "--help"],
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
