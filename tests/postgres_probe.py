"""Exit 0 when the PostgreSQL server in a URL accepts a connection, else print why.

`make test` runs this before the PostgreSQL half of the suite:
    python tests/postgres_probe.py postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from sqlalchemy.engine import make_url

TIMEOUT_SECONDS = 5


async def _probe(url: str) -> None:
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database or "postgres",
        timeout=TIMEOUT_SECONDS,
    )
    await connection.close()


def main(argv: list[str]) -> int:
    """Return 0 when the server answers, 1 (with the reason on stdout) when not."""
    if len(argv) != 2:
        print("usage: postgres_probe.py postgresql://USER@HOST:PORT/DB")
        return 2
    try:
        asyncio.run(_probe(argv[1]))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
