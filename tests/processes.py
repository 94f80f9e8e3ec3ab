"""Helpers for tests that run `support-gateway serve` as a child process."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable

START_TIMEOUT_SECONDS = 60
# Variables that would point a child process at another config or database.
_CHILD_ENV_DROP = ("GATEWAY_CONFIG", "GATEWAY_DATABASE_URL")


def child_environment() -> dict[str, str]:
    """Return this process's environment without the variables that pick a config."""
    return {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}


def wait_for_health(
    process: subprocess.Popen[bytes], name: str, web_port: int, logs: Callable[[], str]
) -> None:
    """Wait until PROCESS serves /healthz on WEB_PORT, or raise with its LOGS."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    url = f"http://127.0.0.1:{web_port}/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}\n{logs()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{name} did not answer {url}\n{logs()}")
