"""What the hostile-input tests (tests/io/test_untrusted.py, tests/io/test_gateway.py) check of every refusal:
exit status 1, one ``error:`` sentence last (progress lines may come first), no traceback; folders byte-identical
before and after; no byte of a secret planted outside the folder in any output."""

from __future__ import annotations

import os
from pathlib import Path

SECRET = b"hf_SECRET_TOKEN_must_never_be_copied_0123456789"


def tree(folder: Path) -> dict[str, object]:
    """Everything in a folder, links as links (not followed), files by their bytes."""
    if not folder.exists() and not folder.is_symlink():
        return {}
    state: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_file():
            state[rel] = path.read_bytes()
        else:
            state[rel] = "dir"
    return state


def no_outside_bytes(folder: Path) -> None:
    """No link in ``folder`` and no file holding :data:`SECRET`."""
    for path in folder.rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            assert SECRET not in path.read_bytes(), path


def refused(result: tuple[int, str, str], *words: str) -> str:
    """Check a refusal (exit code, stdout, stderr) and that its error sentence holds each of ``words``; return it."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err, err
    # progress lines ("writing ...", "LiGO: tokenizing ...") may come first; the refusal is one sentence, last
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and errors[0].endswith("."), err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]
