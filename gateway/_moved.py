"""Old import paths keep working after the move into packages (with a warning).

Until 0.x the gateway was a flat folder of modules.  Each flat module now lives in
the package of its concern (see ARCHITECTURE.md).  Imports written for the old
layout still work and say where the module went:

- a module that moved (``import gateway.expr``) is found by :class:`MovedModuleFinder`
  and is the *same* module object as its new home (``gateway.rules.expr``);
- a package that stands where a module stood (``from gateway.rules import RuleRunner``)
  forwards the old module's names with :func:`forward_names`.

Both warn with a :class:`DeprecationWarning` naming the new path.  Nothing here is
imported by the gateway's own code, which uses the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

MOVED_MODULES: dict[str, str] = {
    "gateway.app": "gateway.runtime.app",
    "gateway.broker": "gateway.demo.broker",
    "gateway.config_cameras": "gateway.config.cameras",
    "gateway.config_rules": "gateway.config.rules",
    "gateway.config_sections": "gateway.config.sections",
    "gateway.config_sensors": "gateway.config.sensors",
    "gateway.daemon": "gateway.runtime.daemon",
    "gateway.delivery": "gateway.outbox.delivery",
    "gateway.durations": "gateway.config.durations",
    "gateway.expr": "gateway.rules.expr",
    "gateway.filters": "gateway.compose.filters",
    "gateway.fsutil": "gateway.support.files",
    "gateway.guards": "gateway.rules.guards",
    "gateway.hass": "gateway.runtime.hass",
    "gateway.health": "gateway.runtime.health",
    "gateway.history": "gateway.state.history",
    "gateway.logutil": "gateway.runtime.logs",
    "gateway.preview": "gateway.runtime.preview",
    "gateway.redact": "gateway.config.secrets",
    "gateway.scheduler": "gateway.rules.scheduler",
    "gateway.sdnotify": "gateway.runtime.sdnotify",
    "gateway.snapshot": "gateway.state.snapshot",
    "gateway.status": "gateway.runtime.status",
    "gateway.textfit": "gateway.compose.textfit",
    "gateway.triggers": "gateway.rules.triggers",
    "gateway.windows": "gateway.state.windows",
}
"""Old flat module → the module it is now."""

MOVED_NAMES: dict[str, str] = {
    "gateway.compose": "gateway.compose.composer",
    "gateway.demo": "gateway.demo.run",
    "gateway.outbox": "gateway.outbox.store",
    "gateway.rules": "gateway.rules.runner",
    "gateway.state": "gateway.state.store",
}
"""A package standing where a module stood → the module holding that module's names."""


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}", DeprecationWarning, stacklevel=3)


class _AliasLoader(importlib.abc.Loader):
    """Loads an old module name as the module it moved to."""

    def __init__(self, new: str) -> None:
        self._new = new
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The new module itself, so both names share one module object."""
        _warn(spec.name, self._new)
        module = importlib.import_module(self._new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run; give back the module's own spec, which the import system replaced."""
        module.__spec__ = self._spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`MOVED_MODULES` by their old names (asked only after the real finders)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec aliasing ``fullname`` to its new module, or None."""
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Add the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())


def forward_names(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that forwards to :data:`MOVED_NAMES`."""
    target = MOVED_NAMES[package]

    def forward(name: str) -> Any:
        if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}"):
            raise AttributeError(name)  # a dunder, or a submodule the import system loads
        module = importlib.import_module(target)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        _warn(f"{package}.{name}", f"{target}.{name}")
        setattr(sys.modules[package], name, value)  # once: later lookups find it directly
        return value

    return forward
