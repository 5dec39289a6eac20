"""The README's "Deploy on a Raspberry Pi" steps, run as a new user would (item 5 of #13).

The CLI runs from a shell there, not under the service: no ``$CREDENTIALS_DIRECTORY``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.gwutil import cli

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAMES = (
    "MQTT_PASSWORD",
    "CAMERA_PASSWORD",
    "APPRISE_URL",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_TOKEN",
    "MASTODON_TOKEN",
    "BLUESKY_APP_PASSWORD",
    "X_CONSUMER_KEY",
    "X_CONSUMER_SECRET",
    "X_ACCESS_TOKEN",
    "X_ACCESS_TOKEN_SECRET",
)


def shell_env(**extra: str) -> dict[str, str]:
    """A login shell's environment: no credentials directory, no secrets exported."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.pop("THINGS_GATEWAY_CONFIG", None)
    return env | extra


def install(dest: Path) -> Path:
    """``scripts/install-pi.sh --destdir DEST --no-start``; the installed config's path."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/install-pi.sh"), "--destdir", str(dest), "--no-start",
         "--skip-pip"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dest / "etc/things-gateway/gateway.toml"


def test_the_readme_pi_steps_work_from_a_shell(tmp_path: Path) -> None:
    config = install(tmp_path / "root")
    state = tmp_path / "var/lib/things-gateway"
    # sudoedit: state_dir is already /var/lib/things-gateway; here, a folder of the test's
    text = config.read_text(encoding="utf-8")
    assert 'state_dir = "/var/lib/things-gateway"' in text
    config.write_text(text.replace('"/var/lib/things-gateway"', f'"{state}"', 1))
    credentials = config.parent / "credentials"
    (credentials / "MQTT_PASSWORD").write_text("s3cret-pw", encoding="utf-8")
    (credentials / "MQTT_PASSWORD").chmod(0o600)

    check = cli("check-config", "-c", str(config), env=shell_env())
    assert check.returncode == 0, check.stderr
    assert "OK —" in check.stdout
    assert "MQTT_PASSWORD" not in check.stderr  # found beside the config
    assert "s3cret-pw" not in check.stdout + check.stderr

    status = cli("status", "-c", str(config), env=shell_env())
    assert status.returncode == 3, status.stderr  # not running: no config error
    assert "not running" in status.stdout
    assert "invalid config" not in status.stderr
    for command in ("history", "outbox"):
        result = cli(command, "-c", str(config), env=shell_env())
        assert result.returncode == 0, (command, result.stderr)


def test_read_only_commands_need_no_secret_and_check_config_warns(tmp_path: Path) -> None:
    config = install(tmp_path / "root")  # no MQTT_PASSWORD file yet
    for command in ("status", "history", "outbox"):
        result = cli(command, "-c", str(config), env=shell_env())
        assert result.returncode in (0, 3), (command, result.stderr)
        assert "MQTT_PASSWORD" not in result.stderr
    check = cli("check-config", "-c", str(config), env=shell_env())
    assert check.returncode == 0, check.stderr
    assert "warning: mqtt.password: ${MQTT_PASSWORD} is not set" in check.stderr


def test_under_the_service_a_missing_secret_is_an_error(tmp_path: Path) -> None:
    config = install(tmp_path / "root")
    service = tmp_path / "credentials"  # what LoadCredential= hands the daemon
    service.mkdir()
    env = shell_env(CREDENTIALS_DIRECTORY=str(service))
    check = cli("check-config", "-c", str(config), env=env)
    assert check.returncode == 78
    assert "mqtt.password: ${MQTT_PASSWORD} is not set" in check.stderr
    (service / "gw_MQTT_PASSWORD").write_text("s3cret-pw", encoding="utf-8")
    assert cli("check-config", "-c", str(config), env=env).returncode == 0


def test_a_disabled_publisher_needs_no_secret(tmp_path: Path) -> None:
    service = tmp_path / "credentials"
    service.mkdir()
    env = shell_env(CREDENTIALS_DIRECTORY=str(service))
    pool = cli("check-config", "-c", str(ROOT / "config/examples/pool.toml"), env=env)
    assert pool.returncode == 0, pool.stderr
    assert "MASTODON_TOKEN" not in pool.stderr
