"""Config loading: every example loads; each error is one line naming its path; no secret leaks."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_duration
from gateway.rules.scheduler import crontab_days
from gateway.runtime.loading import load_config
from tests.gwutil import cli

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
[gateway]
name = "t"

[[sensors]]
id = "water_temp"
topic = "pool/temp"

[[rules]]
id = "hourly"
every = "1h"
text = "Water {{ water_temp }}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.errors


@pytest.mark.parametrize(
    "path", sorted(p for p in (ROOT / "config").rglob("*.toml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every ${NAME} the file refers to gets a stand-in value, as systemd credentials would.
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())):
        value = "https://hooks.example/t0ken" if name.endswith("URL") else "s3cret"
        monkeypatch.setenv(name, value)
    config = load_config(path)
    assert config.rules, f"{path} defines no rules"
    assert config.publishers, f"{path} defines no publishers"


def test_shipped_configs_exist() -> None:
    names = {p.name for p in (ROOT / "config").rglob("*.toml")}
    assert {"gateway.example.toml", "demo.toml"} <= names


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.mqtt.port == 1883
    assert config.mqtt.protocol == 5
    assert config.rules[0].every == timedelta(hours=1)
    assert config.gateway.timezone == "UTC"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        (45, 45),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_validation_errors_name_their_paths(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
[[sensors]]
id = "air"
format = "json"
expire_after = "soon"
colour = "red"

[[publishers]]
id = "console"
type = "console"
bogus = 1
"""
    )
    errors = errors_of(tmp_path, text)
    assert "sensors[1].topic: Field required" in errors
    assert any(e.startswith("sensors[1].expire_after: invalid duration 'soon'") for e in errors)
    assert "sensors[1].colour: unknown key" in errors
    assert "publishers[1].bogus: unknown key" in errors  # no union tag in the path


def test_unknown_publisher_type(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, MINIMAL.replace('type = "file"', 'type = "carrier-pigeon"'))
    assert len(errors) == 1
    assert errors[0].startswith("publishers[0]: ")
    assert "carrier-pigeon" in errors[0]


def test_cross_references_and_templates(tmp_path: Path) -> None:
    text = MINIMAL.replace('publish_to = ["archive"]', 'publish_to = ["archive", "nowhere"]')
    text = text.replace("Water {{ water_temp }}", "Water {{ water_tmp }} {% if %}")
    errors = errors_of(tmp_path, text)
    assert "rules[0].publish_to[1]: no publisher with id 'nowhere'" in errors
    assert any(e.startswith("rules[0].text: template syntax error on line 1") for e in errors)

    errors = errors_of(tmp_path, MINIMAL.replace("{{ water_temp }}", "{{ water_tmp }}"))
    assert errors == [
        "rules[0].text: unknown name 'water_tmp' (not a sensor id or now/gateway/rule/family)"
    ]


def test_rule_needs_exactly_one_trigger_and_valid_cron(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path, MINIMAL.replace('every = "1h"', 'every = "1h"\ncron = "0 8 * * *"')
    )
    assert errors == [
        "rules[0]: set exactly one of `every`, `cron`, `when`, `on_message` or `on_mention`"
    ]
    errors = errors_of(tmp_path, MINIMAL.replace('every = "1h"', 'cron = "0 25 * * *"'))
    assert len(errors) == 1
    assert errors[0].startswith("rules[0].cron: invalid cron:")


def test_image_needs_alt_text(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace(
            'publish_to = ["archive"]', 'images = [{ camera = "cam" }]\npublish_to = ["archive"]'
        )
        + '\n[[cameras]]\nid = "cam"\ntopic = "cam/x"\n'
    )
    assert errors_of(tmp_path, text) == ["rules[0].images[0].alt: Field required"]


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[mqtt\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (message,) = info.value.errors
    assert message.startswith(f"{path}: TOML syntax error")
    assert "line 19" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.errors == [f"{tmp_path / 'nope.toml'}: config file not found"]


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGS_GATEWAY_MQTT__HOST", "broker.example")
    monkeypatch.setenv("THINGS_GATEWAY_MQTT__PORT", "8883")
    monkeypatch.setenv("THINGS_GATEWAY_GATEWAY__NAME", "from-env")
    config = load_config(write(tmp_path, MINIMAL + '\n[mqtt]\nhost = "file.example"\nqos = 0\n'))
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.qos) == ("broker.example", 8883, 0)
    assert config.gateway.name == "from-env"


def test_bad_env_override_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGS_GATEWAY_MQTT__PORT", "not-a-port")
    errors = errors_of(tmp_path, MINIMAL)
    assert len(errors) == 1
    assert errors[0].startswith("mqtt.port: ")


def test_secret_refs_from_env_and_credentials_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "MQTT_PASSWORD").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("MQTT_USER", "gw")
    text = MINIMAL + '\n[mqtt]\nusername = "${MQTT_USER}"\npassword = "${MQTT_PASSWORD}"\n'
    config = load_config(write(tmp_path, text))
    assert config.mqtt.username == "gw"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "from-credentials"
    assert "from-credentials" not in repr(config)


def test_unresolved_secret_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    errors = errors_of(tmp_path, MINIMAL + '\n[mqtt]\npassword = "${NOT_SET_ANYWHERE}"\n')
    assert len(errors) == 1
    assert errors[0].startswith("mqtt.password: ${NOT_SET_ANYWHERE} is not set")


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = cli("check-config", "-c", str(write(tmp_path, MINIMAL)))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = cli(
        "check-config",
        "-c",
        str(write(tmp_path, MINIMAL + "\n[[sensors]]\nid = 'x'\n", "bad.toml")),
    )
    assert bad.returncode == 78
    assert "sensors[1].topic: Field required" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = cli("check-config", "-c", str(tmp_path / "missing.toml"))
    assert missing.returncode == 78
    assert "config file not found" in missing.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    env = {**os.environ, "THINGS_GATEWAY_CONFIG": str(write(tmp_path, MINIMAL))}
    result = cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert str(tmp_path) in result.stdout


def test_secret_never_printed(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    env = {**os.environ, "MQTT_PASSWORD": secret}
    text = MINIMAL + '\n[mqtt]\npassword = "${MQTT_PASSWORD}"\nport = 0\nkeepalive = "x"\n'
    result = cli("check-config", "-c", str(write(tmp_path, text)), env=env)
    assert result.returncode == 78
    assert "mqtt.port" in result.stderr
    assert secret not in result.stdout + result.stderr
    # A secret in the wrong place (an invalid value) is not echoed either.
    env["THINGS_GATEWAY_MQTT__PORT"] = secret
    result = cli("check-config", "-c", str(write(tmp_path, MINIMAL)), env=env)
    assert result.returncode == 78
    assert secret not in result.stdout + result.stderr


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("things-gateway 0.")


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("MON", "mon"),
    ],
)
def test_crontab_weekdays_follow_crontab_numbering(field: str, names: str) -> None:
    assert crontab_days(field) == names


def test_missing_optional_dependency_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.publishers.x import XConfig

    monkeypatch.setattr(XConfig, "requires", (("no_such_module_for_x", "x"),))
    text = (
        MINIMAL
        + """
[[publishers]]
id = "x"
type = "x"
consumer_key = "k"
consumer_secret = "s"
access_token = "t"
access_token_secret = "ts"
"""
    )
    errors = errors_of(tmp_path, text)
    assert errors == [
        "publishers[1]: needs the 'no_such_module_for_x' package: pip install 'things-gateway[x]'"
    ]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('name = "t"', 'name = "t\\n"', "gateway.name"),
        ('id = "water_temp"', 'id = "water_temp\\n"', "sensors[0].id"),
        ('every = "1h"', 'every = "1h"\nlanguage = "en\\n"', "rules[0].language"),
        ('id = "archive"', 'id = "archive\\n"', "publishers[0].id"),
        (
            'type = "file"',
            'type = "file"\n[[publishers]]\nid = "m"\ntype = "mastodon"\n'
            'base_url = "https://m.example\\n"\naccess_token = "x"',
            "publishers[1].base_url",
        ),
    ],
)
def test_patterns_refuse_a_trailing_newline(tmp_path: Path, old: str, new: str, path: str) -> None:
    """Config patterns run on Python's re, where ``$`` would accept a trailing newline."""
    assert load_config(write(tmp_path, MINIMAL.replace(old, new.replace("\\n", ""))))
    errors = errors_of(tmp_path, MINIMAL.replace(old, new))
    assert [e for e in errors if e.startswith(f"{path}: String should match pattern")], errors


def test_every_config_pattern_is_anchored_for_python_re() -> None:
    """A new pattern ending in ``$`` (or a table not on Python's re) fails here."""
    from pydantic import BaseModel

    from gateway.config import GatewayConfig
    from gateway.config.sections import Section
    from gateway.publishers.base import PublisherConfig

    def subclasses(cls: type[BaseModel]) -> list[type[BaseModel]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    models = [GatewayConfig, *subclasses(Section), *subclasses(PublisherConfig)]
    patterns = 0
    for model in models:
        assert model.model_config.get("regex_engine") == "python-re", model
        for name, info in model.model_fields.items():
            for meta in info.metadata:
                pattern = getattr(meta, "pattern", None)
                if pattern is None:
                    continue
                patterns += 1
                assert pattern.startswith("^"), (model, name, pattern)
                assert pattern.endswith("\\Z") or not pattern.endswith("$"), (model, name)
    assert patterns >= 10  # the walk found the patterns (each model lists its own fields)


@pytest.mark.parametrize("line", ['state_dir = "var/pool"', ""])
def test_a_relative_or_default_state_dir_is_made_absolute_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    # a relative state_dir broke the archive's file:// URIs (issue #13, item 1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    text = MINIMAL.replace('name = "t"', f'name = "t"\n{line}')
    config = load_config(write(tmp_path, text))
    expected = tmp_path / ("var/pool" if line else "var")
    assert config.gateway.state_dir == expected
    assert config.gateway.resolved_state_dir() == expected
    monkeypatch.chdir("/")  # a later chdir does not move it
    assert config.gateway.resolved_state_dir() == expected
