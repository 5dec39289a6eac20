"""Secrets: ``${NAME}`` references in the config, and keeping them out of text.

Any string of the config may be ``"${NAME}"``: :func:`lookup_secret` reads it from
the environment variable ``NAME``, else from ``$CREDENTIALS_DIRECTORY/NAME``
(systemd's ``LoadCredential=``).

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

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CREDENTIAL_FOLDER_ID = "gw"
"""The unit loads /etc/things-gateway/credentials/ as credentials named ``gw_<file>``."""

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


_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_refs(data: Any, path: str, errors: list[str]) -> Any:
    """Replace ``${NAME}`` in every string; record names that cannot be found."""
    if isinstance(data, str):

        def lookup(match: re.Match[str]) -> str:
            value = lookup_secret(match.group(1))
            if value is None:
                errors.append(
                    f"{path}: ${{{match.group(1)}}} is not set "
                    "(no environment variable and no $CREDENTIALS_DIRECTORY file of that name)"
                )
                return ""
            return value

        return _REF.sub(lookup, data)
    if isinstance(data, Mapping):
        return {
            k: resolve_refs(v, f"{path}.{k}" if path else str(k), errors) for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [resolve_refs(v, f"{path}[{i}]", errors) for i, v in enumerate(data)]
    return data


def lookup_secret(name: str) -> str | None:
    """A value from the environment, else from ``$CREDENTIALS_DIRECTORY/name``.

    A value read from a credential file is masked in log lines from then on
    (:func:`redact`); one from the environment is masked when it lands in a
    secret field, since ``${NAME}`` may also name plain settings (a site name).
    """
    if name in os.environ:
        return os.environ[name]
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        # "gw_NAME": a whole folder loaded with LoadCredential=gw:/etc/things-gateway/credentials
        for candidate in (name, f"{CREDENTIAL_FOLDER_ID}_{name}"):
            path = Path(cred_dir) / candidate
            if path.is_file():
                value = path.read_text(encoding="utf-8").rstrip("\n")
                register_secret(value)
                return value
    return None
