"""scripts/install-pi.sh in --destdir mode: files, idempotence, uninstall (no systemd needed)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-pi.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "/venv/" not in str(p) and "/opt/" not in str(p)
    }


def test_install_is_complete_idempotent_and_uninstalls(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    first = run("--destdir", str(dest), "--prefix", "/opt/tg", "--skip-pip")
    assert first.returncode == 0, first.stderr
    assert (dest / "opt/tg/bin/python").exists()
    unit = (dest / "etc/systemd/system/things-gateway.service").read_text()
    assert "ExecStart=/opt/tg/bin/things-gateway run -c /etc/things-gateway/gateway.toml" in unit
    assert "/opt/things-gateway" not in unit
    device = (dest / "etc/systemd/system/things-gateway-device@.service").read_text()
    assert "ExecStart=/opt/tg/bin/things-device run" in device
    config = dest / "etc/things-gateway/gateway.toml"
    assert config.read_text() == (ROOT / "config/gateway.example.toml").read_text()
    credentials = dest / "etc/things-gateway/credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    assert (dest / "etc/things-gateway/devices").is_dir()
    assert "would run: systemctl daemon-reload" in first.stdout
    assert "would run: systemctl enable things-gateway.service" in first.stdout

    config.write_text("# edited by the user\n")
    before = snapshot(dest)
    second = run("--destdir", str(dest), "--prefix", "/opt/tg", "--skip-pip")
    assert second.returncode == 0, second.stderr
    assert snapshot(dest) == before  # nothing changed, the user's config kept
    assert "kept your" in second.stdout

    gone = run("--destdir", str(dest), "--prefix", "/opt/tg", "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not (dest / "etc/systemd/system/things-gateway.service").exists()
    assert not (dest / "opt/tg").exists()
    assert config.read_text() == "# edited by the user\n"  # config survives uninstall
    purge = run("--destdir", str(dest), "--prefix", "/opt/tg", "--uninstall", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not (dest / "etc/things-gateway").exists()


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    bad = run("--frobnicate")
    assert bad.returncode == 2
    assert "unknown option --frobnicate" in bad.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", *map(str, sorted((ROOT / "scripts").glob("*.sh")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
