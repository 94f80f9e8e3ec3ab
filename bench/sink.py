"""Baseline SMTP servers: a bare aiosmtpd sink, and the same sink that also parses.

Run as ``python bench/sink.py bare|parse PORT``. The server is built the way the
gateway builds its own (``loop.create_server`` with aiosmtpd's SMTP protocol and
the same size limit), and prints ``ready`` once it listens.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.mail import parse_mail  # noqa: E402
from gateway.config import SmtpConfig  # noqa: E402


class BareSink:
    """Accept every message and discard it."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Discarded"


class ParsingSink:
    """Parse every message off the event loop, as the gateway does, then discard it."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.to_thread(parse_mail, envelope.original_content or b"")
        return "250 2.0.0 Parsed and discarded"


async def serve(mode: str, port: int) -> None:
    """Serve until SIGTERM."""
    handler = BareSink() if mode == "bare" else ParsingSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=SmtpConfig().max_message_bytes,
                     enable_SMTPUTF8=True, ident="bench sink"),
        host="127.0.0.1",
        port=port,
    )
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    print("ready", flush=True)
    await stopping.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("bare", "parse"):
        sys.exit("usage: python bench/sink.py bare|parse PORT")
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
