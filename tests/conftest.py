"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest
from helpers.hub_server import HubServer

# One torch thread, here and in every process a test starts (they inherit the environment): the tests' matrices are
# tiny, so a second thread only adds synchronisation, and when the cores are shared (pytest-xdist's two workers,
# a 2-process accelerate run, another job) each op waits for a descheduled partner thread: bench/gpu.sh compare
# --dry took 133 s instead of 19 s on a busy 2-core machine. A value the user set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (by a plugin): the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local Hub on 127.0.0.1 that the real huggingface_hub client talks to over HTTP.

    Sets, for the duration of the test only:
      * HF_ENDPOINT (env) and ``huggingface_hub.constants.ENDPOINT`` + the resolve URL template, which the library
        computes once at import time;
      * a fresh HF_HOME / HF_HUB_CACHE (env and constants), so nothing touches the user's cache or token;
      * HF_TOKEN = the token of user "tester" (member of org "org", write access): ``hub_server.token``;
      * online mode: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are removed and ``constants.HF_HUB_OFFLINE`` is False
        (CI runs with HF_HUB_OFFLINE=1; nothing here can reach anything but 127.0.0.1);
      * ``constants.HF_HUB_DISABLE_XET = True``: uploads use the LFS protocol the server implements (with hf_xet
        installed, LFS files would otherwise go through Xet storage, which the server does not emulate). A test
        can set it back to False together with ``hub_server.force_regular_uploads = True``.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    server = HubServer().start()
    server.token = server.add_user("tester", orgs=["org"])
    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_TOKEN", server.token)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")

    patches = {
        "ENDPOINT": server.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}),
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)

    _http.close_session()  # no pooled connection from an earlier test
    try:
        yield server
    finally:
        _http.close_session()
        server.stop()


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch huggingface_hub to offline mode (as HF_HUB_OFFLINE=1 would at import time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)



@pytest.fixture(autouse=True)
def console_defaults() -> Iterator[None]:
    """Every test ends with hfgrow.console's defaults again: a command run in-process with -q or -v configures the
    console for the whole process, and the next test must not inherit that."""
    yield
    from hfgrow.console import configure

    configure()
