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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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


_credentials_beside: ContextVar[Path | None] = ContextVar("gateway_config_dir", default=None)


@contextmanager
def credentials_beside(config_file: Path | None) -> Iterator[None]:
    """Inside this block, also look for secrets in ``<config dir>/credentials/``."""
    token = _credentials_beside.set(config_file.parent / "credentials" if config_file else None)
    try:
        yield
    finally:
        _credentials_beside.reset(token)


def resolve_refs(
    data: Any,
    path: str,
    errors: list[str],
    quiet: list[str] | None = None,
    found: dict[str, str] | None = None,
) -> Any:
    """Replace ``${NAME}`` in every string; record names that cannot be found.

    A table with ``enabled = false`` (a publisher kept for later) needs no secret:
    what it cannot resolve goes to ``quiet`` instead of ``errors``.  Each value read
    goes into ``found`` (value -> name), so problems about the field it landed in
    can be told without the value (:func:`mask_read_values`).
    """
    if isinstance(data, str):

        def lookup(match: re.Match[str]) -> str:
            value = lookup_secret(match.group(1))
            if value is not None and found is not None:
                found[value] = match.group(1)
            if value is None:
                errors.append(
                    f"{path}: ${{{match.group(1)}}} is not set (no environment variable and "
                    f"no file of that name in {_credential_places()})"
                )
                return ""
            return value

        return _REF.sub(lookup, data)
    if isinstance(data, Mapping):
        if data.get("enabled") is False:
            errors = quiet if quiet is not None else []
        return {
            k: resolve_refs(v, f"{path}.{k}" if path else str(k), errors, quiet, found)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [resolve_refs(v, f"{path}[{i}]", errors, quiet, found) for i, v in enumerate(data)]
    return data


def mask_read_values(text: str, found: Mapping[str, str]) -> str:
    """``text`` with every value read from a ``${NAME}`` shown as ``${NAME}`` again.

    A config problem quotes the value it refused (``invalid duration '...'``); when
    that value came from ``${MASTODON_TOKEN}``, the line must name the reference,
    not print the token, even before the secret fields are known.
    """
    for value in sorted(found, key=len, reverse=True):
        if len(value) >= MIN_SECRET_LENGTH and value in text:
            text = text.replace(value, f"${{{found[value]}}}")
    return text


def _credential_places() -> str:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        return "$CREDENTIALS_DIRECTORY"
    beside = _credentials_beside.get()
    return f"{beside}/" if beside else "$CREDENTIALS_DIRECTORY"


def _read_credential(folder: Path, name: str) -> str | None:
    # "gw_NAME": a whole folder loaded with LoadCredential=gw:/etc/things-gateway/credentials
    for candidate in (name, f"{CREDENTIAL_FOLDER_ID}_{name}"):
        try:
            value = (folder / candidate).read_text(encoding="utf-8").rstrip("\n")
        except OSError:  # absent, or a root-only folder read by another user
            continue
        register_secret(value)
        return value
    return None


def lookup_secret(name: str) -> str | None:
    """A value from the environment, else from ``$CREDENTIALS_DIRECTORY/name``.

    Outside the service (no ``$CREDENTIALS_DIRECTORY``), the installed layout's
    folder beside the config file (``/etc/things-gateway/credentials/name``, see
    :func:`credentials_beside`) is read instead, so ``sudo things-gateway status``
    finds what the unit's ``LoadCredential=`` hands the daemon.

    A value read from a credential file is masked in log lines from then on
    (:func:`redact`); one from the environment is masked when it lands in a
    secret field, since ``${NAME}`` may also name plain settings (a site name).
    """
    if name in os.environ:
        return os.environ[name]
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    folder = Path(cred_dir) if cred_dir else _credentials_beside.get()
    return _read_credential(folder, name) if folder else None
