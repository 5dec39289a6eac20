"""Config checks a user meets in the first hour: templates, statistics names, one pass."""

from __future__ import annotations

import signal
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.compose.composer import Composer
from gateway.config import ConfigError
from gateway.demo.broker import Broker
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.gwutil import archive_posts, base_config, cli, start_gateway, wait_until

SENSOR_AND_ARCHIVE = """
[[sensors]]
id = "washer_power"
topic = "home/washer/power"
unit = "W"

[[publishers]]
id = "archive"
type = "file"
"""


def rule(text: str, extra: str = "") -> str:
    """A config with one rule whose text is ``text``."""
    return (
        SENSOR_AND_ARCHIVE
        + f"""
[[rules]]
id = "washer"
every = "1h"
text = '''{text}'''
publish_to = ["archive"]
"""
        + extra
    )


def problems(toml: str) -> list[str]:
    """The config error lines of a config (none: it is valid)."""
    try:
        validate_config(tomllib.loads(toml))
    except ConfigError as exc:
        return exc.errors
    return []


def test_unknown_filters_and_tests_are_config_errors_with_their_path() -> None:
    assert problems(rule("{{ now | tme }} {{ washer_power is foo }}")) == [
        "rules[0].text: unknown filter 'tme' (line 1)",
        "rules[0].text: unknown test 'foo' (line 1)",
    ]
    assert problems(rule("{{ now | time }} {{ washer_power.value is number }}")) == []


def test_unknown_filter_in_an_alt_text_names_that_field() -> None:
    toml = rule(
        "ok",
        '[[cameras]]\nid = "cam"\nsource = "mqtt"\ntopic = "cam"\n',
    ).replace(
        'publish_to = ["archive"]',
        'publish_to = ["archive"]\nimages = [{ camera = "cam", alt = "{{ now | tim }}" }]',
    )
    assert problems(toml) == ["rules[0].images[0].alt: unknown filter 'tim' (line 1)"]


def test_sensor_attributes_are_checked_against_the_configured_windows() -> None:
    assert problems(rule("{{ washer_power.max_1h }} {{ washer_power['min_24h'] }}")) == []
    lines = problems(rule("{{ washer_power.max_7d }} {{ washer_power.maximum }}"))
    assert [line.split(";")[0] for line in lines] == [
        "rules[0].text: sensor 'washer_power' has no attribute 'max_7d' (line 1)",
        "rules[0].text: sensor 'washer_power' has no attribute 'maximum' (line 1)",
    ]
    assert "max_1h, max_24h" in lines[0]
    six_hours = rule("{{ washer_power.max_6h }} {{ washer_power.mean_24h }}").replace(
        'unit = "W"', 'unit = "W"\nwindows = ["6h"]'
    )
    assert [line.split(";")[0] for line in problems(six_hours)] == [
        "rules[0].text: sensor 'washer_power' has no attribute 'mean_24h' (line 1)"
    ]


def test_every_window_statistic_renders(tmp_path: Path) -> None:
    config = validate_config(
        tomllib.loads(
            rule(
                "{{ washer_power.max_1h }} {{ washer_power.min_1h }} {{ washer_power.mean_1h }}"
                " {{ washer_power.max_24h }} {{ washer_power.max_1d }} {{ washer_power.min_90m }}",
                '[state]\nwindows = ["1h", "90m", "24h"]\n',
            )
        )
    )
    state = StateStore(windows=config.state.windows)
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    for minutes, watts in ((300, 2000.0), (80, 50.0), (30, 10.0), (5, 30.0)):
        state.record("washer_power", watts, "W", now - timedelta(minutes=minutes), "t")
    composer = Composer(config, state, tmp_path)
    post = composer.compose(config.rule("washer"), now)
    assert post.text == "30 W 10 W 20 W 2000 W 2000 W 10 W"  # like the sensor renders
    view = composer.context(config.rule("washer"), now)["washer_power"]
    assert view.max_24h - view.min_90m == 1990  # still numbers


def test_check_config_and_run_exit_78_on_a_bad_template(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n' + rule("{{ now | tme }}"), encoding="utf-8"
    )
    for command in ("check-config", "run"):
        result = cli(command, "-c", str(path))
        assert result.returncode == 78, (command, result.stderr)
        assert "rules[0].text: unknown filter 'tme' (line 1)" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sighup_with_a_bad_template_keeps_the_old_config_posting(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = tmp_path / "gw.toml"
    good = base_config(broker, state) + rule("Power {{ washer_power }}").replace(
        'every = "1h"', 'every = "1s"'
    )
    path.write_text(good, encoding="utf-8")
    gateway = start_gateway(path)
    try:
        wait_until(lambda: archive_posts(state), timeout=20)
        path.write_text(good.replace("{{ washer_power }}", "{{ now | tme }}"), encoding="utf-8")
        gateway.send_signal(signal.SIGHUP)
        count = len(archive_posts(state))
        wait_until(lambda: len(archive_posts(state)) > count + 2, timeout=20)
        assert gateway.poll() is None
        reload = cli("reload", "-c", str(path))
        assert reload.returncode == 78
        assert "rules[0].text: unknown filter 'tme'" in reload.stderr
        assert gateway.poll() is None
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert "reload: rules[0].text: unknown filter 'tme' (line 1)" in err
    assert "still running on the previous config" in err
    assert "Traceback" not in err
    assert all(p["text"].startswith("Power") for p in archive_posts(state))


MANY_PROBLEMS = """
[gateway]
bogus = 1

[mqtt]
port = "x"

[[sensors]]
id = "water"
topic = "pool/water"

[[sensors]]
id = "air"

[[rules]]
id = "warm"
when = "water > "
text = "{{ water }} {{ air }} {{ nosuch }} {{ now | tme }}"
publish_to = ["archive", "nowhere"]

[[rules]]
id = "fine"
every = "1h"
text = "{{ air.max_7d }}"
publish_to = ["nowhere2"]

[[rules]]
id = "late"
every = "soon"
text = "ok"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "hook"
type = "webhook"
url = "ftp://nope"
"""


def test_every_problem_is_reported_in_one_run() -> None:
    lines = [line.split(";")[0] for line in problems(MANY_PROBLEMS)]
    assert sorted(lines) == sorted(
        [
            "gateway.bogus: unknown key",
            "mqtt.port: Input should be a valid integer, unable to parse string as an integer",
            "sensors[1].topic: Field required",
            "rules[0].when: unexpected end of condition",
            "rules[2].every: invalid duration 'soon': use a number and a unit (ms, s, m, h, d, w)",
            "publishers[1].url: Value error, must start with http:// or https://",
            # ...and, from the same run, what only the whole file shows:
            "rules[0].publish_to[1]: no publisher with id 'nowhere'",
            "rules[1].publish_to[0]: no publisher with id 'nowhere2'",
            "rules[0].text: unknown filter 'tme' (line 1)",
            "rules[0].text: unknown name 'nosuch' (not a sensor id or now/gateway/rule/family)",
            "rules[1].text: sensor 'air' has no attribute 'max_7d' (line 1)",
        ]
    )


def test_an_empty_config_has_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("", encoding="utf-8")
    for command in ("check-config", "run"):
        result = cli(command, "-c", str(path))
        assert result.returncode == 78, (command, result.stdout, result.stderr)
        assert "no [[sensors]], [[cameras]], [[rules]] or [[publishers]]: nothing to do" in (
            result.stderr
        )


def test_a_config_without_rules_is_valid_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(SENSOR_AND_ARCHIVE, encoding="utf-8")
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK — 1 sensors, 0 cameras, 0 rules, 1 publishers" in result.stdout
    assert "warning: no [[rules]]: this gateway posts nothing" in result.stderr
