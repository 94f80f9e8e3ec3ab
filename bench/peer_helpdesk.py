"""The peer baseline: django-helpdesk's email-to-ticket function on SQLite.

Run with the peer's own virtualenv (``bench/.peer-venv/bin/python``), never the
gateway's. Usage: ``peer_helpdesk.py CORPUS_DIR STATE_DIR WARMUP REPS PER_REP``.
CORPUS_DIR contains ``NNNNNN.eml`` files, read in name order: the first WARMUP
files warm up, then REPS repetitions of PER_REP files each are timed. The
function under test is ``helpdesk.email.extract_email_metadata``, which parses
the message, creates the ticket and its follow-up in the database and queues
the acknowledgement emails (to Django's in-memory mail backend here). Prints
one JSON object on stdout.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from pathlib import Path

# The URL configuration: helpdesk builds ticket links by reversing its own
# namespace while it composes the acknowledgement email.
URLS = types.ModuleType("bench_peer_urls")


def configure(state_dir: Path) -> None:
    """Set up Django with helpdesk, SQLite in STATE_DIR and in-memory email."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-secret",
        USE_TZ=True,
        TIME_ZONE="UTC",
        SITE_ID=1,
        ALLOWED_HOSTS=["127.0.0.1"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.sites",
            "django.contrib.messages",
            "django.contrib.humanize",
            "django.contrib.admin",
            "rest_framework",
            "helpdesk",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(state_dir / "helpdesk.sqlite3"),
            }
        },
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }],
        MIDDLEWARE=[],
        ROOT_URLCONF=URLS,
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        DEFAULT_FROM_EMAIL="support@localhost",
        MEDIA_ROOT=str(state_dir / "media"),
        LOGIN_URL="/login/",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        # Teams need the pinax-teams app, which the email path does not use.
        HELPDESK_TEAMS_MODE_ENABLED=False,
    )
    django.setup()
    from django.core.management import call_command
    from django.urls import include, path

    URLS.urlpatterns = [path("", include("helpdesk.urls", namespace="helpdesk"))]

    call_command("migrate", verbosity=0, interactive=False)


def main(argv: list[str]) -> None:
    """Time the email-to-ticket function over the corpus and print JSON."""
    corpus_dir, state_dir = Path(argv[1]), Path(argv[2])
    warmup, reps, per_rep = int(argv[3]), int(argv[4]), int(argv[5])
    state_dir.mkdir(parents=True, exist_ok=True)
    configure(state_dir)

    import django
    from django.core import mail
    from django.db import connection
    from helpdesk.email import extract_email_metadata
    from helpdesk.models import Queue

    queue = Queue.objects.create(title="Support", slug="support",
                                 email_address="support@localhost",
                                 allow_email_submission=True)
    logger = logging.getLogger("bench.peer")
    logger.setLevel(logging.WARNING)
    files = sorted(corpus_dir.glob("*.eml"))
    needed = warmup + reps * per_rep
    if len(files) < needed:
        sys.exit(f"{corpus_dir} has {len(files)} messages; {needed} are needed")
    texts = [path.read_bytes().decode("utf-8", "replace") for path in files[:needed]]

    for text in texts[:warmup]:
        extract_email_metadata(text, queue, logger)
    repetitions = []
    offset = warmup
    for _ in range(reps):
        seconds = []
        started = time.perf_counter()
        for text in texts[offset:offset + per_rep]:
            one = time.perf_counter()
            extract_email_metadata(text, queue, logger)
            seconds.append(time.perf_counter() - one)
            mail.outbox.clear()
        wall = time.perf_counter() - started
        repetitions.append({"wall_seconds": wall, "seconds": seconds})
        offset += per_rep

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    from importlib.metadata import version

    print(json.dumps({
        "django": django.get_version(),
        "helpdesk": version("django-helpdesk"),
        "sqlite": f"journal_mode={journal}, synchronous={synchronous}",
        "tickets": __import__("helpdesk.models").models.Ticket.objects.count(),
        "repetitions": repetitions,
    }))


if __name__ == "__main__":
    main(sys.argv)
