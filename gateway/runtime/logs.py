"""Logging set-up: the line format for the journal or a terminal, secrets masked.

Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp, because the
journal adds its own, and start with a syslog priority prefix (``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug) that journald turns into the
entry's level, so ``journalctl -p warning`` works; on a terminal lines carry a
timestamp with its UTC offset (``2026-12-04 21:15:03+0000``) and the level name
instead.  Either way secrets are masked
(:mod:`gateway.config.secrets`).
"""

from __future__ import annotations

import logging
import os
import sys

from gateway.config.secrets import redact


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0..7) journald understands for a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class RedactingFormatter(logging.Formatter):
    """A formatter whose lines (tracebacks included) pass through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record with secrets masked."""
        return redact(super().format(record))


class JournalFormatter(RedactingFormatter):
    """``<priority>name: message``; every line of a traceback gets the prefix too."""

    def format(self, record: logging.LogRecord) -> str:
        """Prefix each line so journald keeps multi-line records at their level."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def make_formatter(journal: bool | None = None) -> logging.Formatter:
    """The formatter for the journal (``$JOURNAL_STREAM`` set) or for a terminal."""
    if journal is None:
        journal = bool(os.environ.get("JOURNAL_STREAM"))
    if journal:
        return JournalFormatter("%(name)s: %(message)s")
    # The UTC offset: the machine's zone may differ from the gateway's, which the
    # scheduler's lines use; "21:15:03+0000" is unambiguous.
    return RedactingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S%z"
    )


def setup_logging(level: str = "info") -> None:
    """Log to stderr in a format that suits a terminal or the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These log every job run or state change at INFO; only their problems matter here.
    for chatty in ("apscheduler", "amqtt", "transitions"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    # HTTP libraries log every request's full URL, and a webhook or Apprise URL is a secret.
    for revealing in ("httpx", "httpcore", "urllib3", "apprise"):
        logging.getLogger(revealing).setLevel(logging.WARNING)
