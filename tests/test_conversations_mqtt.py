"""Questions over MQTT, through the real daemon and a real mosquitto broker: a
question on ``<prefix>/<name>/ask`` gets one answer on ``.../answer``; bad questions
are counted, logged and dropped while the daemon goes on; a question asked twice,
or retained and seen again after a restart, is answered once."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.conversations.mqttask import AskError, parse_ask
from gateway.demo.broker import Broker
from tests.conftest import Subscription
from tests.gwutil import base_config, cli, publish, start_gateway, wait_until
from tests.poolexample import camera_agent, pool_config, solid_jpeg

PREFIX = "things-gateway"


def config_text(broker: Broker, state: Path, name: str, topic: str) -> str:
    return (
        base_config(broker, state, name=name)
        + f"""
[[sensors]]
id = "water_temp"
topic = "{topic}/water"
unit = "°C"

[conversations]
enabled = true
cooldown = "0s"

[[replies]]
id = "temperature"
match = ["warm", "temp", "температура"]
text = "The water is {{{{ water_temp }}}}. You asked: {{{{ mention.quote }}}}"

[[replies]]
id = "help"
fallback = true
text = "Ask me how warm the water is."

[[publishers]]
id = "console"
type = "console"
"""
    )


@pytest.fixture
def daemon(
    broker: Broker,
    tmp_path: Path,
    mqtt_topic: str,
    mqtt_subscribe: Callable[..., Subscription],
) -> Iterator[dict[str, Any]]:
    """A running daemon (conversations on), a subscription to its topics, and how to
    restart it."""
    name = f"pool{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(broker, tmp_path / "state", name, mqtt_topic), encoding="utf-8")
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    procs: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        online = len(watch.by_topic().get(f"{PREFIX}/{name}/status", []))
        proc = start_gateway(config)
        procs.append(proc)
        watch.wait_for(
            lambda msgs: (
                sum(m.topic.endswith("/status") and m.payload == b"online" for m in msgs) > online
            ),
            timeout=20,
        )
        return proc

    # retained: the daemon may not have subscribed yet when "online" arrives
    publish(broker, [(f"{mqtt_topic}/water", "24.5")], retain=True)
    start()
    yield {"name": name, "config": config, "watch": watch, "procs": procs, "start": start}
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    publish(broker, [(f"{mqtt_topic}/water", b"")], retain=True)


@contextlib.contextmanager
def running(config: Path, watch: Subscription) -> Iterator[list[str]]:
    """A daemon on ``config``, up once its ``online`` came; yields a list that holds
    its stderr lines once it has stopped (SIGTERM)."""
    proc = start_gateway(config)
    stderr: list[str] = []
    try:
        watch.wait_for(lambda msgs: any(m.payload == b"online" for m in msgs), timeout=20)
        yield stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr += proc.communicate(timeout=20)[1].splitlines()


def answers(watch: Subscription, name: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in watch.by_topic().get(f"{PREFIX}/{name}/answer", [])]


def ask(broker: Broker, name: str, payload: object, *, retain: bool = False) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    publish(broker, [(f"{PREFIX}/{name}/ask", data)], retain=retain)


def ask_until_heard(
    broker: Broker, name: str, watch: Subscription, payload: dict[str, str]
) -> None:
    """Ask until the daemon answers or records the question: "online" is published just
    before the daemon subscribes, so a first question can come too early.  Asking
    again with the same id is safe: a question is answered once per id."""
    for _ in range(20):
        ask(broker, name, payload)
        watch.wait_for(
            lambda msgs: any(
                m.topic.endswith("/answer") and json.loads(m.payload)["id"] == payload["id"]
                for m in msgs
            ),
            timeout=1.0,
        )
        if any(a["id"] == payload["id"] for a in answers(watch, name)):
            return
    raise AssertionError(f"question {payload['id']} never answered")


def test_a_question_gets_one_answer(broker: Broker, daemon: dict[str, Any]) -> None:
    name, watch = daemon["name"], daemon["watch"]
    ask_until_heard(
        broker, name, watch, {"id": "q1", "from": "kiosk", "text": "How warm is the pool?"}
    )
    (answer,) = answers(watch, name)
    assert answer["id"] == "q1"
    assert answer["to"] == "kiosk"
    assert answer["text"] == "The water is 24.5 °C. You asked: How warm is the pool?"
    assert answer["images"] == []
    # any script; no match gives the fallback
    ask(broker, name, {"id": "q2", "from": "kiosk", "text": "Какая температура воды?"})
    ask(broker, name, {"id": "q3", "from": "kiosk", "text": "Is it open?"})
    wait_until(lambda: len(answers(watch, name)) == 3)
    texts = {a["id"]: a["text"] for a in answers(watch, name)}
    assert texts["q2"].startswith("The water is 24.5 °C")
    assert texts["q3"] == "Ask me how warm the water is."
    # the same question again (a redelivery): no second answer
    ask(broker, name, {"id": "q1", "from": "kiosk", "text": "How warm is the pool?"})
    ask(broker, name, {"id": "q4", "from": "kiosk", "text": "temperature?"})
    wait_until(lambda: any(a["id"] == "q4" for a in answers(watch, name)))
    assert sorted(a["id"] for a in answers(watch, name)) == ["q1", "q2", "q3", "q4"]
    listed = cli("mentions", "--json", "-c", str(daemon["config"]))
    assert listed.returncode == 0, listed.stderr
    seen = {m["id"]: m for m in json.loads(listed.stdout)}
    assert set(seen) == {"q1", "q2", "q3", "q4"}
    assert {m["publisher"] for m in seen.values()} == {"ask"}
    assert {m["outcome"] for m in seen.values()} == {"answered"}
    status = cli("status", "-c", str(daemon["config"]))
    assert "mentions (last 24 h): 4 seen, 4 answered, 0 skipped" in status.stdout, status.stdout


def test_bad_questions_are_dropped_and_the_daemon_goes_on(
    broker: Broker, daemon: dict[str, Any]
) -> None:
    name, watch = daemon["name"], daemon["watch"]
    for bad in (
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'{"id": 5, "text": "temp?"}',
        b'{"id": "x", "text": ""}',
        b'{"id": "x"}',
        json.dumps({"id": "x" * 65, "text": "temp?"}).encode(),
        json.dumps({"id": "big", "text": "t" * 5000}).encode(),
        b"[" * 100_000,
        b"{{ 7*7 }}",
    ):
        ask(broker, name, bad)
    ask_until_heard(
        broker, name, watch, {"id": "ok", "from": "kiosk", "text": "{{ 7*7 }} how warm? @everyone"}
    )
    (answer,) = answers(watch, name)
    assert answer["id"] == "ok"
    # the asker's words are data: never rendered, and no live mention is echoed
    assert "49" not in answer["text"]
    assert "@everyone" not in answer["text"]
    proc = daemon["procs"][-1]
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    dropped = [line for line in stderr.splitlines() if "was dropped" in line]
    assert dropped, stderr[-2000:]
    assert len(dropped) <= 2  # rate-limited: one line, then a summary
    assert "Traceback" not in stderr


def test_a_retained_question_is_answered_once_across_restarts(
    broker: Broker, daemon: dict[str, Any]
) -> None:
    name, watch = daemon["name"], daemon["watch"]
    try:
        ask(broker, name, {"id": "r1", "from": "ha", "text": "water temp?"}, retain=True)
        wait_until(lambda: answers(watch, name))
        proc = daemon["procs"][-1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
        daemon["start"]()  # gets the retained question again on subscribing
        ask(broker, name, {"id": "r2", "from": "ha", "text": "water temp?"})
        wait_until(lambda: any(a["id"] == "r2" for a in answers(watch, name)))
        assert sorted(a["id"] for a in answers(watch, name)) == ["r1", "r2"]
    finally:
        publish(broker, [(f"{PREFIX}/{name}/ask", b"")], retain=True)  # clear it


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "not JSON"),
        (b'"text"', "not a JSON object"),
        (b'{"id": "a", "text": 3}', "'text' must be a string"),
        (b'{"id": "a\\tb", "text": "x"}', "'id' holds control characters"),
        (b"{" + b" " * 5000 + b"}", "more than 4096"),
    ],
)
def test_parse_ask_names_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(AskError, match=reason):
        parse_ask(payload, datetime.now(UTC))


def test_a_mention_decided_meanwhile_gets_no_second_reply(tmp_path: Path) -> None:
    # pollers of several services answer from their own threads: the outbox itself
    # refuses a second reply to one mention
    import sqlite3

    from gateway.conversations.inbox import Inbox
    from gateway.model import Post, new_post_id
    from gateway.outbox.store import MentionDecidedError, Outbox

    db = tmp_path / "gateway.db"
    outbox, inbox = Outbox(db), Inbox(db)
    mention = parse_ask(b'{"id": "q1", "text": "temp?"}', datetime.now(UTC))
    inbox.store([mention], "ask", None)
    for n in range(2):
        post = Post(
            new_post_id(), "reply:t", datetime.now(UTC), f"answer {n}", reply=mention.target()
        )
        if n == 0:
            outbox.add(post, {"ask": post.text}, done_mention=("ask", "q1"))
        else:
            with pytest.raises(MentionDecidedError):
                outbox.add(post, {"ask": post.text}, done_mention=("ask", "q1"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT text FROM deliveries").fetchall() == [("answer 0",)]
    outbox.close()
    inbox.close()


def test_in_quiet_hours_a_question_is_skipped_not_answered_later(
    broker: Broker, tmp_path: Path, mqtt_topic: str, mqtt_subscribe: Callable[..., Subscription]
) -> None:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo("Europe/London"))
    window = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    name = f"quiet{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gateway.toml"
    text = config_text(broker, tmp_path / "state", name, mqtt_topic).replace(
        'cooldown = "0s"', f'cooldown = "0s"\nquiet_hours = "{window}"'
    )
    config.write_text(text, encoding="utf-8")
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    with running(config, watch):

        def outcome() -> dict[str, Any] | None:
            # asked again until recorded (the first may come before the subscription)
            ask(broker, name, {"id": "night", "from": "kiosk", "text": "how warm?"})
            listed = cli("mentions", "--json", "-c", str(config))
            found = [m for m in json.loads(listed.stdout or "[]") if m["id"] == "night"]
            return found[0] if found and found[0]["outcome"] != "pending" else None

        decided = wait_until(outcome)
        assert (decided["outcome"], decided["reason"]) == ("skipped", "quiet hours")
        assert answers(watch, name) == []


def test_a_bad_quiet_hours_is_refused_by_its_path() -> None:
    from gateway.config import ConfigError
    from gateway.runtime.loading import validate_config

    with pytest.raises(ConfigError, match=r"conversations\.quiet_hours.*HH:MM-HH:MM"):
        validate_config({"conversations": {"enabled": True, "quiet_hours": "late"}})


def test_home_assistant_sees_the_mention_counts(
    broker: Broker, tmp_path: Path, mqtt_topic: str, mqtt_subscribe: Callable[..., Subscription]
) -> None:
    name = f"ha{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gateway.toml"
    text = config_text(broker, tmp_path / "state", name, mqtt_topic) + (
        f'\n[homeassistant]\nenabled = true\ndiscovery_prefix = "{mqtt_topic}/ha"\n'
        'interval = "1s"\n'
    )
    config.write_text(text, encoding="utf-8")
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    discovery = mqtt_subscribe(f"{mqtt_topic}/ha/#")
    with running(config, watch):
        ask_until_heard(broker, name, watch, {"id": "h1", "from": "ha", "text": "how warm?"})
        ask(broker, name, {"id": "h2", "from": "ha", "text": "hello"})

        def counted() -> dict[str, Any] | None:
            docs = [json.loads(p) for p in watch.by_topic().get(f"{PREFIX}/{name}/health", [])]
            return next((d for d in reversed(docs) if d.get("mentions_answered") == 2), None)

        doc = wait_until(counted)
        assert (doc["mentions_seen"], doc["mentions_skipped"]) == (2, 0)
        configs = discovery.by_topic()
        (answered,) = [json.loads(p[-1]) for t, p in configs.items() if "mentions_answered" in t]
        assert answered["value_template"] == "{{ value_json.mentions_answered }}"


ON_MENTION = """
[[rules]]
id = "asked"
on_mention = { match = ["warm", "temp"], publishers = ["ask"] }
text = "{{ event.author_name }} asked: {{ event.quote }} ({{ mentions.today }} today)"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_an_on_mention_rule_posts_about_matching_questions(
    broker: Broker, tmp_path: Path, mqtt_topic: str, mqtt_subscribe: Callable[..., Subscription]
) -> None:
    from tests.gwutil import archive_posts

    name = f"asked{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gateway.toml"
    state = tmp_path / "state"
    config.write_text(config_text(broker, state, name, mqtt_topic) + ON_MENTION, encoding="utf-8")
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    with running(config, watch):
        ask_until_heard(broker, name, watch, {"id": "a1", "from": "kiosk", "text": "hello there"})
        ask_until_heard(
            broker, name, watch, {"id": "a2", "from": "kiosk", "text": "@poolcam how WARM is it?"}
        )
        (post,) = wait_until(lambda: archive_posts(state))
        assert post["rule"] == "asked"
        # the second question matched; the first did not; both were seen today
        assert post["text"] == "kiosk asked: how WARM is it? (2 today)"


def test_mention_names_need_conversations() -> None:
    from gateway.config import ConfigError
    from gateway.runtime.loading import validate_config

    rule = {"id": "r", "every": "1h", "text": "{{ mentions.today }} asked", "publish_to": ["c"]}
    asked = {"id": "a", "on_mention": {}, "text": "asked", "publish_to": ["c"]}
    publishers = [{"id": "c", "type": "console"}]
    with pytest.raises(ConfigError) as caught:
        validate_config({"rules": [rule, asked], "publishers": publishers})
    message = str(caught.value)
    assert "rules[0].text: unknown name 'mentions'" in message
    assert "rules[1].on_mention: needs [conversations] enabled = true" in message
    on = {"conversations": {"enabled": True}, "rules": [rule, asked], "publishers": publishers}
    validate_config(on)


def test_preview_mention_renders_each_publishers_reply(broker: Broker, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    text = config_text(broker, tmp_path / "state", "pv", "t/pv") + (
        '\n[[publishers]]\nid = "masto"\ntype = "mastodon"\n'
        'base_url = "https://masto.example"\naccess_token = "tok-preview-123456"\n'
    )
    config.write_text(text, encoding="utf-8")
    sample = tmp_path / "sample.json"
    sample.write_text('{"water_temp": 24.5}', encoding="utf-8")
    result = cli(
        "preview", "--mention", "how warm is it?", "--sample", str(sample), "-c", str(config)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "reply temperature"
    masto = lines.index(next(line for line in lines if line.startswith("── masto (mastodon): ")))
    assert lines[masto].endswith(" / 500 graphemes")
    assert lines[masto + 1] == "@asker The water is 24.5 °C. You asked: how warm is it?"
    ask_line = lines.index(
        next(line for line in lines if line.startswith("── ask (mqtt question)"))
    )
    assert lines[ask_line + 1] == "The water is 24.5 °C. You asked: how warm is it?"
    fallback = cli("preview", "--mention", "hello", "--sample", str(sample), "-c", str(config))
    assert fallback.stdout.splitlines()[0] == "reply help (the fallback)"
    assert "tok-preview" not in result.stdout + result.stderr
    assert not (tmp_path / "state" / "gateway.db").exists()


PHOTO_REPLY = """
[[cameras]]
id = "underwater"
topic = "{topic}/cam"

[[replies]]
id = "look"
match = ["look", "photo"]
text = "Here is the pool now."
images = [{{ camera = "underwater", alt = "The pool at {{{{ now | date('%H:%M') }}}}" }}]
"""


def mean_color(path: str) -> tuple[int, ...]:
    from PIL import Image, ImageStat

    with Image.open(path) as im:
        return tuple(round(v) for v in ImageStat.Stat(im.convert("RGB")).mean)


@pytest.mark.parametrize("camera_answers", [True, False])
def test_a_reply_brings_a_fresh_photo(
    broker: Broker,
    tmp_path: Path,
    mqtt_topic: str,
    mqtt_subscribe: Callable[..., Subscription],
    camera_answers: bool,
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    name = f"look{uuid.uuid4().hex[:6]}"
    config = tmp_path / "gateway.toml"
    text = config_text(broker, tmp_path / "state", name, mqtt_topic).replace(
        "[[replies]]", PHOTO_REPLY.format(topic=mqtt_topic) + "\n[[replies]]", 1
    )
    config.write_text(text, encoding="utf-8")
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    # a camera agent: a blue frame whenever it is asked for one (what things-device does)
    requests: list[float] = []
    agent = mqtt.Client(CallbackAPIVersion.VERSION2)
    agent.on_message = lambda c, _u, _m: (
        requests.append(1.0),
        c.publish(f"{mqtt_topic}/cam", solid_jpeg((0, 0, 255)), qos=1),
    )
    agent.connect(broker.host, broker.port)
    agent.loop_start()
    if camera_answers:
        agent.subscribe(f"{mqtt_topic}/cam/capture", 1)
    with running(config, watch) as stderr_lines:
        try:
            # once the daemon answers it has subscribed: then an older red frame, what a
            # reply without a fresh one shows
            ask_until_heard(broker, name, watch, {"id": "p0", "from": "kiosk", "text": "hi"})
            publish(broker, [(f"{mqtt_topic}/cam", solid_jpeg((255, 0, 0)))])
            time_before = datetime.now(UTC)
            ask_until_heard(
                broker, name, watch, {"id": "p1", "from": "kiosk", "text": "photo please"}
            )
            (answer,) = [a for a in answers(watch, name) if a["id"] == "p1"]
            assert answer["text"] == "Here is the pool now."
            (image,) = answer["images"]
            red, green, blue = mean_color(image)
            if camera_answers:
                assert requests, "the camera was never asked for a frame"
                assert blue > 200, (red, green, blue)
                assert red < 50, (red, green, blue)
            else:
                assert red > 200, (red, green, blue)
                assert blue < 50, (red, green, blue)
                # it waited for the camera, then took what it had
                assert (datetime.now(UTC) - time_before).total_seconds() >= 5
        finally:
            agent.loop_stop()
            agent.disconnect()
    stderr = "\n".join(stderr_lines)
    if not camera_answers:
        assert "camera underwater sent no new frame within 5 s: its latest goes" in stderr


def test_the_pool_example_answers_with_the_temperature_and_a_fresh_photo(
    broker: Broker, tmp_path: Path, mqtt_subscribe: Callable[..., Subscription]
) -> None:
    name = f"pool{uuid.uuid4().hex[:6]}"
    config = pool_config(tmp_path, broker, name)
    watch = mqtt_subscribe(f"{PREFIX}/{name}/#")
    with camera_agent(broker, f"{name}/cam/pool"), running(config, watch):
        ask_until_heard(broker, name, watch, {"id": "k0", "from": "probe", "text": "hi"})
        publish(
            broker,
            [
                (f"{name}/pool/temperature", "26.5"),
                (
                    f"{name}/weather/SENSOR",
                    json.dumps({"AM2301": {"Temperature": 21.0, "Humidity": 60}}),
                ),
            ],
        )
        ask_until_heard(
            broker, name, watch, {"id": "k1", "from": "kiosk", "text": "How warm is the water?"}
        )
        (answer,) = [a for a in answers(watch, name) if a["id"] == "k1"]
        assert answer["text"] == "The water is 26.5 °C and the air 21 °C right now, kiosk."
        (image,) = answer["images"]
        assert mean_color(image)[2] > 150  # the fresh (blue) frame, captioned


def test_a_long_reply_is_fitted_to_the_service_like_every_post(
    broker: Broker, tmp_path: Path
) -> None:
    from gateway.config import load_config
    from gateway.model import Mention
    from gateway.runtime.app import Gateway

    config = tmp_path / "gateway.toml"
    text = config_text(broker, tmp_path / "state", "fit", "t/fit").replace(
        'text = "Ask me how warm the water is."',
        'text = "{% for i in range(200) %}splash {% endfor %}"',
    ) + (
        '\n[[publishers]]\nid = "masto"\ntype = "mastodon"\n'
        'base_url = "https://masto.example"\naccess_token = "tok-fit-123456"\n'
    )
    config.write_text(text, encoding="utf-8")
    gateway = Gateway(load_config(config))
    try:
        reply = gateway.conversations.match("hello")
        assert reply is not None
        mention = Mention("masto", "1", "bob@elsewhere.example", "hello", datetime.now(UTC))
        (fitted,) = gateway.conversations.render(reply, mention, time_now()).values()
        from gateway.compose.textfit import count_length

        caps = gateway.publishers["masto"].capabilities
        assert count_length(fitted, caps) <= 500  # as Mastodon counts: @bob, not the domain
        assert count_length(fitted + " splash", caps) > 500
        assert fitted.startswith("@bob@elsewhere.example splash splash")
        assert fitted.endswith("…")
    finally:
        gateway.outbox.close()


def time_now() -> float:
    import time

    return time.time()
