"""Slack text: escaping builder text, and plain text for builders."""

from __future__ import annotations

import pytest

from adapters.slack_blocks import escape, to_plain_text
from adapters.slack_commands import CommandError, parse_command

NAMES = {"UALAN0001": "Alan Turing"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel> look", "&lt;!channel&gt; look"),
        ("<@U123> & co", "&lt;@U123&gt; &amp; co"),
        ("<http://evil.example.com|Invoice>", "&lt;http://evil.example.com|Invoice&gt;"),
        ("&lt; already", "&amp;lt; already"),
    ],
    ids=["channel", "user-and-ampersand", "disguised-link", "entity-text"],
)
def test_escape_neutralises_slack_markup(text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@UALAN0001> fixed it", "@Alan Turing fixed it"),
        ("ask <#C0123|billing>", "ask #billing"),
        ("<!here> deploy done", "@here deploy done"),
        ("<!subteam^S01|@support> please", "@support please"),
        ("see <https://example.com/a|the docs>", "see the docs (https://example.com/a)"),
        ("see <https://example.com/a>", "see https://example.com/a"),
        ("log <https://files.slack.com/files-pri/T/F/x.txt|x.txt>", "log x.txt"),
        ("a &lt; b &amp;&amp; c &gt; d", "a < b && c > d"),
    ],
    ids=["user", "channel", "here", "user-group", "labelled-link", "bare-link",
         "private-file", "entities"],
)
def test_plain_text_for_builders(text: str, expected: str) -> None:
    assert to_plain_text(text, lambda user_id: NAMES.get(user_id, "someone")) == expected


def test_command_parses_reply_text() -> None:
    command = parse_command("#12 reply Thanks, fixed.\nSecond line")

    assert command.action == "reply"
    assert command.number == 12
    assert command.argument == "Thanks, fixed.\nSecond line"


def test_command_rejects_unknown_action() -> None:
    with pytest.raises(CommandError, match="Unknown action `frobnicate`"):
        parse_command("12 frobnicate")


def test_command_needs_reply_text() -> None:
    with pytest.raises(CommandError, match="needs a value"):
        parse_command("12 reply")
