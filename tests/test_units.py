"""The systemd units: `systemd-analyze verify` silent, exposure <= 2.0, settings we rely on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name, encoding="utf-8")
    return parser


@needs_systemd_analyze
def test_units_verify_silently_and_gateway_exposure_is_at_most_2() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "check-units.sh"), str(Path(sys.prefix))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    exposure = float(result.stdout.split("exposure: ")[1].split()[0])
    assert exposure <= 2.0


@needs_systemd_analyze
def test_check_fails_on_any_verify_output(tmp_path: Path) -> None:
    # The check must not be fooled by verify's exit code 0 on warnings.
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/bin/true\nNoSuchSetting=1\n", encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False
    )
    assert "NoSuchSetting" in result.stdout + result.stderr


def test_gateway_unit_settings() -> None:
    service = unit("things-gateway.service")["Service"]
    assert service["Type"] == "notify"
    assert service["RestartPreventExitStatus"] == "78"
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) >= 30
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["LoadCredential"] == "gw:/etc/things-gateway/credentials"
    assert service["StateDirectory"] == "things-gateway"
    assert service["SupplementaryGroups"] == "video"
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service["MemoryMax"] == "256M"


def test_device_unit_runs_the_instance_config() -> None:
    service = unit("things-gateway-device@.service")["Service"]
    assert service["ExecStart"].endswith("things-device run -c /etc/things-gateway/devices/%i.toml")
    assert service["SupplementaryGroups"] == "video"
