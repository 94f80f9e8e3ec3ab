"""Run `gateway serve` with durability relaxed, for information only.

The gateway always opens SQLite with synchronous=FULL and PostgreSQL sessions
with synchronous_commit=on, because a 250 reply promises that the message
survives a crash or a power loss. This launcher measures what that promise
costs: it hooks the gateway's engine setup in store/database.py so that SQLite
runs with synchronous=NORMAL and PostgreSQL sessions with synchronous_commit=off,
then starts the ordinary `serve` command. The gateway's own code is unchanged.
Usage: ``.venv/bin/python bench/relaxed_serve.py CONFIG.toml``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.cli import main  # noqa: E402
from store import database  # noqa: E402


def _relax_sqlite(engine: Any) -> None:
    # Registered after the durable hook, so this PRAGMA runs last.
    @event.listens_for(engine.sync_engine, "connect")
    def _relax(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _relax_postgres(engine: Any) -> None:
    # The gateway passes synchronous_commit=on as an asyncpg server setting, so
    # it is part of the connection's startup packet and overrides any database
    # or role default. Replace it in the connect arguments of each new connection.
    @event.listens_for(engine.sync_engine, "do_connect")
    def _relax(_dialect: Any, _record: Any, _args: Any, parameters: dict[str, Any]) -> None:
        parameters["server_settings"] = {
            **parameters.get("server_settings", {}),
            "synchronous_commit": "off",
        }


@contextmanager
def relaxed_durability() -> Iterator[None]:
    """Make every engine that store/database.py creates inside the block relaxed."""
    durable_sqlite = database._configure_sqlite
    durable_postgres = database._create_postgres_engine

    def configure_sqlite(engine: Any) -> None:
        durable_sqlite(engine)
        _relax_sqlite(engine)

    def create_postgres_engine(target: Any) -> Any:
        engine = durable_postgres(target)
        _relax_postgres(engine)
        return engine

    database._configure_sqlite = configure_sqlite
    database._create_postgres_engine = create_postgres_engine
    try:
        yield
    finally:
        database._configure_sqlite = durable_sqlite
        database._create_postgres_engine = durable_postgres


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: .venv/bin/python bench/relaxed_serve.py CONFIG.toml")
    with relaxed_durability():
        main(["serve", "--config", sys.argv[1]])
