"""The package layout: old import paths, leaf packages, engine checks, docs that match the tree.

The layer contracts themselves are checked by import-linter (``lint-imports`` in
``.ci/run``, contracts in ``pyproject.toml``); these tests check what a static import
graph cannot see: what a fresh interpreter really loads, and what old imports do.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gateway import _moved
from gateway.config import ConfigError, validate_config
from gateway.rules.checks import ENGINE_CHECKS
from gateway.runtime import loading

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent.name for p in (ROOT / "gateway").glob("*/__init__.py"))


def loaded_by(statement: str) -> set[str]:
    """The gateway modules a fresh interpreter has loaded after ``statement``."""
    code = (
        f"{statement}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MOVED_MODULES.items()))
def test_a_moved_module_is_its_new_module_under_the_old_name(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"^{re.escape(old)} moved to {re.escape(new)}$"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new
    assert module.__spec__ is not None
    assert module.__spec__.name == new  # the alias did not take over the real module's spec


@pytest.mark.parametrize(("package", "target"), sorted(_moved.MOVED_NAMES.items()))
def test_a_package_forwards_the_names_of_the_module_it_replaced(package: str, target: str) -> None:
    module = importlib.import_module(target)
    public = [n for n, v in vars(module).items() if getattr(v, "__module__", None) == target]
    assert public, f"{target} defines no class or function to forward"
    name = public[0]
    pkg = importlib.import_module(package)
    vars(pkg).pop(name, None)
    with pytest.warns(DeprecationWarning, match=rf"{package}\.{name} moved to {target}\.{name}"):
        assert getattr(pkg, name) is getattr(module, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(pkg, name) is getattr(module, name)  # warned once, then plain
    with pytest.raises(ImportError, match="cannot import name 'no_such_name'"):
        exec(f"from {package} import no_such_name", {})


def test_submodules_are_not_forwarded() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from gateway.rules import expr

    assert expr.__name__ == "gateway.rules.expr"


def test_the_config_package_loads_nothing_else_of_the_gateway() -> None:
    loaded = loaded_by("import gateway.config")
    assert {m for m in loaded if not m.startswith("gateway.config")} == {
        "gateway",
        "gateway._moved",
    }


def test_publishers_and_the_engine_never_load_the_runtime() -> None:
    loaded = loaded_by(
        "import gateway.publishers, gateway.rules.runner, gateway.rules.triggers, "
        "gateway.rules.checks, gateway.ingest.mqtt, gateway.outbox.delivery, gateway.state.history"
    )
    above = ("gateway.runtime", "gateway.cli", "gateway.demo")
    assert not {m for m in loaded if m.startswith(above)}
    assert "gateway.rules.runner" in loaded  # the statement did import the engine


BAD_RULES = """
[[sensors]]
id = "t"
topic = "a/b"

[[rules]]
id = "r"
cron = "0 25 * * *"
text = "{{ nosuch }}"
publish_to = ["log"]

[[rules]]
id = "w"
when = "t >"
quiet_hours = "25:00-01:00"
text = "x"
publish_to = ["log"]

[[publishers]]
id = "log"
type = "console"
"""


def test_the_shape_alone_passes_what_only_the_engine_can_judge() -> None:
    import tomllib

    data = tomllib.loads(BAD_RULES)
    config = validate_config(data)  # no checks: types, ranges and references only
    assert [r.id for r in config.rules] == ["r", "w"]
    with pytest.raises(ConfigError) as caught:
        validate_config(data, checks=ENGINE_CHECKS)
    assert caught.value.errors == [
        "rules[0].cron: invalid cron: Error validating expression '25': "
        "the last value (25) is higher than the maximum value (23)",
        "rules[1].when: unexpected end of condition",
        "rules[1].quiet_hours: hours must be 0-23 and minutes 0-59",
        # in the same run (issue #13 item 6), though the rule's cron is broken:
        "rules[0].text: unknown name 'nosuch' (not a sensor id or now/gateway/rule/family)",
    ]


def test_the_runtime_loader_reports_template_and_sensor_problems_with_their_paths(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        BAD_RULES.replace('cron = "0 25 * * *"', 'every = "1h"')
        .replace('when = "t >"', 'when = "t > 1 and u < 2"')
        .replace('quiet_hours = "25:00-01:00"', 'quiet_hours = "23:00-07:00"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        loading.load_config(path)
    assert caught.value.errors == [
        "rules[1].when: unknown sensor 'u'",
        "rules[0].text: unknown name 'nosuch' (not a sensor id or now/gateway/rule/family)",
    ]


def layout_block(readme: str) -> str:
    match = re.search(r"^## Layout\n.*?```\n(.*?)```", readme, re.S | re.M)
    assert match, "README has no Layout section"
    return match.group(1)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_in_the_readme_layout_and_architecture(package: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert f"{package}/" in layout_block(readme)
    assert f"gateway/{package}/" in architecture


def test_every_file_architecture_names_exists() -> None:
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:gateway|devices|tests)/[\w/.-]+\.(?:py|toml))`", architecture))
    assert len(named) > 20
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_module_is_in_architecture() -> None:
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [
        p.relative_to(ROOT / "gateway").as_posix()
        for p in (ROOT / "gateway").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    ]
    missing = sorted(m for m in modules if Path(m).name not in architecture)
    assert not missing, f"modules ARCHITECTURE.md does not mention: {missing}"
