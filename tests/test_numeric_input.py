"""Numeric sensors take numbers only (issue 15, item 13).

Text such as ``off`` or ``<script>`` in a json/tasmota/zigbee2mqtt field of a numeric
sensor, and ``1_000``, ``١٢`` or ``12 garbage`` in the number format, are counted
rejections; a unit suffix that is the sensor's own (``21.5°C``) is accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ingest.decoders import DecodeError, decode_payload
from tests.test_ingest_handle import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.mark.parametrize(
    ("topic", "payload", "sensor"),
    [
        ("zigbee2mqtt/bath", '{"temperature": "off"}', "bath_temp"),
        ("zigbee2mqtt/bath", '{"temperature": "<script>alert(1)</script>"}', "bath_temp"),
        ("zigbee2mqtt/bath", '{"temperature": true}', "bath_temp"),
        ("tele/plug/SENSOR", '{"ENERGY": {"Power": "off"}}', "power_plug"),
        ("tele/pool/SENSOR", '{"DS18B20": {"Temperature": "<b>hot</b>"}}', "pool"),
        ("home/k/temperature", "1_000", "temp_k"),
        ("home/k/temperature", "١٢", "temp_k"),
        ("home/k/temperature", "12 garbage", "temp_k"),
        ("home/k/temperature", "21.5 °F", "temp_k"),  # not the sensor's unit
        ("tank/level/raw", "0x10", "tank"),
    ],
)
def test_numeric_sensors_refuse_text_counted(
    harness: Harness, topic: str, payload: str, sensor: str
) -> None:
    harness.send(topic, payload)
    counters = harness.state.counters()[sensor]
    assert counters.rejected == 1
    assert harness.state.get(sensor) is None


@pytest.mark.parametrize(
    ("topic", "payload", "sensor", "value"),
    [
        ("home/k/temperature", "21.5°C", "temp_k", 21.5),
        ("home/k/temperature", " 21.5 °C ", "temp_k", 21.5),
        ("home/k/temperature", "-3e1", "temp_k", -30.0),
        ("zigbee2mqtt/bath", '{"temperature": "22.5"}', "bath_temp", 22.5),
        ("zigbee2mqtt/bath", '{"temperature": "22.5°C"}', "bath_temp", 22.5),
        ("data/x", '{"a":[{"b":"off"}]}', "deep", "off"),  # a json sensor with no unit: text ok
    ],
)
def test_numbers_and_matching_unit_suffix_accepted(
    harness: Harness, topic: str, payload: str, sensor: str, value: object
) -> None:
    harness.send(topic, payload)
    assert harness.value(sensor) == value


@pytest.mark.parametrize("text", ["1_000", "١٢", "12 garbage", "12abc", "٣.٥", "1e", "+"])
def test_number_format_refuses_non_ascii_and_trailing_text(text: str) -> None:
    with pytest.raises(DecodeError, match="not a number"):
        decode_payload(text.encode(), "number", None, unit="°C")


def test_number_format_unit_suffix_must_be_the_sensors() -> None:
    assert decode_payload("21.5°C".encode(), "number", None, unit="°C") == 21.5
    assert decode_payload(b"40 %", "number", None, unit="%") == 40.0
    with pytest.raises(DecodeError):
        decode_payload(b"40 %", "number", None, unit="W")
