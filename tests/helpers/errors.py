"""Assertions on hfgrow's one-sentence errors."""

from __future__ import annotations

import re

import pytest

from hfgrow.errors import HfgrowError


def raises(message: str):
    """pytest.raises for an HfgrowError whose message is exactly ``message``."""
    return pytest.raises(HfgrowError, match=f"^{re.escape(message)}$")
