"""Builder display names: the length limit and the characters a name may contain."""

from __future__ import annotations

import unicodedata

# The length of the builders.name column, VARCHAR(200) since the first migration
# (store/migrations/versions/0001_create_the_ticket_store.py). PostgreSQL rejects
# a longer value. The name goes into the To: header of every email to the
# builder and onto the status page.
MAX_BUILDER_NAME_CHARS = 200
# Control characters (CR, LF, tab, NUL and others) and the Unicode line and
# paragraph separators. In a header, CR or LF would start a new header line.
_LINE_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# The bidirectional embeddings, overrides and isolates (Unicode TR9). One of them
# can make a name display reversed or hide part of it, in Slack and in mail.
# The marks U+200E and U+200F stay allowed: names in right-to-left scripts use them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def builder_name_problem(name: str) -> str | None:
    """Return why NAME cannot be stored as a builder's name, or None when it can."""
    if len(name) > MAX_BUILDER_NAME_CHARS:
        return (f"the name is {len(name):,} characters long; the limit is "
                f"{MAX_BUILDER_NAME_CHARS} characters")
    for char in name:
        if unicodedata.category(char) in _LINE_BREAKING_CATEGORIES or char in _BIDI_CONTROLS:
            return (f"the name contains the control character U+{ord(char):04X}; "
                    "write it on one line without control characters")
    if name and not name.strip():
        return "the name is only spaces; leave it empty for no name"
    return None


def fit_builder_name(name: str) -> str:
    """Return NAME, taken from mail, on one line and cut to MAX_BUILDER_NAME_CHARS.

    A message is never rejected for its sender's display name, so the name is
    made to fit instead.
    """
    one_line = "".join(
        " " if unicodedata.category(char) in _LINE_BREAKING_CATEGORIES else char
        for char in name
        if char not in _BIDI_CONTROLS
    )
    return one_line[:MAX_BUILDER_NAME_CHARS].strip()
