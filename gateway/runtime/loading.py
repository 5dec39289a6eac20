"""Loading a config to run it: the file's shape and the engine's checks, in one pass.

:func:`gateway.config.load_config` checks the shape of a file (the config package
imports nothing else of the gateway); these wrappers add :data:`ENGINE_CHECKS`, so a
bad condition, cron line or template is a config error like any other, reported with
its path.  ``check-config``, ``run``, ``reload``, ``preview`` and the demo load
through here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway import config as _config
from gateway.config import GatewayConfig
from gateway.rules.checks import ENGINE_CHECKS


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    missing_secrets: list[str] | None = None,
) -> GatewayConfig:
    """Read and validate a config file completely; ConfigError lists every problem.

    ``missing_secrets``: see :func:`gateway.config.validate_config`.
    """
    return _config.load_config(
        path, overrides=overrides, checks=ENGINE_CHECKS, missing_secrets=missing_secrets
    )


def validate_config(data: Mapping[str, Any]) -> GatewayConfig:
    """Validate an already-parsed config mapping completely (plus env overrides)."""
    return _config.validate_config(data, checks=ENGINE_CHECKS)


def state_dir_problem(path: Path) -> tuple[str, bool] | None:
    """Why the daemon could not write ``path`` (its state_dir), or None.

    ``(message, certain)``: ``certain`` is False when only this user lacks the right
    (``check-config`` run by someone other than the service's user): a warning there,
    an error for ``run``.  A missing folder is fine when it can be created.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder, so {path} cannot be created", True
    verb = "write to" if probe == path else f"create {path} in"
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return f"cannot {verb} {probe}: read-only file system", True
    if not os.access(probe, os.W_OK | os.X_OK):
        mine = os.geteuid() in (0, probe.stat().st_uid)
        return f"cannot {verb} {probe}: permission denied", mine
    return None
