"""Where the daemon keeps its files in ``state_dir``: light enough for ``status``.

Commands that only read what the daemon wrote (``status``, ``history``, ``outbox``)
import this module, not ``app.py`` or ``daemon.py``, so they start without loading the
engine (Jinja2, APScheduler, paho's client) they never use.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig

DB_NAME = "gateway.db"
PID_FILE = "things-gateway.pid"


def database_path(config: GatewayConfig) -> Path:
    """Where the outbox / local log lives."""
    return config.gateway.resolved_state_dir() / DB_NAME


def pid_file(config: GatewayConfig) -> Path:
    """Where the running daemon writes its process id."""
    return config.gateway.resolved_state_dir() / PID_FILE
