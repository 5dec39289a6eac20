#!/usr/bin/env bash
# Check the systemd units: `systemd-analyze verify` must print nothing at all (it exits
# 0 on warnings), and the gateway unit's `systemd-analyze security` exposure must be at
# most 2.0.  The units name /opt/things-gateway; here that prefix is rewritten to
# PREFIX (default: this checkout's .venv), exactly as install-pi.sh --prefix does, so
# the commands they run exist.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-$PWD/.venv}
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for unit in systemd/*.service; do
    sed "s|/opt/things-gateway|$PREFIX|g" "$unit" >"$work/$(basename "$unit")"
done
cp "$work/things-gateway-device@.service" "$work/things-gateway-device@example.service"

status=0
for unit in "$work/things-gateway.service" "$work/things-gateway-device@example.service"; do
    output=$(systemd-analyze verify "$unit" 2>&1) || true
    if [ -n "$output" ]; then
        echo "systemd-analyze verify $(basename "$unit"):" >&2
        echo "$output" >&2
        status=1
    fi
done

report=$(systemd-analyze security --offline=true "$work/things-gateway.service" 2>&1 || true)
exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for things-gateway.service: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ]; then
    echo "systemd-analyze security: no exposure figure in:" >&2
    echo "$report" >&2
    exit 1
fi
echo "things-gateway.service exposure: $exposure (max $MAX_EXPOSURE)"
if ! awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    echo "exposure $exposure is above $MAX_EXPOSURE" >&2
    status=1
fi
exit $status
