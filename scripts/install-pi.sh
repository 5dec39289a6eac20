#!/usr/bin/env bash
# Install things-gateway as a systemd service (Raspberry Pi OS Bookworm, Debian 12).
# Idempotent: run it again to upgrade; your config and data are never overwritten.
#
#   sudo scripts/install-pi.sh              install / upgrade, enable and start
#   sudo scripts/install-pi.sh --uninstall  stop, disable, remove units and venv
#                                           (keeps /etc/things-gateway and the data)
#   sudo scripts/install-pi.sh --uninstall --purge   also delete config and data
#
# Options:
#   --prefix DIR     venv location (default /opt/things-gateway); the units are
#                    rewritten to run DIR/bin/things-gateway
#   --destdir DIR    install into DIR instead of / (staging, tests): no root needed,
#                    systemctl is not called
#   --source SPEC    what pip installs (default: this checkout), e.g. a wheel file
#   --skip-pip       create the venv but do not pip install (staging, tests)
#   --no-start       enable the units but do not start the gateway now
set -euo pipefail

PREFIX=/opt/things-gateway
DESTDIR=
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
SKIP_PIP=0
START=1
ACTION=install
PURGE=0
CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --destdir) DESTDIR=$2; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --skip-pip) SKIP_PIP=1; shift ;;
        --no-start) START=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage 0 ;;
        *) echo "install-pi.sh: unknown option $1" >&2; usage 2 ;;
    esac
done

ETC="$DESTDIR/etc/things-gateway"
UNITS="$DESTDIR/etc/systemd/system"
VENV="$DESTDIR$PREFIX"
STATE="$DESTDIR/var/lib/things-gateway"

say() { echo "install-pi.sh: $*"; }

systemctl_() {
    if [ -n "$DESTDIR" ]; then
        say "(destdir) would run: systemctl $*"
    else
        systemctl "$@"
    fi
}

require_root() {
    if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
        echo "install-pi.sh: run as root (sudo), or use --destdir for a staging install" >&2
        exit 1
    fi
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating venv $VENV (with system site packages, for apt's picamera2)"
        python3 -m venv --system-site-packages "$VENV"
    fi
    if [ "$SKIP_PIP" -eq 0 ]; then
        say "installing $SOURCE into $VENV"
        "$VENV/bin/pip" install --quiet --upgrade "$SOURCE"
    fi
}

install_units() {
    mkdir -p "$UNITS"
    for unit in things-gateway.service things-gateway-device@.service; do
        sed "s|/opt/things-gateway|$PREFIX|g" "$CHECKOUT/systemd/$unit" >"$UNITS/$unit.tmp"
        chmod 0644 "$UNITS/$unit.tmp"
        mv "$UNITS/$unit.tmp" "$UNITS/$unit"
    done
    say "units installed in $UNITS"
}

install_config() {
    install -d -m 0755 "$ETC" "$ETC/devices"
    # Secrets: one file per secret, readable by root only; systemd hands them to the service.
    install -d -m 0700 "$ETC/credentials"
    if [ ! -e "$ETC/gateway.toml" ]; then
        install -m 0644 "$CHECKOUT/config/gateway.example.toml" "$ETC/gateway.toml"
        say "wrote $ETC/gateway.toml from the example: edit it"
    else
        say "kept your $ETC/gateway.toml"
    fi
}

config_is_valid() {
    if [ -n "$DESTDIR" ] || [ ! -x "$VENV/bin/things-gateway" ]; then
        return 1
    fi
    "$VENV/bin/things-gateway" check-config -c "$ETC/gateway.toml"
}

do_install() {
    require_root
    install_venv
    install_units
    install_config
    systemctl_ daemon-reload
    if [ "$START" -eq 1 ] && config_is_valid; then
        systemctl_ enable --now things-gateway.service
        say "running: journalctl -u things-gateway -f; things-gateway status"
    else
        systemctl_ enable things-gateway.service
        say "enabled, not started: edit $ETC/gateway.toml (secrets in $ETC/credentials/),"
        say "check it with: $PREFIX/bin/things-gateway check-config -c /etc/things-gateway/gateway.toml"
        say "then: sudo systemctl restart things-gateway"
    fi
}

do_uninstall() {
    require_root
    if [ -e "$UNITS/things-gateway.service" ]; then
        systemctl_ disable --now things-gateway.service || true
    fi
    rm -f "$UNITS/things-gateway.service" "$UNITS/things-gateway-device@.service"
    systemctl_ daemon-reload
    rm -rf "$VENV"
    if [ "$PURGE" -eq 1 ]; then
        rm -rf "$ETC" "$STATE" "$DESTDIR/var/lib/private/things-gateway"
        say "removed config and data"
    else
        say "kept $ETC and $STATE (use --purge to delete them)"
    fi
    say "uninstalled"
}

if [ "$ACTION" = install ]; then
    do_install
else
    do_uninstall
fi
