"""The support-gateway command line, run in-process with click's runner."""

from __future__ import annotations

import email
from email import policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import databases
from conftest import MESSAGES, POSTGRES, RunningGateway, database_url
from gateway.cli import cli
from gateway.config import load_config
from store import Store


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[database]\nurl = "{_empty_database_url(tmp_path)}"\n'
        f'[outbound]\nmaildir = "{tmp_path / "outbox"}"\n'
    )
    return path


def _empty_database_url(tmp_path: Path) -> str:
    # `db upgrade` must build the schema itself, so start without tables.
    return POSTGRES.create_blank() if POSTGRES else database_url(tmp_path)


def _run(config_file: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config_file), *args])
    return result.exit_code, result.output


def test_db_upgrade_creates_schema(config_file: Path) -> None:
    code, output = _run(config_file, "db", "upgrade")

    assert code == 0, output
    assert _ticket_count(load_config(config_file).database.url) == 0


def _ticket_count(url: str) -> int:
    async def work() -> int:
        store = Store(url)
        try:
            [(count,)] = await databases.query(store, "select count(*) from tickets")
        finally:
            await store.close()
        return count

    return databases.run_in_thread(work)


def test_builders_add_then_list(config_file: Path) -> None:
    code, output = _run(
        config_file, "builders", "add", "Ada@Example.com", "--name", "Ada Lovelace",
        "--app", "Client Portal=https://portal.example.com", "--timezone", "Europe/London",
    )
    assert code == 0, output

    code, output = _run(config_file, "builders", "list")

    assert code == 0
    assert "ada@example.com\tAda Lovelace\tEurope/London\tClient Portal=https://portal.example.com" in output


def test_builders_add_rejects_app_without_uri(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com", "--app", "Portal")

    assert code != 0
    assert "NAME=URI" in output


def test_builders_add_rejects_bad_email(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "not-an-address")

    assert code != 0
    assert "not an email address" in output


def test_builders_add_rejects_unknown_timezone(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com",
                        "--timezone", "Mars/Olympus")

    assert code != 0
    assert "Mars/Olympus" in output


def test_builders_import_reads_csv(config_file: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_text(
        "email,name,timezone,apps\n"
        "ada@example.com,Ada Lovelace,UTC,Client Portal=https://portal.example.com\n"
        "grace@example.com,Grace Hopper,America/New_York,Fleet=https://fleet.example.com;"
        "Docs=https://docs.example.com\n"
    )

    code, output = _run(config_file, "builders", "import", str(csv_path))
    assert code == 0, output
    _, listing = _run(config_file, "builders", "list")

    assert "imported 2 builder(s)" in output
    assert "grace@example.com\tGrace Hopper\tAmerica/New_York\tDocs=https://docs.example.com, Fleet=" in listing


def test_builders_import_names_bad_line(config_file: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_text("email,name\nada@example.com,Ada\nnot-an-address,Bob\n")

    code, output = _run(config_file, "builders", "import", str(csv_path))

    assert code != 0
    assert "line 3" in output


def test_unknown_config_key_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nprot = 1\n")

    code, output = _run(bad, "builders", "list")

    assert code != 0
    assert "web.prot" in output
    assert "Traceback" not in output


def test_inject_prints_reply_and_tickets_show(ada: RunningGateway, tmp_path: Path) -> None:
    config_file = tmp_path / "cli.toml"
    config_file.write_text(
        f'[database]\nurl = "{ada.gateway.config.database.url}"\n'
        f"[smtp]\nport = {ada.smtp_port}\n"
    )

    code, output = _run(config_file, "inject", str(MESSAGES / "gmail_plain_and_html.eml"))
    assert code == 0, output
    assert "250 2.0.0 Ticket #1 opened" in output

    code, listing = _run(config_file, "tickets", "list")
    assert code == 0
    assert "#1\tIn review\tsev2\tpublished_app\tada@example.com" in listing
    assert "1 ticket, 1 open" in listing

    code, shown = _run(config_file, "tickets", "show", "1")
    assert code == 0
    assert "Client Portal shows a blank page after login" in shown
    assert "builder:  Ada Lovelace <ada@example.com>" in shown


def test_inject_fails_when_no_gateway_listens(config_file: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    code, output = _run(config_file, "inject", "--port", str(port),
                        str(MESSAGES / "gmail_plain_and_html.eml"))

    assert code != 0
    assert "is `support-gateway serve` running?" in output


def test_tickets_show_unknown_number(config_file: Path) -> None:
    assert _run(config_file, "db", "upgrade")[0] == 0
    code, output = _run(config_file, "tickets", "show", "42")

    assert code != 0
    assert "no ticket #42" in output


@pytest.fixture
def desk_config(ada: RunningGateway, tmp_path: Path) -> Path:
    code, _ = ada.send((MESSAGES / "gmail_plain_and_html.eml").read_bytes())
    assert code == 250
    path = tmp_path / "desk.toml"
    path.write_text(
        f'[database]\nurl = "{ada.gateway.config.database.url}"\n'
        f'[outbound]\nmaildir = "{ada.maildir}"\n'
    )
    return path


def test_tickets_reply_queues_email(desk_config: Path, ada: RunningGateway) -> None:
    code, output = _run(desk_config, "tickets", "reply", "1", "Please clear the cache.",
                        "--as", "grace")

    assert code == 0, output
    # The command line stamps its work with the real clock.
    ada.clock.current = datetime.now(UTC) + timedelta(minutes=1)
    ada.flush_outbox()
    messages = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
                for p in ada.outbox_files()]
    texts = [m.get_body(("plain",)).get_content() for m in messages]
    assert any("Please clear the cache." in text for text in texts)


def test_tickets_note_stays_internal(desk_config: Path, ada: RunningGateway) -> None:
    code, output = _run(desk_config, "tickets", "note", "1", "CDN again.", "--as", "grace")

    assert code == 0, output
    [note] = [m for m in ada.ticket(1).messages if m.kind == "support"]
    assert note.visibility == "internal"


def test_tickets_set_prints_changes(desk_config: Path) -> None:
    code, output = _run(desk_config, "tickets", "set", "1", "--severity", "sev1",
                        "--assignee", "grace", "--as", "grace")

    assert code == 0, output
    assert "#1: severity sev2 → sev1" in output
    assert "#1: assignee none → grace" in output


def test_tickets_set_resolved_without_summary_fails(desk_config: Path) -> None:
    code, output = _run(desk_config, "tickets", "set", "1", "--status", "resolved")

    assert code != 0
    assert "--summary" in output
    assert "Traceback" not in output


def test_tickets_set_rejects_unknown_status(desk_config: Path) -> None:
    code, output = _run(desk_config, "tickets", "set", "1", "--status", "done")

    assert code != 0
    assert "'done'" in output


def test_inbound_list_shows_outcome(desk_config: Path) -> None:
    code, output = _run(desk_config, "inbound", "list")

    assert code == 0, output
    assert "ticket_created\t#1\tada@example.com" in output


def test_inbound_retry_refuses_handled_message(desk_config: Path, ada: RunningGateway) -> None:
    code, output = _run(desk_config, "inbound", "retry", "1")

    assert code != 0
    assert "already handled: ticket_created (ticket #1)" in output
    assert ada.ticket(2) is None


def test_inbound_retry_opens_ticket_for_new_builder(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    code, _ = gateway.send((MESSAGES / "gmail_plain_and_html.eml").read_bytes())
    assert code == 550
    gateway.add_builder("ada@example.com", name="Ada Lovelace")
    path = tmp_path / "retry.toml"
    path.write_text(f'[database]\nurl = "{gateway.gateway.config.database.url}"\n')

    code, output = _run(path, "inbound", "retry", "1")

    assert code == 0, output
    assert "Ticket #1 opened" in output
    assert gateway.ticket(1).summary.builder_email == "ada@example.com"


def test_builders_add_rejects_script_uri(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com",
                        "--app", "Evil=javascript:alert(1)")

    assert code != 0
    assert "http:// or https://" in output


@pytest.mark.parametrize(
    "app",
    [f"{'Portal ' * 40}=https://portal.example.com",
     f"Portal=https://portal.example.com/{'a' * 2000}"],
    ids=["long-name", "long-uri"],
)
def test_builders_add_rejects_long_app(config_file: Path, app: str) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com", "--app", app)
    _, listing = _run(config_file, "builders", "list")

    assert code == 2
    assert "the limits are 200 and 2000 characters" in output
    assert "ada@example.com" not in listing


def test_builders_add_rejects_own_address(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "support@localhost")

    assert code != 0
    assert "the gateway's own address" in output


def test_builders_import_rejects_non_utf8(config_file: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_bytes(b"\xff\xfe\x00garbage")

    code, output = _run(config_file, "builders", "import", str(csv_path))

    assert code != 0
    assert "is not UTF-8 text" in output
    assert "Traceback" not in output


def test_builders_add_rejects_long_name(config_file: Path) -> None:
    add = ("builders", "add", "ada@example.com", "--name")

    code, output = _run(config_file, *add, "A" * 201)
    accepted, _ = _run(config_file, *add, "A" * 200)

    assert code == 2
    assert "the name is 201 characters long; the limit is 200 characters" in output
    assert accepted == 0


@pytest.mark.parametrize(
    "name", ["Ada\r\nBcc: all@example.com", "Ada\nLovelace", "Ada\x00",
             "Ada \u202ecod.exe"],
    ids=["crlf-header", "lf", "nul", "bidi-override"],
)
def test_builders_add_rejects_control_characters(config_file: Path, name: str) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com",
                        "--name", name)
    _, listing = _run(config_file, "builders", "list")

    assert code == 2
    assert "control character" in output
    assert "ada@example.com" not in listing


def test_builders_import_rejects_long_name(config_file: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_text(
        f"email,name\nada@example.com,Ada\ngrace@example.com,{'G' * 250}\n"
    )

    code, output = _run(config_file, "builders", "import", str(csv_path))

    assert code != 0
    assert "line 3" in output
    assert "the limit is 200 characters" in output


def test_builders_import_rejects_two_line_name(
    config_file: Path, tmp_path: Path
) -> None:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_text('email,name\nada@example.com,"Ada\nLovelace"\n')

    code, output = _run(config_file, "builders", "import", str(csv_path))

    assert code != 0
    assert "line 2" in output
    assert "U+000A" in output


def test_reading_missing_database_fails(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "gateway.db"
    config_file = tmp_path / "typo.toml"
    config_file.write_text(f'[database]\nurl = "sqlite:///{missing}"\n')

    code, output = _run(config_file, "tickets", "list")

    assert code == 1
    assert f"no database at {missing} (database.url)" in output
    assert not missing.parent.exists()


def test_builders_add_rejects_blank_name(config_file: Path) -> None:
    code, output = _run(config_file, "builders", "add", "ada@example.com", "--name", "   ")

    assert code == 2
    assert "the name is only spaces" in output
