"""Loading and checking the TOML configuration."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_match_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)

    config = load_config()

    assert (config.smtp.host, config.smtp.port) == ("127.0.0.1", 2525)
    assert config.smtp.support_addresses == ("support@localhost",)
    assert (config.web.host, config.web.port) == ("127.0.0.1", 8080)
    assert config.web.public_url == "http://127.0.0.1:8080"
    assert config.database.url == "sqlite:///var/gateway.db"
    assert config.outbound.maildir == "var/outbox"
    assert config.outbound.relay_host is None


def test_example_file_loads_and_documents_every_key() -> None:
    example = ROOT / "config.example.toml"
    text = example.read_text()

    config = load_config(example)

    for section in ("smtp", "web", "database", "outbound", "security"):
        for field in fields(getattr(config, section)):
            assert f"{field.name} =" in text, f"{section}.{field.name} is not documented"
    assert tomllib.loads(text)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "[smtp]\nprot = 25\n")

    with pytest.raises(ConfigError, match=r"smtp\.prot"):
        load_config(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "[smpt]\nport = 25\n")

    with pytest.raises(ConfigError, match=r"\[smpt\]"):
        load_config(path)


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, '[web]\nport = "eighty"\n')

    with pytest.raises(ConfigError, match=r"web\.port.*'eighty'"):
        load_config(path)


def test_small_message_limit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "[smtp]\nmax_message_bytes = 1000000\n")

    with pytest.raises(ConfigError, match="40 MiB"):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "[smtp\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_secret_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WEB_ACCESS_TOKEN", "from-env")

    config = load_config(None)

    assert config.web.access_token == "from-env"
    assert "from-env" not in repr(config)


def test_config_env_variable_selects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "[smtp]\nport = 2626\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))

    assert load_config().smtp.port == 2626


def test_plus_tag_support_address_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[smtp]\nsupport_addresses = ["support+x@example.com"]\n')

    with pytest.raises(ConfigError, match="support_addresses"):
        load_config(path)


def test_config_is_frozen() -> None:
    config = Config()

    with pytest.raises(AttributeError):
        config.source = "changed"  # type: ignore[misc]


def test_claim_lease_shorter_than_relay_timeout_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, "[outbound]\nrelay_timeout_seconds = 30.0\n"
                            "claim_lease_seconds = 10.0\n")

    with pytest.raises(ConfigError, match="outbound.claim_lease_seconds is 10.0"):
        load_config(path)
