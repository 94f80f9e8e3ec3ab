"""Tests for cutting quoted history and signatures from email replies."""

from __future__ import annotations

import logging
import time

import pytest

from gateway import reply_text
from gateway.reply_text import extract_reply

# A guard against catastrophic backtracking, which takes minutes on 2 MB, not a
# speed target: extract_reply normally needs well under a second (see bench/).
# CPU time is measured, so other load on the machine does not count.
MAX_CPU_SECONDS_PER_2_MB = 20.0
TWO_MB = 2_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Hi,\n"
            "\n"
            "It is still blank after clearing the cache.\n"
            "\n"
            "Thanks,\n"
            "Ada\n"
            "\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
            "\n"
            "> Could you clear the browser cache and try again?\n"
            ">\n"
            "> Support\n",
            "Hi,\n\nIt is still blank after clearing the cache.\n\nThanks,\nAda",
            id="en-gmail",
        ),
        pytest.param(
            "It is still blank after clearing the cache.\n"
            "\n"
            "On Dec 3, 2026, at 10:15, Support <support@localhost> wrote:\n"
            "\n"
            "> Could you clear the browser cache and try again?\n",
            "It is still blank after clearing the cache.",
            id="en-apple-mail",
        ),
        pytest.param(
            "Die Seite bleibt auch nach dem Leeren des Caches leer.\n"
            "\n"
            "Viele Grüße\n"
            "Jonas\n"
            "\n"
            "Am Do., 3. Dez. 2026 um 10:15 Uhr schrieb Support <support@localhost>:\n"
            "\n"
            "> Könnten Sie bitte den Browser-Cache leeren und es erneut versuchen?\n",
            "Die Seite bleibt auch nach dem Leeren des Caches leer.\n\n"
            "Viele Grüße\nJonas",
            id="de-gmail",
        ),
        pytest.param(
            "Die Seite bleibt leer.\n"
            "\n"
            "Am 03.12.26 um 10:15 schrieb Support:\n"
            "> Könnten Sie bitte den Browser-Cache leeren?\n",
            "Die Seite bleibt leer.",
            id="de-thunderbird",
        ),
        pytest.param(
            "La page reste blanche, même après avoir vidé le cache.\n"
            "\n"
            "Cordialement,\n"
            "Claire\n"
            "\n"
            "Le jeu. 3 déc. 2026 à 10:15, Support <support@localhost> a écrit\u00a0:\n"
            "\n"
            "> Pourriez-vous vider le cache du navigateur et réessayer ?\n",
            "La page reste blanche, même après avoir vidé le cache.\n\n"
            "Cordialement,\nClaire",
            id="fr-gmail",
        ),
        pytest.param(
            "Le 03/12/2026 à 10:15, Support a écrit :\n"
            "> Pourriez-vous vider le cache du navigateur et réessayer ?\n"
            ">\n"
            "> -- \n"
            "> Support\n"
            "\n"
            "La page reste blanche, même après avoir vidé le cache.\n"
            "\n"
            "Claire\n",
            "La page reste blanche, même après avoir vidé le cache.\n\nClaire",
            id="fr-thunderbird-bottom-posted",
        ),
        pytest.param(
            "La página sigue en blanco después de borrar la caché.\n"
            "\n"
            "Saludos,\n"
            "Lucía\n"
            "\n"
            "El jue, 3 dic 2026 a las 10:15, Support (<support@localhost>) escribió:\n"
            "\n"
            "> ¿Podría borrar la caché del navegador e intentarlo de nuevo?\n",
            "La página sigue en blanco después de borrar la caché.\n\nSaludos,\nLucía",
            id="es-gmail",
        ),
        pytest.param(
            "La página sigue en blanco.\n"
            "\n"
            "El 3 dic 2026, a las 10:15, Support <support@localhost> escribió:\n"
            "\n"
            "> ¿Podría borrar la caché del navegador?\n",
            "La página sigue en blanco.",
            id="es-apple-mail",
        ),
        pytest.param(
            "De pagina blijft leeg, ook na het legen van de cache.\n"
            "\n"
            "Met vriendelijke groet,\n"
            "Daan\n"
            "\n"
            "Op do 3 dec 2026 om 10:15 schreef Support <support@localhost>:\n"
            "\n"
            "> Kunt u de cache van de browser legen en het opnieuw proberen?\n",
            "De pagina blijft leeg, ook na het legen van de cache.\n\n"
            "Met vriendelijke groet,\nDaan",
            id="nl-gmail",
        ),
        pytest.param(
            "De pagina blijft leeg.\n"
            "\n"
            "Op 3 dec. 2026, om 10:15 heeft Support <support@localhost> het volgende "
            "geschreven:\n"
            "\n"
            "> Kunt u de cache van de browser legen?\n",
            "De pagina blijft leeg.",
            id="nl-apple-mail",
        ),
        pytest.param(
            "Siden er stadig tom, efter at jeg har ryddet cachen.\n"
            "\n"
            "Med venlig hilsen\n"
            "Freja\n"
            "\n"
            "Den tor. 3. dec. 2026 kl. 10.15 skrev Support <support@localhost>:\n"
            "\n"
            "> Kan du rydde browserens cache og prøve igen?\n",
            "Siden er stadig tom, efter at jeg har ryddet cachen.\n\n"
            "Med venlig hilsen\nFreja",
            id="da-gmail",
        ),
        pytest.param(
            "Sidan är fortfarande tom efter att jag rensat cachen.\n"
            "\n"
            "Mvh\n"
            "Elsa\n"
            "\n"
            "Den tors 3 dec. 2026 kl 10:15 skrev Support <support@localhost>:\n"
            "\n"
            "> Kan du rensa webbläsarens cache och försöka igen?\n",
            "Sidan är fortfarande tom efter att jag rensat cachen.\n\nMvh\nElsa",
            id="sv-gmail",
        ),
        pytest.param(
            "Sidan är fortfarande tom.\n"
            "\n"
            "3 dec. 2026 kl. 10:15 skrev Support <support@localhost>:\n"
            "\n"
            "> Kan du rensa webbläsarens cache?\n",
            "Sidan är fortfarande tom.",
            id="sv-apple-mail",
        ),
        pytest.param(
            "Siden er fortsatt tom etter at jeg tømte hurtigbufferen.\n"
            "\n"
            "Hilsen\n"
            "Ingrid\n"
            "\n"
            "Den tor. 3. des. 2026 kl. 10:15 skrev Support <support@localhost>:\n"
            "\n"
            "> Kan du tømme nettleserens hurtigbuffer og prøve igjen?\n",
            "Siden er fortsatt tom etter at jeg tømte hurtigbufferen.\n\n"
            "Hilsen\nIngrid",
            id="no-gmail",
        ),
        pytest.param(
            "A página continua em branco depois de limpar o cache.\n"
            "\n"
            "Obrigado,\n"
            "João\n"
            "\n"
            "Em qui., 3 de dez. de 2026 às 10:15, Support <support@localhost> "
            "escreveu:\n"
            "\n"
            "> Pode limpar o cache do navegador e tentar novamente?\n",
            "A página continua em branco depois de limpar o cache.\n\nObrigado,\nJoão",
            id="pt-gmail",
        ),
        pytest.param(
            "A página continua em branco.\n"
            "\n"
            "No dia 3 de dez. de 2026, às 10:15, Support <support@localhost> "
            "escreveu:\n"
            "\n"
            "> Pode limpar o cache do navegador?\n",
            "A página continua em branco.",
            id="pt-apple-mail",
        ),
    ],
)
def test_attribution_line_is_cut(text: str, expected: str) -> None:
    assert extract_reply(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "It is still blank after clearing the cache.\n"
            "\n"
            "________________________________\n"
            "From: Support <support@localhost>\n"
            "Sent: Thursday, December 3, 2026 10:15\n"
            "To: Ada Lovelace <ada@example.com>\n"
            "Subject: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Could you clear the browser cache and try again?\n",
            "It is still blank after clearing the cache.",
            id="en-outlook-web",
        ),
        pytest.param(
            "It is still blank after clearing the cache.\n"
            "\n"
            "-----Original Message-----\n"
            "From: Support <support@localhost> \n"
            "Sent: Thursday, December 3, 2026 10:15 AM\n"
            "To: Ada Lovelace <ada@example.com>\n"
            "Subject: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Could you clear the browser cache and try again?\n",
            "It is still blank after clearing the cache.",
            id="en-outlook-desktop",
        ),
        pytest.param(
            "It is still blank after clearing the cache.\n"
            "\n"
            "From: Support <support@localhost>\n"
            "Date: Thursday, 3 December 2026 at 10:15\n"
            "To: Ada Lovelace <ada@example.com>\n"
            "Subject: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Could you clear the browser cache and try again?\n",
            "It is still blank after clearing the cache.",
            id="en-outlook-mac",
        ),
        pytest.param(
            "Die Seite bleibt auch nach dem Leeren des Caches leer.\n"
            "\n"
            "Viele Grüße\n"
            "Jonas\n"
            "\n"
            "Von: Support <support@localhost> \n"
            "Gesendet: Donnerstag, 3. Dezember 2026 10:15\n"
            "An: Jonas Becker <jonas@example.com>\n"
            "Betreff: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Könnten Sie bitte den Browser-Cache leeren und es erneut versuchen?\n",
            "Die Seite bleibt auch nach dem Leeren des Caches leer.\n\n"
            "Viele Grüße\nJonas",
            id="de-outlook-desktop",
        ),
        pytest.param(
            "La page reste blanche, même après avoir vidé le cache.\n"
            "\n"
            "De\u00a0: Support <support@localhost>\n"
            "Envoyé\u00a0: jeudi 3 décembre 2026 10:15\n"
            "À\u00a0: Claire Martin <claire@example.com>\n"
            "Objet\u00a0: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Pourriez-vous vider le cache du navigateur et réessayer ?\n",
            "La page reste blanche, même après avoir vidé le cache.",
            id="fr-outlook-desktop",
        ),
        pytest.param(
            "La página sigue en blanco después de borrar la caché.\n"
            "\n"
            "-----Mensaje original-----\n"
            "De: Support <support@localhost> \n"
            "Enviado el: jueves, 3 de diciembre de 2026 10:15\n"
            "Para: Lucía García <lucia@example.com>\n"
            "Asunto: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "¿Podría borrar la caché del navegador e intentarlo de nuevo?\n",
            "La página sigue en blanco después de borrar la caché.",
            id="es-outlook-desktop",
        ),
        pytest.param(
            "De pagina blijft leeg, ook na het legen van de cache.\n"
            "\n"
            "________________________________\n"
            "Van: Support <support@localhost>\n"
            "Verzonden: donderdag 3 december 2026 10:15\n"
            "Aan: Daan de Vries <daan@example.com>\n"
            "Onderwerp: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Kunt u de cache van de browser legen en het opnieuw proberen?\n",
            "De pagina blijft leeg, ook na het legen van de cache.",
            id="nl-outlook-web",
        ),
        pytest.param(
            "Siden er stadig tom, efter at jeg har ryddet cachen.\n"
            "\n"
            "Fra: Support <support@localhost> \n"
            "Sendt: 3. december 2026 10:15\n"
            "Til: Freja Jensen <freja@example.com>\n"
            "Emne: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Kan du rydde browserens cache og prøve igen?\n",
            "Siden er stadig tom, efter at jeg har ryddet cachen.",
            id="da-outlook-desktop",
        ),
        pytest.param(
            "Sidan är fortfarande tom efter att jag rensat cachen.\n"
            "\n"
            "Från: Support <support@localhost> \n"
            "Skickat: den 3 december 2026 10:15\n"
            "Till: Elsa Lindqvist <elsa@example.com>\n"
            "Ämne: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Kan du rensa webbläsarens cache och försöka igen?\n",
            "Sidan är fortfarande tom efter att jag rensat cachen.",
            id="sv-outlook-desktop",
        ),
        pytest.param(
            "Siden er fortsatt tom etter at jeg tømte hurtigbufferen.\n"
            "\n"
            "Fra: Support <support@localhost> \n"
            "Sendt: torsdag 3. desember 2026 10:15\n"
            "Til: Ingrid Hansen <ingrid@example.com>\n"
            "Emne: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Kan du tømme nettleserens hurtigbuffer og prøve igjen?\n",
            "Siden er fortsatt tom etter at jeg tømte hurtigbufferen.",
            id="no-outlook-desktop",
        ),
        pytest.param(
            "Siden er fortsatt tom.\n"
            "\n"
            "-----Opprinnelig melding-----\n"
            "Fra: Support <support@localhost> \n"
            "Sendt: torsdag 3. desember 2026 10:15\n"
            "Til: Ingrid Hansen <ingrid@example.com>\n"
            "Emne: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Kan du tømme nettleserens hurtigbuffer?\n",
            "Siden er fortsatt tom.",
            id="no-outlook-original-message",
        ),
        pytest.param(
            "A página continua em branco depois de limpar o cache.\n"
            "\n"
            "________________________________\n"
            "De: Support <support@localhost>\n"
            "Enviado: quinta-feira, 3 de dezembro de 2026 10:15\n"
            "Para: João Silva <joao@example.com>\n"
            "Assunto: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Pode limpar o cache do navegador e tentar novamente?\n",
            "A página continua em branco depois de limpar o cache.",
            id="pt-outlook-web",
        ),
        pytest.param(
            "A página continua em branco.\n"
            "\n"
            "De: Support <support@localhost> \n"
            "Enviada: 3 de dezembro de 2026 10:15\n"
            "Para: João Silva <joao@example.com>\n"
            "Assunto: [#12] Client Portal shows a blank page after login\n"
            "\n"
            "Pode limpar o cache do navegador?\n",
            "A página continua em branco.",
            id="pt-outlook-desktop",
        ),
    ],
)
def test_outlook_header_block_is_cut(text: str, expected: str) -> None:
    assert extract_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "It is still blank.\n"
            "\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support Team <support@localhost>\n"
            "wrote:\n"
            "\n"
            "> Could you clear the browser cache and try again?\n",
            id="en-wrapped-before-wrote",
        ),
        pytest.param(
            "It is still blank.\n"
            "\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support Team via Client Portal <\n"
            "support@localhost> wrote:\n"
            "\n"
            "> Could you clear the browser cache and try again?\n",
            id="en-wrapped-inside-address",
        ),
        pytest.param(
            "It is still blank.\n"
            "\n"
            "Am Do., 3. Dez. 2026 um 10:15 Uhr schrieb Support Team <\n"
            "support@localhost>:\n"
            "\n"
            "> Könnten Sie bitte den Browser-Cache leeren?\n",
            id="de-wrapped-inside-address",
        ),
        pytest.param(
            "It is still blank.\n"
            "\n"
            "Em qui., 3 de dez. de 2026 às 10:15, Support Team <support@localhost>\n"
            "escreveu:\n"
            "\n"
            "> Pode limpar o cache do navegador?\n",
            id="pt-wrapped-before-escreveu",
        ),
    ],
)
def test_wrapped_gmail_attribution_is_cut(text: str) -> None:
    assert extract_reply(text) == "It is still blank."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "On my laptop it works.\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
            "> Could you clear the browser cache?\n",
            "On my laptop it works.",
            id="en",
        ),
        pytest.param(
            "On my laptop it works.\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support Team via Client Portal <\n"
            "support@localhost> wrote:\n"
            "> Could you clear the browser cache?\n",
            "On my laptop it works.",
            id="en-wrapped",
        ),
        pytest.param(
            "Am Montag ging es noch.\n"
            "Am Do., 3. Dez. 2026 um 10:15 Uhr schrieb Support <support@localhost>:\n"
            "> Könnten Sie bitte den Browser-Cache leeren?\n",
            "Am Montag ging es noch.",
            id="de",
        ),
        pytest.param(
            "A página continua em branco.\n"
            "Em qui., 3 de dez. de 2026 às 10:15, Support <support@localhost> "
            "escreveu:\n"
            "> Pode limpar o cache do navegador?\n",
            "A página continua em branco.",
            id="pt",
        ),
    ],
)
def test_sentence_above_attribution_is_kept(text: str, expected: str) -> None:
    assert extract_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "On the login page I wrote:\n    admin@example.com\nand nothing happened.",
            id="en",
        ),
        pytest.param("Am Ende schrieb ich:\nEs passiert nichts.", id="de"),
    ],
)
def test_sentence_without_date_before_colon_is_kept(text: str) -> None:
    assert extract_reply(text) == text


def test_inline_answers_keep_their_quotes() -> None:
    text = (
        "Hi,\n"
        "\n"
        "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
        "> Which browser do you use?\n"
        "\n"
        "Firefox 133 on Ubuntu.\n"
        "\n"
        "> Does the page stay blank in a private window?\n"
        "\n"
        "Yes, the same blank page.\n"
        "\n"
        "> Thanks,\n"
        "> Support\n"
    )

    reply = extract_reply(text)

    assert reply.startswith("Hi,\n")
    assert "Firefox 133 on Ubuntu." in reply
    assert "Yes, the same blank page." in reply
    assert "> Which browser do you use?" in reply
    assert "> Does the page stay blank in a private window?" in reply
    assert reply.endswith("Yes, the same blank page.")
    assert "> Support" not in reply


def test_bottom_posted_quote_is_cut() -> None:
    text = (
        "On 03/12/2026 10:15, Support wrote:\n"
        "> Could you clear the browser cache and try again?\n"
        ">\n"
        "> Support\n"
        "\n"
        "It is still blank after clearing the cache.\n"
    )

    assert extract_reply(text) == "It is still blank after clearing the cache."


def test_quoted_attribution_is_cut_with_its_quote() -> None:
    text = (
        "It is still blank.\n"
        "\n"
        "> On Dec 3, 2026, at 10:15, Support <support@localhost> wrote:\n"
        ">\n"
        "> Could you clear the browser cache?\n"
    )

    assert extract_reply(text) == "It is still blank."


def test_signature_after_dashes_is_cut() -> None:
    text = (
        "It is still blank after clearing the cache.\n"
        "\n"
        "-- \n"
        "Ada Lovelace\n"
        "Analytical Engines Ltd\n"
        "\n"
        "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
        "> Could you clear the browser cache?\n"
    )

    assert extract_reply(text) == "It is still blank after clearing the cache."


def test_signature_without_space_is_cut() -> None:
    text = "It is still blank.\n\n--\nAda Lovelace\n"

    assert extract_reply(text) == "It is still blank."


def test_quoted_signature_dashes_do_not_cut() -> None:
    text = (
        "> Which browser do you use?\n"
        "> -- \n"
        "> Support\n"
        "\n"
        "Firefox 133.\n"
        "\n"
        "> Does it happen in a private window?\n"
        "\n"
        "Yes.\n"
    )

    reply = extract_reply(text)

    assert "Firefox 133." in reply
    assert reply.endswith("Yes.")


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("Sent from my iPhone", id="en-iphone"),
        pytest.param("Sent from my Samsung Galaxy smartphone.", id="en-samsung"),
        pytest.param("Sent from Outlook for Android", id="en-outlook-android"),
        pytest.param("Get Outlook for iOS<https://aka.ms/o0ukef>", id="en-outlook-ios"),
        pytest.param("Von meinem iPhone gesendet", id="de-iphone"),
        pytest.param("Envoyé de mon iPhone", id="fr-iphone"),
        pytest.param("Enviado desde mi iPhone", id="es-iphone"),
        pytest.param("Verzonden vanaf mijn iPhone", id="nl-iphone"),
        pytest.param("Sendt fra min iPhone", id="da-no-iphone"),
        pytest.param("Skickat från min iPhone", id="sv-iphone"),
        pytest.param("Enviado do meu iPhone", id="pt-iphone"),
    ],
)
def test_mobile_signature_is_cut(signature: str) -> None:
    text = (
        "It is still blank.\n"
        "\n"
        f"{signature}\n"
        "\n"
        "> On Dec 3, 2026, at 10:15, Support <support@localhost> wrote:\n"
        ">\n"
        "> Could you clear the browser cache?\n"
    )

    assert extract_reply(text) == "It is still blank."


def test_mobile_signature_before_outlook_block_is_cut() -> None:
    text = (
        "It is still blank.\n"
        "\n"
        "Get Outlook for iOS<https://aka.ms/o0ukef>\n"
        "________________________________\n"
        "From: Support <support@localhost>\n"
        "Sent: Thursday, December 3, 2026 10:15:00 AM\n"
        "To: Ada Lovelace <ada@example.com>\n"
        "Subject: [#12] Client Portal shows a blank page after login\n"
        "\n"
        "Could you clear the browser cache?\n"
    )

    assert extract_reply(text) == "It is still blank."


def test_sentence_like_mobile_signature_is_kept() -> None:
    text = (
        "Sent from my iPhone, but the page is blank on my laptop as well.\n"
        "The console shows no errors.\n"
    )

    assert extract_reply(text) == text.strip()


def test_reply_of_only_quote_keeps_whole_text() -> None:
    text = (
        "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
        "> Could you clear the browser cache and try again?\n"
        "\n"
    )

    assert extract_reply(text) == text.strip()


def test_reply_of_only_header_block_keeps_whole_text() -> None:
    text = (
        "\n"
        "From: Support <support@localhost>\n"
        "Sent: Thursday, December 3, 2026 10:15 AM\n"
        "To: Ada Lovelace <ada@example.com>\n"
        "Subject: [#12] Client Portal shows a blank page after login\n"
        "\n"
        "Could you clear the browser cache?\n"
    )

    assert extract_reply(text) == text.strip()


def test_reply_without_history_is_unchanged() -> None:
    text = "Steps:\n- log in\n- open the dashboard\n\nThanks, Ada"

    assert extract_reply(text) == text


def test_blank_lines_around_reply_are_trimmed() -> None:
    text = "\n\n  \nIt is still blank.\n\n\n\n"

    assert extract_reply(text) == "It is still blank."


def test_indentation_of_pasted_code_is_kept() -> None:
    text = (
        "Here is the traceback:\n"
        "\n"
        '    File "portal/views.py", line 3, in dashboard\n'
        "      raise PermissionDenied\n"
        "\n"
        "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
        "> Could you send the traceback?\n"
    )

    assert extract_reply(text) == (
        "Here is the traceback:\n"
        "\n"
        '    File "portal/views.py", line 3, in dashboard\n'
        "      raise PermissionDenied"
    )


def test_crlf_line_ends_are_normalized() -> None:
    text = (
        "It is still blank.\r\n"
        "\r\n"
        "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\r\n"
        "> Could you clear the browser cache?\r\n"
    )

    assert extract_reply(text) == "It is still blank."


@pytest.mark.parametrize("text", ["", "  \n\n", None])
def test_empty_text_returns_empty_string(text: str | None) -> None:
    assert extract_reply(text) == ""  # type: ignore[arg-type]


GMAIL_HTML = (
    '<div dir="ltr">It is still blank after clearing the cache.<div><br></div>'
    "<div>Ada</div></div><br>"
    '<div class="gmail_quote gmail_quote_container">'
    '<div dir="ltr" class="gmail_attr">On Thu, Dec 3, 2026 at 10:15\u202fAM Support '
    '&lt;<a href="mailto:support@localhost">support@localhost</a>&gt; wrote:<br></div>'
    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
    'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
    "Could you clear the browser cache and try again?</blockquote></div>"
)

OUTLOOK_WEB_HTML = (
    "<html><head><style>p { margin: 0 }</style></head><body>"
    '<div class="elementToProof" style="font-family: Aptos; font-size: 12pt">'
    "It is still blank after clearing the cache.</div>"
    '<hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif">'
    "<b>From:</b> Support &lt;support@localhost&gt;<br>"
    "<b>Sent:</b> Thursday, December 3, 2026 10:15<br>"
    "<b>To:</b> Ada Lovelace &lt;ada@example.com&gt;<br>"
    "<b>Subject:</b> [#12] Client Portal shows a blank page after login</font>"
    "<div>&nbsp;</div></div>"
    "<div>Could you clear the browser cache and try again?</div>"
    "</body></html>"
)

OUTLOOK_DESKTOP_HTML = (
    '<html><body lang="EN-US"><div class="WordSection1">'
    '<p class="MsoNormal">It is still blank after clearing the cache.<o:p></o:p></p>'
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
    '<div><div style="border:none;border-top:solid #E1E1E1 1.0pt;'
    'padding:3.0pt 0in 0in 0in">'
    '<p class="MsoNormal"><b>From:</b> Support &lt;support@localhost&gt; <br>'
    "<b>Sent:</b> Thursday, December 3, 2026 10:15 AM<br>"
    "<b>To:</b> Ada Lovelace &lt;ada@example.com&gt;<br>"
    "<b>Subject:</b> [#12] Client Portal shows a blank page after login"
    "<o:p></o:p></p></div></div>"
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
    '<p class="MsoNormal">Could you clear the browser cache?<o:p></o:p></p>'
    "</div></body></html>"
)

APPLE_MAIL_HTML = (
    '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">'
    '</head><body dir="auto">It is still blank after clearing the cache.<div><br>'
    "<div>On Dec 3, 2026, at 10:15, Support &lt;support@localhost&gt; wrote:</div>"
    '<br><blockquote type="cite"><div>Could you clear the browser cache?</div>'
    "</blockquote></div></body></html>"
)

THUNDERBIRD_HTML = (
    "<html><body><p>It is still blank after clearing the cache.</p>"
    '<div class="moz-cite-prefix">On 03/12/2026 10:15, Support wrote:<br></div>'
    '<blockquote type="cite" cite="mid:ticket-12@localhost">'
    "Could you clear the browser cache?</blockquote>"
    '<pre class="moz-signature" cols="72">-- \nAda Lovelace</pre>'
    "</body></html>"
)

YAHOO_HTML = (
    '<html><body><div class="ydp3f1c0d2yahoo-style-wrap">'
    "<div>It is still blank after clearing the cache.</div></div>"
    '<div id="yahoo_quoted_0123456789" class="yahoo_quoted">'
    "<div>On Thursday, December 3, 2026 at 10:15:00 AM GMT+1, Support "
    "&lt;support@localhost&gt; wrote:</div><div><br></div>"
    "<div>Could you clear the browser cache?</div></div></body></html>"
)


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(GMAIL_HTML, id="gmail"),
        pytest.param(OUTLOOK_WEB_HTML, id="outlook-web-divRplyFwdMsg"),
        pytest.param(
            OUTLOOK_WEB_HTML.replace(
                '<hr style="display:inline-block;width:98%" tabindex="-1">',
                '<div id="appendonsend"></div><hr style="display:inline-block">',
            ),
            id="outlook-web-appendonsend",
        ),
        pytest.param(OUTLOOK_DESKTOP_HTML, id="outlook-desktop-separator"),
        pytest.param(
            OUTLOOK_DESKTOP_HTML.replace("#E1E1E1", "#B5C4DF"),
            id="outlook-2010-separator",
        ),
        pytest.param(APPLE_MAIL_HTML, id="apple-mail"),
        pytest.param(THUNDERBIRD_HTML, id="thunderbird"),
        pytest.param(YAHOO_HTML, id="yahoo"),
    ],
)
def test_html_quote_container_is_removed(html: str) -> None:
    reply = extract_reply("", html)

    assert reply.startswith("It is still blank after clearing the cache.")
    assert "Could you clear the browser cache" not in reply
    assert "support@localhost" not in reply


def test_gmail_html_keeps_lines_of_reply() -> None:
    assert extract_reply("", GMAIL_HTML) == (
        "It is still blank after clearing the cache.\n\nAda"
    )


def test_html_signature_after_dashes_is_cut() -> None:
    assert extract_reply("", THUNDERBIRD_HTML) == (
        "It is still blank after clearing the cache."
    )


def test_html_of_only_quote_keeps_whole_text() -> None:
    html = (
        '<div class="gmail_quote"><div class="gmail_attr">On Thu, Dec 3, 2026 at '
        "10:15 AM Support &lt;support@localhost&gt; wrote:</div>"
        '<blockquote class="gmail_quote">Could you clear the browser cache?'
        "</blockquote></div>"
    )

    reply = extract_reply("", html)

    assert "On Thu, Dec 3, 2026" in reply
    assert "Could you clear the browser cache?" in reply


def test_text_part_is_preferred_over_html() -> None:
    text = "Plain text reply.\n\n> Could you clear the browser cache?\n"

    assert extract_reply(text, GMAIL_HTML) == "Plain text reply."


def test_html_is_used_when_text_is_blank() -> None:
    reply = extract_reply(" \r\n", GMAIL_HTML)

    assert reply.startswith("It is still blank after clearing the cache.")


def test_html_with_xml_declaration_is_converted() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?><p>It is still blank.</p>'

    assert extract_reply("", html) == "It is still blank."


def test_internal_error_keeps_whole_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(text: str) -> str:
        raise RuntimeError("pattern failed")

    monkeypatch.setattr(reply_text, "_reply_from_text", fail)
    text = "It is still blank.\r\n\r\n> Could you clear the browser cache?\r\n"

    with caplog.at_level(logging.WARNING, logger="gateway.reply_text"):
        reply = extract_reply(text)

    assert reply == "It is still blank.\n\n> Could you clear the browser cache?"
    assert "keeping the whole text" in caplog.text


def test_unparsable_html_falls_back_to_stripped_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(html: str, *, remove_quotes: bool) -> str:
        raise ValueError("unparsable")

    monkeypatch.setattr(reply_text, "_html_to_text", fail)

    reply = extract_reply("", "<p>It is still blank &amp; empty.</p>")

    assert reply == "It is still blank & empty."


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "It is still blank after clearing the cache, even in a private window.\n"
            * (TWO_MB // 72)
            + "\nOn Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
            + "> Could you clear the browser cache?\n",
            id="prose-then-quote",
        ),
        pytest.param(
            "It is still blank.\n\n"
            "On Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
            + "> Could you clear the browser cache and try again?\n" * (TWO_MB // 52),
            id="long-quote",
        ),
        pytest.param("On " + "x " * (TWO_MB // 2), id="one-line-starting-with-on"),
        pytest.param(
            ("Am " + "schrieb x " * 29 + "\n") * (TWO_MB // 300),
            id="lines-like-german-attribution",
        ),
        pytest.param("\n" * TWO_MB, id="empty-lines"),
        pytest.param("> x\n" * (TWO_MB // 4), id="quoted-lines"),
        pytest.param("From: x\nTo: y\n" * (TWO_MB // 14), id="header-label-lines"),
    ],
)
def test_2_mb_input_returns_quickly(text: str) -> None:
    started = time.process_time()

    reply = extract_reply(text)

    cpu_seconds = time.process_time() - started
    assert isinstance(reply, str)
    assert cpu_seconds < MAX_CPU_SECONDS_PER_2_MB


def test_2_mb_input_still_cuts_quote() -> None:
    prose = "It is still blank after clearing the cache, even in a private window.\n"
    text = (
        prose * (TWO_MB // len(prose))
        + "\nOn Thu, Dec 3, 2026 at 10:15 AM Support <support@localhost> wrote:\n"
        + "> Could you clear the browser cache?\n"
    )

    reply = extract_reply(text)

    assert reply.endswith("even in a private window.")
    assert "support@localhost" not in reply
