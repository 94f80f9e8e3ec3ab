"""The `support-gateway` command line."""

from __future__ import annotations

import asyncio
import csv
import logging
import re
import smtplib
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from gateway import addresses, fields
from gateway.builder_names import MAX_BUILDER_NAME_CHARS, builder_name_problem
from gateway.config import Config, load_config
from gateway.errors import DatabaseBusy, GatewayError
from gateway.model import App

T = TypeVar("T")
# The sizes of the apps.name and apps.uri columns. PostgreSQL rejects a longer value.
MAX_APP_NAME_CHARS = 200
MAX_APP_URI_CHARS = 2000
# EX_TEMPFAIL of sysexits.h: the command may succeed when it is run again.
EXIT_DATABASE_BUSY = 75
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^[^@\s]+@localhost$")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line."""
    cli.main(args=argv, prog_name="support-gateway")


@click.group(
    epilog=(
        f"Exit status: 0 on success, 1 on an error, 2 on invalid usage, and "
        f"{EXIT_DATABASE_BUSY} when another process kept the database locked for "
        "longer than the wait limit (run the command again later)."
    )
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (default: $GATEWAY_CONFIG, else embedded defaults).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log DEBUG lines too.")
@click.pass_context
def cli(context: click.Context, config_path: str | None, verbose: bool) -> None:
    """Run a support desk from email and Slack."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Library chatter at INFO (one line per SMTP command) drowns our own lines.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler logs every job run at INFO; the jobs log their own outcomes.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    context.obj = {"config_path": config_path}


def _config(context: click.Context) -> Config:
    try:
        return load_config(context.obj["config_path"])
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(work())
    except GatewayError as exc:
        raise _click_error(exc) from exc


class DatabaseBusyError(click.ClickException):
    """A command stopped because another process held a database lock too long."""

    exit_code = EXIT_DATABASE_BUSY


def _click_error(exc: GatewayError) -> click.ClickException:
    if isinstance(exc, DatabaseBusy):
        return DatabaseBusyError(str(exc))
    return click.ClickException(str(exc))


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (the same as the global --config).",
)
@click.pass_context
def serve(context: click.Context, config_path: str | None) -> None:
    """Run SMTP, web and outbound delivery in one process."""
    from gateway.service import Gateway
    from gateway.service import serve as serve_until_stopped

    if config_path:
        context.obj["config_path"] = config_path
    config = _config(context)
    click.echo(f"support-gateway starting with {config.source}", err=True)
    try:
        gateway = Gateway(config)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        serve_until_stopped(gateway)
    except OSError as exc:
        raise click.ClickException(
            f"could not listen: {exc.strerror or exc}; check smtp.port and web.port "
            "or stop the process that uses them."
        ) from exc


@cli.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(context: click.Context) -> None:
    """Apply every schema migration."""
    from store.database import upgrade_schema

    config = _config(context)
    try:
        upgrade_schema(config.database.url)
    except GatewayError as exc:
        raise _click_error(exc) from exc
    click.echo("database schema is up to date")


@cli.group()
def builders() -> None:
    """Manage builder accounts."""


def _parse_apps(values: Sequence[str]) -> list[App]:
    apps = []
    for value in values:
        name, sep, uri = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(
                f"{value!r} is not NAME=URI; write for example "
                "Client Portal=https://portal.example.com.",
                param_hint="--app",
            )
        name, uri = " ".join(name.split()), uri.strip()
        if len(name) > MAX_APP_NAME_CHARS or len(uri) > MAX_APP_URI_CHARS:
            raise click.BadParameter(
                f"app {name[:40]!r}: the name has {len(name):,} characters and the URI "
                f"{len(uri):,}; the limits are {MAX_APP_NAME_CHARS} and "
                f"{MAX_APP_URI_CHARS} characters.",
                param_hint="--app",
            )
        if urlsplit(uri).scheme not in ("http", "https") or not urlsplit(uri).netloc:
            raise click.BadParameter(
                f"the URI of app {name!r} is {uri!r}; write a full http:// or "
                "https:// address, for example https://portal.example.com.",
                param_hint="--app",
            )
        apps.append(App(name=name, uri=uri))
    return apps


def _check_email(value: str) -> str:
    email = addresses.identity(value)
    if not _EMAIL.match(email):
        raise click.BadParameter(f"{value!r} is not an email address.", param_hint="EMAIL")
    return email


def _reject_own_address(config: Config, email: str) -> None:
    support = [addresses.identity(a) for a in config.smtp.support_addresses]
    if email in support or email == addresses.identity(config.sender_address):
        raise click.BadParameter(
            f"{email} is the gateway's own address; a builder needs an address of "
            "their own.",
            param_hint="EMAIL",
        )


def _check_name(value: str | None) -> str | None:
    problem = None if value is None else builder_name_problem(value)
    if problem is not None:
        raise click.BadParameter(f"{problem}.", param_hint="--name")
    return value


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise click.BadParameter(
            f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin.",
            param_hint="--timezone",
        ) from exc
    return value


@builders.command("add")
@click.argument("email")
@click.option("--name", help="The builder's name, used in emails; at most "
              f"{MAX_BUILDER_NAME_CHARS} characters on one line.")
@click.option("--app", "apps", multiple=True, metavar="NAME=URI",
              help="An app of this builder; repeat for several.")
@click.option("--timezone", help="IANA time zone of the builder (default UTC).")
@click.pass_context
def builders_add(
    context: click.Context, email: str, name: str | None, apps: tuple[str, ...],
    timezone: str | None,
) -> None:
    """Add a builder, or update the name, time zone and apps of one."""
    email = _check_email(email)
    name = _check_name(name)
    parsed_apps = _parse_apps(apps)
    timezone = _check_timezone(timezone)
    config = _config(context)
    _reject_own_address(config, email)

    async def work() -> Any:
        store = await _open_store(config)
        try:
            async with store.write() as tx:
                return await tx.upsert_builder(
                    email, name=name, timezone=timezone, apps=parsed_apps,
                    now=datetime.now(UTC),
                )
        finally:
            await store.close()

    builder = _run(work)
    click.echo(f"builder {builder.email} ({builder.name or 'no name'}) with "
               f"{len(builder.apps)} app(s)")


@builders.command("list")
@click.pass_context
def builders_list(context: click.Context) -> None:
    """List builders and their apps."""
    config = _config(context)

    async def work() -> Any:
        store = await _open_store(config, existing=True)
        try:
            async with store.read() as tx:
                return await tx.list_builders()
        finally:
            await store.close()

    for builder in _run(work):
        apps = ", ".join(f"{a.name}={a.uri}" for a in builder.apps) or "no apps"
        click.echo(f"{builder.email}\t{builder.name}\t{builder.timezone}\t{apps}")


@builders.command("revoke-links")
@click.argument("email")
@click.pass_context
def builders_revoke_links(context: click.Context, email: str) -> None:
    """Revoke every private status-page link sent to EMAIL."""
    config = _config(context)
    address = email.strip().lower()

    async def work() -> int | None:
        store = await _open_store(config)
        try:
            async with store.write() as tx:
                builder = await tx.find_builder(address)
                if builder is None:
                    return None
                return await tx.revoke_builder_links(builder.id, now=datetime.now(UTC))
        finally:
            await store.close()

    revoked = _run(work)
    if revoked is None:
        raise click.ClickException(f"no builder {address}; see `builders list`.")
    click.echo(f"revoked {revoked} link(s) of {address}")


@builders.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def builders_import(context: click.Context, path: str) -> None:
    """Add or update builders from a CSV file.

    Columns: email (required), name, timezone, and apps as
    `Name=URI` pairs separated by `;`.
    """
    rows = _read_builder_csv(Path(path))
    config = _config(context)
    for email, *_rest in rows:
        _reject_own_address(config, email)

    async def work() -> int:
        store = await _open_store(config)
        try:
            async with store.write() as tx:
                for email, name, timezone, apps in rows:
                    await tx.upsert_builder(email, name=name, timezone=timezone, apps=apps,
                                            now=datetime.now(UTC))
            return len(rows)
        finally:
            await store.close()

    click.echo(f"imported {_run(work)} builder(s) from {path}")


def _read_builder_csv(path: Path) -> list[tuple[str, str | None, str | None, list[App]]]:
    try:
        return _parse_builder_csv(path)
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); save it "
            "as CSV in UTF-8 and import it again."
        ) from exc
    except csv.Error as exc:
        raise click.ClickException(f"{path} is not valid CSV: {exc}.") from exc


def _parse_builder_csv(path: Path) -> list[tuple[str, str | None, str | None, list[App]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "email" not in [f.strip().lower() for f in reader.fieldnames]:
            raise click.ClickException(
                f"{path} has no 'email' column; the first line must name the columns "
                "email,name,timezone,apps."
            )
        rows = []
        for line_number, record in enumerate(reader, start=2):
            record = {(k or "").strip().lower(): (v or "").strip() for k, v in record.items()}
            try:
                email = _check_email(record["email"])
                name = _check_name(record.get("name") or None)
                apps = _parse_apps([a for a in record.get("apps", "").split(";") if a.strip()])
                timezone = _check_timezone(record.get("timezone") or None)
            except click.BadParameter as exc:
                raise click.ClickException(f"{path} line {line_number}: {exc.message}") from exc
            rows.append((email, name, timezone, apps))
    return rows


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=None, help="SMTP host (default: smtp.host).")
@click.option("--port", type=int, default=None, help="SMTP port (default: smtp.port).")
@click.option("--to", "recipient", default=None,
              help="Envelope recipient (default: the first support address).")
@click.pass_context
def inject(
    context: click.Context, files: tuple[str, ...], host: str | None, port: int | None,
    recipient: str | None,
) -> None:
    """Deliver .eml files to a running gateway over SMTP and print each reply."""
    config = _config(context)
    host = host or config.smtp.host
    port = port or config.smtp.port
    recipient = recipient or config.smtp.support_addresses[0]
    failures = 0
    for path in files:
        data = to_crlf(Path(path).read_bytes())
        sender = _envelope_sender(data)
        code, text = _send(host, port, sender, recipient, data)
        click.echo(f"{path}: {code} {text}")
        if code >= 400:
            failures += 1
    if failures:
        sys.exit(1)


def to_crlf(data: bytes) -> bytes:
    """Return DATA with every line ending as CRLF, as SMTP requires."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def _envelope_sender(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.compat32)
    found = getaddresses([str(message.get("From", ""))])
    return found[0][1] if found and found[0][1] else ""


def _send(host: str, port: int, sender: str, recipient: str, data: bytes) -> tuple[int, str]:
    try:
        with smtplib.SMTP(host, port, timeout=120) as client:
            client.ehlo()
            code, reply = client.mail(sender)
            if code >= 400:
                return code, reply.decode(errors="replace")
            code, reply = client.rcpt(recipient)
            if code >= 400:
                return code, reply.decode(errors="replace")
            code, reply = client.data(data)
            return code, reply.decode(errors="replace")
    except (OSError, smtplib.SMTPException) as exc:
        raise click.ClickException(
            f"could not deliver to {host}:{port}: {exc}; is `support-gateway serve` running?"
        ) from exc


@cli.group()
def tickets() -> None:
    """Show and work tickets."""


@tickets.command("list")
@click.option("--status", help="Only this status or builder label, e.g. open, 'In review' "
              "or unfinished (every open status).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many tickets to show.")
@click.pass_context
def tickets_list(context: click.Context, status: str | None, limit: int) -> None:
    """List tickets, newest activity first."""
    from gateway.model import TicketFilter

    if status and status not in (*fields.STATUSES, *fields.BUILDER_LABELS,
                                 fields.UNFINISHED_FILTER):
        raise click.BadParameter(
            f"unknown status {status!r}; use one of: {', '.join(fields.STATUSES)}.",
            param_hint="--status",
        )
    config = _config(context)

    async def work() -> Any:
        store = await _open_store(config, existing=True)
        try:
            async with store.read() as tx:
                return await tx.list_tickets(TicketFilter(status=status), per_page=limit)
        finally:
            await store.close()

    listing = _run(work)
    noun = "ticket" if listing.total == 1 else "tickets"
    click.echo(f"{listing.total} {noun}, {listing.open} open")
    for t in listing.tickets:
        click.echo(
            f"#{t.number}\t{t.status_label}\t{t.severity}\t{t.category}\t"
            f"{t.builder_email}\t{t.title}"
        )


@tickets.command("show")
@click.argument("number", type=int)
@click.pass_context
def tickets_show(context: click.Context, number: int) -> None:
    """Show one ticket with its whole conversation."""
    config = _config(context)

    async def work() -> Any:
        store = await _open_store(config, existing=True)
        try:
            async with store.read() as tx:
                return await tx.get_ticket(number)
        finally:
            await store.close()

    ticket = _run(work)
    if ticket is None:
        raise click.ClickException(f"no ticket #{number}; see `support-gateway tickets list`.")
    t = ticket.summary
    click.echo(f"#{t.number} {t.title}")
    click.echo(f"status:   {t.status_label} ({t.status})")
    click.echo(f"builder:  {t.builder_name} <{t.builder_email}>")
    click.echo(f"app:      {t.app_name or fields.ACCOUNT_LEVEL_APP}")
    click.echo(f"category: {fields.CATEGORIES[t.category]}")
    click.echo(f"severity: {fields.SEVERITIES[t.severity]}  priority: {t.priority}")
    click.echo(f"assignee: {t.assignee or 'nobody'}")
    if ticket.resolution_summary:
        click.echo(f"resolution: {ticket.resolution_summary}")
    for message in ticket.messages:
        marker = "INTERNAL " if message.visibility == "internal" else ""
        click.echo(f"\n--- {marker}{message.kind} {message.author} "
                   f"{message.created_at.isoformat(timespec='seconds')}")
        click.echo(message.body)
        for attachment in message.attachments:
            click.echo(f"[attachment] {attachment.filename} ({attachment.content_type}, "
                       f"{attachment.size_bytes} bytes)")


async def _open_store(config: Config, *, existing: bool = False) -> Any:
    """Open the store and bring its schema up to date.

    Pass EXISTING for a command that only reads: a SQLite file that does not
    exist then gives an error, because a new empty database would look like an
    empty desk when database.url has a typo.
    """
    from sqlalchemy.engine import make_url

    from store import Store

    url = make_url(config.database.url)
    is_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if existing and is_file:
        path = Path(url.database)
        if not path.exists():
            raise GatewayError(
                f"no database at {path} (database.url); check the path, or run "
                "`support-gateway db upgrade` or `serve` to create it"
            )
    store = Store(config.database.url)
    await store.upgrade()
    return store


def _default_actor() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "support"


async def _with_desks(config: Config, work: Callable[[Any], Awaitable[T]]) -> T:
    from gateway.service import make_desks

    store = await _open_store(config)
    try:
        desks = await make_desks(config, store, lambda: datetime.now(UTC))
        return await work(desks)
    finally:
        await store.close()


@tickets.command("reply")
@click.argument("number", type=int)
@click.argument("text")
@click.option("--as", "author", default=None, help="Name shown as the author (default: your login).")
@click.pass_context
def tickets_reply(context: click.Context, number: int, text: str, author: str | None) -> None:
    """Store a public reply and email it to the builder."""
    config = _config(context)
    author = author or _default_actor()
    _run(lambda: _with_desks(config, lambda d: d.support.reply(number, text, author=author)))
    click.echo(f"reply queued for the builder of #{number}")


@tickets.command("note")
@click.argument("number", type=int)
@click.argument("text")
@click.option("--as", "author", default=None, help="Name shown as the author (default: your login).")
@click.pass_context
def tickets_note(context: click.Context, number: int, text: str, author: str | None) -> None:
    """Add an internal note, never emailed or shown to the builder."""
    config = _config(context)
    author = author or _default_actor()
    _run(lambda: _with_desks(config, lambda d: d.support.note(number, text, author=author)))
    click.echo(f"internal note added to #{number}")


@tickets.command("set")
@click.argument("number", type=int)
@click.option("--status", type=click.Choice(fields.STATUSES), help="New status.")
@click.option("--summary", help="Resolution summary, emailed with --status resolved.")
@click.option("--question", help="Question for the builder, emailed with --status waiting_on_builder.")
@click.option("--severity", type=click.Choice(list(fields.SEVERITIES)), help="New severity.")
@click.option("--category", type=click.Choice(list(fields.CATEGORIES)), help="New category.")
@click.option("--priority", type=click.Choice(fields.PRIORITIES, case_sensitive=False),
              help="New priority.")
@click.option("--assignee", help="Support person who owns the ticket; empty to clear.")
@click.option("--duplicate-of", type=int, help="Ticket that tracks the same issue.")
@click.option("--as", "actor", default=None, help="Name recorded for the change (default: your login).")
@click.pass_context
def tickets_set(
    context: click.Context, number: int, status: str | None, summary: str | None,
    question: str | None, severity: str | None, category: str | None,
    priority: str | None, assignee: str | None, duplicate_of: int | None, actor: str | None,
) -> None:
    """Change a ticket's status or fields, with the same rules and emails as Slack."""
    from gateway.support import TicketChange

    config = _config(context)
    change = TicketChange(
        status=status, summary=summary, question=question, severity=severity,
        category=category, priority=priority, assignee=assignee, duplicate_of=duplicate_of,
    )
    actor = actor or _default_actor()
    result = _run(lambda: _with_desks(config, lambda d: d.support.change(number, change,
                                                                         actor=actor)))
    for line in result.changes:
        click.echo(f"#{number}: {line}")
    if result.emailed:
        click.echo(f"#{number}: the builder is emailed about the {result.after.status} status")


@cli.group()
def inbound() -> None:
    """Show and reprocess stored inbound email."""


@inbound.command("list")
@click.option("--outcome", help="Only records with this outcome, e.g. failed.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def inbound_list(context: click.Context, outcome: str | None, limit: int) -> None:
    """List received messages, newest first, with what became of each."""
    config = _config(context)

    async def work() -> Any:
        store = await _open_store(config, existing=True)
        try:
            async with store.read() as tx:
                return await tx.list_inbound(limit=limit, outcome=outcome)
        finally:
            await store.close()

    for record in _run(work):
        ticket = f"#{record.ticket_number}" if record.ticket_number else "-"
        click.echo(
            f"{record.id}\t{record.received_at.isoformat(timespec='seconds')}\t"
            f"{record.outcome}\t{ticket}\t{record.mail_from or '<>'}\t{record.size_bytes}\t"
            f"{record.detail}"
        )


# Outcomes that changed no ticket and sent no mail, so processing again is safe:
# a processing error, or a sender who may have a builder account by now.
RETRYABLE_OUTCOMES = frozenset({"failed", "rejected_unknown_sender", "received"})


@inbound.command("retry")
@click.argument("inbound_id", type=int)
@click.pass_context
def inbound_retry(context: click.Context, inbound_id: int) -> None:
    """Process a stored message again, as if it had just arrived."""
    from gateway.tickets import Delivery

    config = _config(context)

    async def work(desks: Any) -> Any:
        async with desks.store.read() as tx:
            found = await tx.get_inbound_raw(inbound_id)
        if found is None:
            raise click.ClickException(f"no inbound message {inbound_id}; see `inbound list`.")
        record, raw = found
        if record.outcome == "held_rate_limit":
            raise click.ClickException(
                f"inbound message {inbound_id} is held by the new-tickets limit; open "
                f"its ticket with `support-gateway inbound release {inbound_id}`."
            )
        if record.outcome not in RETRYABLE_OUTCOMES:
            ticket = f" (ticket #{record.ticket_number})" if record.ticket_number else ""
            raise click.ClickException(
                f"inbound message {inbound_id} was already handled: {record.outcome}"
                f"{ticket}; only messages whose outcome is "
                f"{' or '.join(sorted(RETRYABLE_OUTCOMES))} can be retried."
            )
        if raw is None:
            raise click.ClickException(
                f"inbound message {inbound_id} has no stored bytes any more (pruned)."
            )
        async with desks.store.read() as tx:
            rcpt = await tx.inbound_recipients(inbound_id)
        return await desks.desk.receive(
            Delivery(raw=raw, mail_from=record.mail_from, rcpt_tos=rcpt, peer="retry",
                     inbound_id=inbound_id)
        )

    verdict = _run(lambda: _with_desks(config, work))
    click.echo(f"inbound {inbound_id}: {verdict.smtp_reply}")


@inbound.command("release")
@click.argument("inbound_id", type=int)
@click.pass_context
def inbound_release(context: click.Context, inbound_id: int) -> None:
    """Open a ticket from a message held by the new-tickets-per-hour limit."""
    from gateway.tickets import Delivery

    config = _config(context)

    async def work(desks: Any) -> Any:
        async with desks.store.read() as tx:
            found = await tx.get_inbound_raw(inbound_id)
            rcpt = await tx.inbound_recipients(inbound_id)
        if found is None:
            raise click.ClickException(f"no inbound message {inbound_id}; see `inbound list`.")
        record, raw = found
        if record.outcome != "held_rate_limit":
            raise click.ClickException(
                f"inbound message {inbound_id} is not held (its outcome is "
                f"{record.outcome}); use `inbound retry {inbound_id}` to process it again."
            )
        if raw is None:
            raise click.ClickException(
                f"inbound message {inbound_id} has no stored bytes any more (pruned)."
            )
        return await desks.desk.receive(
            Delivery(raw=raw, mail_from=record.mail_from, rcpt_tos=rcpt, peer="release",
                     inbound_id=inbound_id, release=True)
        )

    verdict = _run(lambda: _with_desks(config, work))
    click.echo(f"inbound {inbound_id}: {verdict.smtp_reply}")


@cli.command()
@click.option("--dry-run", is_flag=True,
              help="Print who would get a digest and what it lists; send nothing.")
@click.pass_context
def digest(context: click.Context, dry_run: bool) -> None:
    """Send the reminder digests that are due now, whatever the schedule."""
    from gateway.digest import describe_wait
    from gateway.scheduler import make_scheduled_work

    config = _config(context)
    now = datetime.now(UTC)

    async def work(desks: Any) -> int:
        scheduled = await make_scheduled_work(config, desks, now=lambda: now)
        if not dry_run:
            return await scheduled.digests.run_now()
        count = 0
        async for plan in scheduled.digests.preview():
            count += 1
            listed = len(plan.tickets)
            summary = f"{listed + plan.more_waiting} ticket(s)"
            if plan.more_waiting:
                summary += f", the {listed} most urgent listed"
            click.echo(f"{plan.builder.email}: {summary}")
            for waiting in plan.tickets:
                ticket = waiting.ticket
                click.echo(f"  #{ticket.number}\t{ticket.severity}\t"
                           f"waiting {describe_wait(now - waiting.wait_started_at)}\t"
                           f"{ticket.title}")
            if plan.more_waiting:
                click.echo(f"  and {plan.more_waiting} more, not listed")
        return count

    count = _run(lambda: _with_desks(config, work))
    if dry_run:
        click.echo(f"{count} digest(s) would be sent; nothing was sent (dry run)")
    else:
        click.echo(f"{count} digest(s) queued; a running gateway delivers them")
