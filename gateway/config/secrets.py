"""Keeping secrets out of log lines and error messages.

Secrets reach text by routes no one writes on purpose: a camera tool's stderr
quotes its ``rtsp://user:password@`` URL, a snapshot URL carries
``?user=admin&password=...`` (Reolink's API does), an exception repeats what it
was given.  So every log line the gateway writes passes through :func:`redact`,
and so does every camera error message, which masks

- the user-info part of any URL (``scheme://***@host``);
- the values of query parameters named like secrets (``password=***``);
- every value read from a ``${NAME}`` reference or given to a secret field
  (registered by the config loader with :func:`register_secret`).
"""

from __future__ import annotations

import re
import threading

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked by value: masking "1" would garble every number."""

_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|pass|token|access_token|api_?key|key|secret|auth"
    r"|signature|sig)=)[^&;#\s\"'<>]+"
)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (in this process)."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with URL credentials, secret query values and registered secrets masked."""
    if "://" in text:
        text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
