"""Run `gateway serve` with SQLite on synchronous=NORMAL, for information only.

The gateway always opens SQLite with synchronous=FULL, because a 250 reply
promises that the message survives a power loss. This launcher measures what
that promise costs: it adds one connect hook that lowers the setting to NORMAL,
then starts the ordinary `serve` command. Usage:
``python bench/relaxed_serve.py CONFIG.toml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.cli import main  # noqa: E402
from store import database  # noqa: E402

_configure_durable = database._configure_sqlite


def _configure_relaxed(engine: Any) -> None:
    _configure_durable(engine)

    # Registered after the durable hook, so this PRAGMA runs last.
    @event.listens_for(engine.sync_engine, "connect")
    def _relax(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


database._configure_sqlite = _configure_relaxed

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/relaxed_serve.py CONFIG.toml")
    main(["serve", "--config", sys.argv[1]])
