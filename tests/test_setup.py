"""README's set-up: the constraints file pins what pyproject allows, and CI runs README's two commands as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions, not {line!r}"
            pins[_name(name)] = version
    return pins


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Set up"):text.index("\n## ", text.index("## Set up") + 1)]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_constraints_pin_every_dependency_but_torch_inside_pyproject_ranges():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    assert "torch" not in pins  # users keep their torch build
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(text)
        if requirement.name == "torch":
            continue
        version = pins.get(_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} is outside {requirement}"


def test_readme_installs_with_the_constraints_and_ci_runs_its_two_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    install, tests = commands
    assert "-c constraints.txt" in install and install.endswith("hfgrow demo")
    assert tests == "HF_HUB_OFFLINE=1 python -m pytest -n 2 --dist loadfile"
    ci = (ROOT / ".ci" / "run").read_text()
    values = {name: shlex.split(value)[0] for name, value in re.findall(r"^(SETUP|TESTS)=(.*)$", ci, flags=re.M)}
    assert values == {"SETUP": install, "TESTS": tests}
    assert ci.index('bash -c "$SETUP"') < ci.index("pip install -q -U --upgrade-strategy eager")
