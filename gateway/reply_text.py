"""Reply text: the builder's own new text of an email reply, without quoted history."""

from __future__ import annotations

import heapq
import html as html_entities
import logging
import re
from collections.abc import Iterator, Sequence

import lxml.html
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml import etree
from mailparser_reply import EmailMessage

log = logging.getLogger(__name__)

# mail-parser-reply 1.36 has header patterns for these languages. This module adds
# Norwegian and Portuguese, and the forms the library misses in the others, such as
# Gmail's Spanish and Dutch attribution lines and French labels without a space
# before the colon.
_LIBRARY_LANGUAGES = ("en", "de", "fr", "es", "nl", "da", "sv")

# The library's header pattern backtracks badly. Measured with re.finditer on one
# machine, a 2 MB message took over a second for plain prose and had not finished
# after 290 seconds as one long line starting with "On ". So the pattern is only
# matched at one candidate line at a time, on a few lines cut to this length, and at
# most _MAX_LIBRARY_CALLS times per reply.
_LIBRARY_HEADER = EmailMessage(text="", languages=list(_LIBRARY_LANGUAGES)).HEADER_REGEX
_LIBRARY_LINE_CHARS = 160
_LIBRARY_WINDOW_LINES = 6
# NOTE: after this many calls only this module's own patterns are tried.
_MAX_LIBRARY_CALLS = 32

# NOTE: after this many unquoted candidate lines without a cut, the rest of the text
# is kept as it is. This bounds the time spent on huge pasted logs.
_MAX_CANDIDATE_LINES = 2000
# Longer lines are never taken for headers, which keeps the patterns below fast.
_MAX_HEADER_LINE_CHARS = 300
# How far below a header the first quoted line may sit for the header to introduce it.
_QUOTE_LOOKAHEAD_LINES = 5

# Labels of the header block that Outlook, Apple Mail and Gmail forwards put above
# the previous message, in en, de, fr, es, nl, da, sv, no and pt.
_FROM_LABELS = ("From", "Von", "De", "Van", "Fra", "Från")
_OTHER_LABELS = (
    *("Sent", "Date", "To", "Cc", "CC", "Bcc", "Subject", "Reply-To"),
    *("Gesendet", "Datum", "An", "Betreff"),
    *("Envoyé", "À", "Objet"),
    *("Enviado el", "Enviado", "Fecha", "Para", "Asunto"),
    *("Verzonden", "Aan", "Onderwerp"),
    *("Sendt", "Dato", "Til", "Emne", "Kopi"),
    *("Skickat", "Till", "Ämne", "Kopia"),
    *("Enviada", "Data", "Assunto"),
)


def _label_pattern(labels: Sequence[str]) -> str:
    names = "|".join(re.escape(label) for label in labels)
    # French puts a space, often a no-break space, before the colon: "De : Support".
    # Plain-text conversions of Outlook's bold labels read "*From:*".
    return rf"[ \t]*\*{{0,2}}(?:{names})\*{{0,2}}[ \t\xa0\u202f]{{0,2}}:"


_FROM_LINE = re.compile(_label_pattern(_FROM_LABELS))
_LABEL_LINE = re.compile(_label_pattern(_FROM_LABELS + _OTHER_LABELS))

_ORIGINAL_MESSAGE = re.compile(
    r"-{3,}[ \t]*(?:Original Message|Ursprüngliche Nachricht|Message d'origine"
    r"|Mensaje original|Oorspronkelijk bericht|Oprindelig meddelelse"
    r"|Ursprungligt meddelande|Opprinnelig melding|Mensagem original)[ \t]*-{3,}",
    re.IGNORECASE,
)
# Outlook on the web puts a line of underscores above the header block.
_UNDERSCORE_RULE = re.compile(r"_{10,}")
_RULE_LINE = re.compile(r"[ \t]*[-_=*]{5,}[ \t]*")

# Attribution lines as each client writes them. Every form is matched against one
# line, or two lines joined by a space because Gmail wraps long attributions. Each
# form ends in a colon, so callers check that first, and the greedy tails then
# succeed after one step back.
_ATTRIBUTION = re.compile(
    "|".join(
        (
            # en, Gmail: On Thu, Dec 3, 2026 at 10:15 AM Support <...> wrote:
            # Apple Mail: On Dec 3, 2026, at 10:15, Support <...> wrote:
            r"On\s.{1,250}?\swrote\s?:",
            # de, Gmail: Am Do., 3. Dez. 2026 um 10:15 Uhr schrieb Support <...>:
            r"Am\s.{1,250}?\sschrieb\s.{1,250}:",
            # fr, Gmail: Le jeu. 3 déc. 2026 à 10:15, Support <...> a écrit :
            r"Le\s.{1,250}?\sa\s+écrit\s?:",
            # es, Gmail: El jue, 3 dic 2026 a las 10:15, Support (<...>) escribió:
            r"El\s.{1,250}?\sescribió\s?:",
            # nl, Gmail: Op do 3 dec 2026 om 10:15 schreef Support <...>:
            r"Op\s.{1,250}?\sschreef\s.{1,250}:",
            # nl, Apple Mail: Op 3 dec. 2026 om 10:15 heeft Support <...> het volgende
            # geschreven:
            r"Op\s.{1,250}?\shet volgende geschreven\s?:",
            # da, no, sv, Gmail: Den tor. 3. des. 2026 kl. 10:15 skrev Support <...>:
            # Apple Mail starts at the date: 3. des. 2026 kl. 10:15 skrev Support <...>:
            r"(?:Den\s)?(?:[^\W\d]{2,8}\.?,?\s)?\d{1,4}\b.{1,250}?\sskrev\s.{1,250}:",
            # pt, Gmail: Em qui., 3 de dez. de 2026 às 10:15, Support <...> escreveu:
            # Apple Mail: No dia 3 de dez. de 2026, às 10:15, Support <...> escreveu:
            r"(?:Em|No dia|A)\s.{1,250}?\sescreveu\s?:",
        )
    )
)
# Each client form above carries a date or time. Requiring a digit keeps sentences
# such as "On the login page I wrote:" in the reply.
_DIGIT = re.compile(r"\d")
_ATTRIBUTION_VERB = re.compile(
    r"\b(?:wrote|schrieb|écrit|escribió|schreef|geschreven|skrev|escreveu)\b"
)

# The line a client adds below the reply on a phone, such as "Sent from my iPhone".
# The pattern accepts a device name of at most five words, so sentences that merely
# start the same way are kept.
_DEVICE = r"[\w.+-]{1,40}(?: [\w.+-]{1,40}){0,4}"
_MOBILE_SIGNATURE_PATTERN = (
    "(?:"
    + "|".join(
        (
            rf"Sent from (?:my )?{_DEVICE}",
            r"Get Outlook for (?:iOS|Android)",
            rf"Von meinem {_DEVICE} gesendet",
            rf"Gesendet von (?:meinem )?{_DEVICE}",
            r"Outlook für (?:iOS|Android) herunterladen",
            rf"Envoyé (?:de|depuis) (?:mon )?{_DEVICE}",
            r"(?:Obtenir|Télécharger) Outlook pour (?:iOS|Android)",
            rf"Enviado desde (?:mi )?{_DEVICE}",
            r"(?:Obtener|Descargar) Outlook para (?:iOS|Android)",
            rf"(?:Verzonden|Verstuurd) (?:vanaf|met) (?:mijn )?{_DEVICE}",
            r"Outlook voor (?:iOS|Android) downloaden",
            rf"Sendt fra (?:min )?{_DEVICE}",
            r"(?:Hent|Få) Outlook (?:til|for) (?:iOS|Android)",
            rf"Skickat från (?:min )?{_DEVICE}",
            r"Hämta Outlook för (?:iOS|Android)",
            rf"Enviado do (?:meu )?{_DEVICE}",
            r"(?:Obter o|Baixe o) Outlook para (?:iOS|Android)",
        )
    )
    # Outlook's plain text appends a link: "Get Outlook for iOS<https://...>".
    + r")\.?(?: ?<[^<>\s]{1,300}>)?"
)
_MOBILE_SIGNATURE = re.compile(_MOBILE_SIGNATURE_PATTERN)
_MAX_MOBILE_SIGNATURE_CHARS = 400
# RFC 3676 describes the Usenet convention of "-- " on its own line above a
# signature. Some clients and HTML conversions drop the space.
_SIGNATURE_DELIMITER = re.compile(r"--[ \xa0]?")

# Lines that may start a cut: a signature, a header label or a separator. Attribution
# lines are found through their verb instead, because their first words vary. All of
# these lines start with a character of the lookahead, which lets the regex engine
# skip other lines without trying every alternative.
_CANDIDATE_LINE = re.compile(
    r"^(?=[-_* \tA-ZÀ-Þ])"
    rf"(?:--[ \xa0]?$|{_label_pattern(_FROM_LABELS + _OTHER_LABELS)}"
    rf"|[ \t]*(?:-{{3,}}|_{{10,}})|[ \t]*{_MOBILE_SIGNATURE_PATTERN}[ \t]*$)",
    re.MULTILINE,
)
_LEADING_BLANK_LINES = re.compile(r"(?:[ \t\xa0]*\n)+")
_QUOTED_LINE = re.compile(r"^[ \t]*>", re.MULTILINE)


def _has_class(name: str) -> str:
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


# Quote containers in HTML mail: Gmail, Apple Mail and Thunderbird (type=cite), Yahoo,
# and Thunderbird's attribution line above its blockquote.
_HTML_QUOTES = etree.XPath(
    f"//div[{_has_class('gmail_quote')}] | //blockquote[{_has_class('gmail_quote')}]"
    " | //blockquote[@type='cite']"
    f" | //div[{_has_class('yahoo_quoted')}]"
    f" | //div[{_has_class('moz-cite-prefix')}]"
    f" | //div[{_has_class('moz-cite-prefix')}]"
    "/following-sibling::*[1][self::blockquote]"
)
# Outlook starts the previous message with one of these and puts nothing of the reply
# after it. The separator's border colour is #B5C4DF in Outlook 2007 and 2010 and
# #E1E1E1 in later Outlook for Windows.
_LOWERCASE_WITHOUT_SPACES = (
    "translate(@style, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ ', 'abcdefghijklmnopqrstuvwxyz')"
)
_HTML_HISTORY_STARTS = etree.XPath(
    "//*[@id='divRplyFwdMsg' or @id='appendonsend']"
    f" | //div[contains({_LOWERCASE_WITHOUT_SPACES}, 'border-top:solid#e1e1e1')]"
    f" | //div[contains({_LOWERCASE_WITHOUT_SPACES}, 'border-top:solid#b5c4df')]"
)
_HTML_TAG = re.compile(r"<[^>]*>")
# lxml rejects a str that declares its encoding, and the text is decoded already.
_XML_DECLARATION = re.compile(r"\s*<\?xml[^>]*\?>")


def extract_reply(text: str, html: str | None = None) -> str:
    """Return the builder's own new text of a reply.

    Quoted history ("> " lines, attribution lines, Outlook header blocks) and the
    signature below "-- " or a mobile "Sent from my iPhone" line are cut. Inline
    answers keep the quotes above them, but a single quote block above the whole
    reply (bottom-posting) is cut. When `text` is empty, `html` is used without its
    quote containers. When nothing is left, or cutting fails, the whole text (or the
    whole HTML as text) is returned, stripped. No exception escapes for str input.
    """
    use_html = bool(html) and not (text and text.strip())
    try:
        if use_html:
            source = _html_to_text(html or "", remove_quotes=True)
        else:
            source = _normalize_newlines(text or "")
        reply = _reply_from_text(source)
    except Exception:
        # Broken input can make lxml, inscriptis or a pattern fail in many ways, and
        # the whole text is always a safe result.
        log.warning(
            "cutting quoted history failed on a reply of %d characters, "
            "keeping the whole text",
            len(html or "") if use_html else len(text or ""),
            exc_info=True,
        )
        reply = ""
    if reply.strip():
        return reply
    return _whole_text(text, html, use_html=use_html)


def _whole_text(text: str, html: str | None, *, use_html: bool) -> str:
    if not use_html:
        return _normalize_newlines(text or "").strip()
    try:
        return _html_to_text(html or "", remove_quotes=False).strip()
    except Exception:
        log.warning(
            "converting HTML of %d characters to text failed, stripping tags instead",
            len(html or ""),
            exc_info=True,
        )
        return html_entities.unescape(_HTML_TAG.sub(" ", html or "")).strip()


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def _reply_from_text(text: str) -> str:
    """Cut quoted history and signature from plain text with "\\n" line ends."""
    # Stripping trailing blank lines first keeps the line loops below short when a
    # message ends in thousands of them.
    text = text.rstrip()
    lines = text.split("\n")
    cut, attributions = _find_cut(lines, text)
    reply_lines = _drop_trailing_history(lines[:cut], attributions)
    if _QUOTED_LINE.search(text) is not None:
        reply_lines = _drop_bottom_posted_quote(reply_lines, attributions)
    log.debug("reply text keeps %d of %d lines", len(reply_lines), len(lines))
    reply = "\n".join(reply_lines).rstrip()
    leading_blank_lines = _LEADING_BLANK_LINES.match(reply)
    if leading_blank_lines is not None:
        reply = reply[leading_blank_lines.end() :]
    return reply


def _find_cut(lines: list[str], text: str) -> tuple[int, set[int]]:
    """Return the index of the first history or signature line, and quote headers.

    A header that is followed by "> " lines only introduces a quote, which may
    carry inline answers below it, so it is not a cut. Its lines are returned so
    that trailing quote blocks can be dropped together with their attribution.
    """
    library = _LibraryHeaders()
    attributions: set[int] = set()
    resume = 0
    examined = 0
    for index in _candidate_lines(text):
        if index < resume or _is_quoted(lines[index]):
            continue
        examined += 1
        if examined > _MAX_CANDIDATE_LINES:
            log.debug("stopped looking for quoted history at line %d", index)
            break
        if _is_signature_start(lines[index]):
            return index, attributions
        end = library.header_end(lines, index)
        if end is None:
            end = _own_header_end(lines, index)
        if end is None:
            continue
        if not _is_followed_by_quote(lines, end):
            return index, attributions
        attributions.update(range(index, end))
        resume = end
    return len(lines), attributions


def _candidate_lines(text: str) -> Iterator[int]:
    """Yield in ascending order, once each, the lines that may start a cut."""
    starts = _line_numbers(_CANDIDATE_LINE, text)
    attributions = _attribution_line_numbers(text)
    previous = -1
    for index in heapq.merge(starts, attributions):
        if index != previous:
            yield index
        previous = index


def _line_numbers(pattern: re.Pattern[str], text: str) -> Iterator[int]:
    """Yield the numbers of the lines that `pattern` matches in, once each."""
    line = 0
    position = 0
    previous = -1
    for match in pattern.finditer(text):
        line += text.count("\n", position, match.start())
        position = match.start()
        if line != previous:
            yield line
        previous = line


def _attribution_line_numbers(text: str) -> Iterator[int]:
    # A wrapped attribution starts one line above its verb.
    for line in _line_numbers(_ATTRIBUTION_VERB, text):
        if line > 0:
            yield line - 1
        yield line


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_signature_start(line: str) -> bool:
    if _SIGNATURE_DELIMITER.fullmatch(line):
        return True
    stripped = line.strip()
    return (
        len(stripped) <= _MAX_MOBILE_SIGNATURE_CHARS
        and _MOBILE_SIGNATURE.fullmatch(stripped) is not None
    )


class _LibraryHeaders:
    """Header detection by mail-parser-reply, limited in calls and line lengths."""

    def __init__(self) -> None:
        self.calls_left = _MAX_LIBRARY_CALLS

    def header_end(self, lines: list[str], index: int) -> int | None:
        """Return the index after a header starting at lines[index], or None."""
        line_count = self._match_line_count(lines, index)
        if line_count is None:
            return None
        if _LABEL_LINE.match(lines[index]):
            return index + line_count
        header = " ".join(lines[index : index + line_count])
        if _DIGIT.search(header) is None:
            return None
        if line_count > 1 and self._match_line_count(lines, index + 1) is not None:
            # The "On ... wrote:" pattern also takes a sentence starting with "On"
            # on the line above a real attribution. The attribution starts below.
            return None
        return index + line_count

    def _match_line_count(self, lines: list[str], index: int) -> int | None:
        if self.calls_left <= 0 or index >= len(lines):
            return None
        self.calls_left -= 1
        window = "\n".join(
            line.strip()[:_LIBRARY_LINE_CHARS]
            for line in lines[index : index + _LIBRARY_WINDOW_LINES]
        )
        match = _LIBRARY_HEADER.match(window)
        if match is None or not match.group(0).strip():
            return None
        return window.count("\n", 0, match.end()) + 1


def _own_header_end(lines: list[str], index: int) -> int | None:
    """Return the index after a header starting at lines[index], or None."""
    line = lines[index].strip()
    if len(line) > _MAX_HEADER_LINE_CHARS:
        return None
    if _ORIGINAL_MESSAGE.fullmatch(line):
        return index + 1
    if _UNDERSCORE_RULE.fullmatch(line):
        following = _next_non_blank(lines, index + 1)
        if following is not None and _FROM_LINE.match(lines[following]):
            return following + 1
        return None
    if _FROM_LINE.match(lines[index]):
        return _header_block_end(lines, index)
    return _attribution_end(lines, index)


def _header_block_end(lines: list[str], index: int) -> int | None:
    # A "From:" line starts a block when two more labels follow within five lines,
    # which leaves room for a From line that wraps.
    # NOTE: a forwarded message has the same block, so only the note above it stays.
    label_lines = [
        position
        for position in range(index + 1, min(index + 6, len(lines)))
        if _LABEL_LINE.match(lines[position])
    ]
    if len(label_lines) < 2:
        return None
    return label_lines[-1] + 1


def _attribution_end(lines: list[str], index: int) -> int | None:
    line = lines[index].strip()
    if _is_attribution(line):
        return index + 1
    if index + 1 >= len(lines):
        return None
    following = lines[index + 1].strip()
    if (
        following.startswith(">")
        or len(following) > _MAX_HEADER_LINE_CHARS
        or _is_attribution(following)
    ):
        return None
    if _is_attribution(f"{line} {following}"):
        return index + 2
    return None


def _is_attribution(line: str) -> bool:
    return (
        line.endswith(":")
        and _DIGIT.search(line) is not None
        and _ATTRIBUTION.fullmatch(line) is not None
    )


def _next_non_blank(lines: list[str], start: int) -> int | None:
    for position in range(start, min(start + 3, len(lines))):
        if lines[position].strip():
            return position
    return None


def _is_followed_by_quote(lines: list[str], end: int) -> bool:
    for line in lines[end : end + _QUOTE_LOOKAHEAD_LINES]:
        stripped = line.strip()
        if stripped:
            return stripped.startswith(">")
    return False


def _drop_trailing_history(lines: list[str], attributions: set[int]) -> list[str]:
    """Drop the quote blocks, attributions, rules and blank lines at the end."""
    end = len(lines)
    while end > 0:
        stripped = lines[end - 1].strip()
        # Quoted and blank lines make up long quotes, so they skip the full check.
        if stripped and stripped[0] != ">" and _is_text(lines, end - 1, attributions):
            break
        end -= 1
    return lines[:end]


def _drop_bottom_posted_quote(lines: list[str], attributions: set[int]) -> list[str]:
    """Drop a single quote block that sits above the whole answer.

    Quote blocks between answers stay, because inline answers need their
    questions. A single quote block with nothing but its attribution above it
    and the answer below is bottom-posted history, so it goes.
    """
    first_quote = next((i for i, line in enumerate(lines) if _is_quoted(line)), None)
    if first_quote is None:
        return lines
    if any(_is_text(lines, i, attributions) for i in range(first_quote)):
        return lines
    answer = next(
        (i for i in range(first_quote, len(lines)) if _is_text(lines, i, attributions)),
        None,
    )
    if answer is None:
        return lines
    if any(_is_quoted(line) for line in lines[answer:]):
        return lines
    return lines[answer:]


def _is_text(lines: list[str], index: int, attributions: set[int]) -> bool:
    """Return True for a line of the builder's own text."""
    stripped = lines[index].strip()
    if not stripped or stripped.startswith(">") or index in attributions:
        return False
    return stripped[0] not in "-_=*" or _RULE_LINE.fullmatch(stripped) is None


def _html_to_text(html: str, *, remove_quotes: bool) -> str:
    declaration = _XML_DECLARATION.match(html)
    if declaration is not None:
        html = html[declaration.end() :]
    if not html.strip():
        return ""
    root = lxml.html.document_fromstring(html)
    if remove_quotes:
        _remove_quote_containers(root)
    # The strict profile does not indent nested <div>s, so lines keep their layout.
    # NOTE: link targets are dropped and only the link text stays.
    config = ParserConfig(css=CSS_PROFILES["strict"])
    return _normalize_newlines(Inscriptis(root, config).get_text())


def _remove_quote_containers(root: lxml.html.HtmlElement) -> None:
    # NOTE: answers typed inside a quote container are removed with it. Most clients
    # also send a text part, and extract_reply prefers that part over the HTML.
    for element in _HTML_QUOTES(root):
        if element.getparent() is not None:
            element.drop_tree()
    starts = _HTML_HISTORY_STARTS(root)
    if starts:
        _remove_from(starts[0])


def _remove_from(element: lxml.html.HtmlElement) -> None:
    """Remove `element` and everything after it in document order."""
    parent = element.getparent()
    if parent is None:
        return
    node = element
    while node.getparent() is not None:
        for sibling in list(node.itersiblings()):
            node.getparent().remove(sibling)
        node.tail = None
        node = node.getparent()
    parent.remove(element)
