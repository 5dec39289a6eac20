"""Issue 14.5: a retained reading delivered on subscribe is not a fresh one.

Its time comes from the payload when it carries one (Tasmota ``Time``, zigbee2mqtt
``last_seen``, a ``time_field``); otherwise its age is unknown: stale, no ``.age``,
not counted in the windows.  Real mosquitto, real ingest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.demo.broker import Broker
from gateway.state.store import UNKNOWN_TIME
from tests.gwutil import publish, wait_until
from tests.test_ingest_broker import Running, make_config


def test_retained_readings_keep_their_own_time_or_none(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    t = mqtt_topic
    two_hours_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    local = two_hours_ago.astimezone(make_config(broker.port, tmp_path, "").gateway.tz)
    retained = [
        (f"{t}/tele/pool/SENSOR", json.dumps({"Time": local.strftime("%Y-%m-%dT%H:%M:%S"),
                                               "DS18B20": {"Temperature": 24.5}})),
        (f"{t}/z2m/bath", json.dumps({"temperature": 21.5,
                                      "last_seen": int(two_hours_ago.timestamp() * 1000)})),
        (f"{t}/meter", json.dumps({"v": 7.0, "at": two_hours_ago.isoformat()})),
        (f"{t}/plain", "12.5"),
    ]  # fmt: skip
    sensors = f"""
[[sensors]]
id = "pool"
topic = "{t}/tele/pool/SENSOR"
format = "tasmota"
field = "DS18B20.Temperature"
expire_after = "1h"

[[sensors]]
id = "bath"
topic = "{t}/z2m/bath"
format = "zigbee2mqtt"
field = "temperature"
expire_after = "1h"

[[sensors]]
id = "meter"
topic = "{t}/meter"
format = "json"
field = "v"
time_field = "at"
expire_after = "3h"

[[sensors]]
id = "plain"
topic = "{t}/plain"
"""
    publish(broker, retained, retain=True)
    gw = Running(make_config(broker.port, tmp_path, sensors), tmp_path / "gw")
    try:
        gw.wait_ready()
        for sensor in ("pool", "bath", "meter", "plain"):
            wait_until(lambda s=sensor: gw.state.get(s))
        now = datetime.now(UTC)
        for sensor in ("pool", "bath", "meter"):
            snap = gw.state.get(sensor)
            assert snap is not None
            assert snap.at == two_hours_ago, sensor  # the device's time, not arrival's
        assert gw.state.is_stale("pool", now)  # 2 h old, expire_after 1 h
        assert gw.state.is_stale("bath", now)
        assert not gw.state.is_stale("meter", now)  # 2 h old, expire_after 3 h
        plain = gw.state.get("plain")
        assert plain is not None
        assert (plain.value, plain.at) == (12.5, UNKNOWN_TIME)
        assert gw.state.is_stale("plain", now)  # unknown age: never fresh
        assert gw.state.age("plain", now) is None
        # not counted in the windows or the per-minute history
        assert "plain" not in {s for s, _ in gw.state.take_minutes(include_current=True)}
        publish(broker, [(f"{t}/plain", "13")])  # a live reading: fresh
        wait_until(lambda: gw.values("plain")[-1:] == [13.0])
        assert not gw.state.is_stale("plain", datetime.now(UTC))
    finally:
        gw.stop()
        publish(broker, [(topic, b"") for topic, _ in retained], retain=True)
