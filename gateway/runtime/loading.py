"""Loading a config to run it: the file's shape and the engine's checks, in one pass.

:func:`gateway.config.load_config` checks the shape of a file (the config package
imports nothing else of the gateway); these wrappers add :data:`ENGINE_CHECKS`, so a
bad condition, cron line or template is a config error like any other, reported with
its path.  ``check-config``, ``run``, ``reload``, ``preview`` and the demo load
through here.
"""

from __future__ import annotations

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
