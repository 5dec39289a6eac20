"""IngestClient (gateway/ingest/fastclient.py): the fast inbound path over paho-mqtt.

Three layers:

- :class:`BufferedSocket` alone, over ``socket.socketpair()``;
- an ``IngestClient`` talking to a broker played by the test ("scripted"): the test
  sends exact PUBLISH bytes, drives paho's loop by hand in one thread and sees every
  byte the client writes, so batching, PUBACK order and fall-backs are checked
  deterministically;
- an ``IngestClient`` (alone and inside ``MqttIngest``) against a real mosquitto over
  TCP, TLS, a Unix socket and websockets, with real paho publishers.

Where the fast path must behave as paho does (PUBACK order, malformed QoS,
``manual_ack``, ``suppress_exceptions``), the same scenario runs against paho's own
``Client`` as the reference.
"""

from __future__ import annotations

import random
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
import tomllib
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.demo.broker import Broker, TlsListener, find_free_port, find_mosquitto
from gateway.ingest.fastclient import BATCH, READ_SIZE, BufferedSocket, IngestClient
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.runtime.loading import validate_config
from gateway.state.store import SensorSnapshot, StateStore
from tests.gwutil import wait_until
from tests.tlsutil import make_test_ca

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")

V5 = mqtt.MQTTv5
V311 = mqtt.MQTTv311
PROTOCOLS = [pytest.param(V5, id="mqtt5"), pytest.param(V311, id="mqtt311")]
WAIT = 5.0
"""Upper bound of every wait; a passing run waits far less."""
NOT_UTF8 = b"\xff\xfe\x80 not utf-8 \xc3\x28 \xed\xa0\x80"

ClientClass = type[mqtt.Client]
CLIENT_CLASSES = [pytest.param(mqtt.Client, id="paho"), pytest.param(IngestClient, id="ingest")]


# -- what the callbacks saw ---------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One message as a callback saw it; ``message`` is paho's, for the on_message path."""

    path: Literal["fast", "paho"]
    topic: str
    payload: bytes
    message: mqtt.MQTTMessage | None = None


class Inbox:
    """Collects deliveries from ``on_fast_message`` and ``on_message`` in one ordered list."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self._changed = threading.Condition()

    def on_fast_message(self, topic: str, payload: bytes) -> None:
        self._add(Delivery("fast", topic, payload))  # kept as given: tests check it is bytes

    def on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._add(Delivery("paho", message.topic, bytes(message.payload), message))

    def _add(self, delivery: Delivery) -> None:
        with self._changed:
            self.items.append(delivery)
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[Delivery]], bool]) -> list[Delivery]:
        """Wait until ``done(items)``; fail on timeout; return a copy of the items."""
        with self._changed:
            ok = self._changed.wait_for(lambda: done(self.items), WAIT)
            items = list(self.items)
        assert ok, f"timed out after {len(items)} deliveries"
        return items

    def wait_for_payload(self, payload: bytes) -> list[Delivery]:
        """Wait until a message with ``payload`` (an end marker) was delivered."""
        return self.wait_for(lambda items: any(d.payload == payload for d in items))


def per_topic(pairs: Iterable[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for topic, payload in pairs:
        grouped.setdefault(topic, []).append(payload)
    return grouped


def assert_same_payloads(got: Sequence[bytes], want: Sequence[bytes], what: str) -> None:
    """``got == want``, reported without pytest printing megabytes of payload."""
    if list(got) == list(want):
        return
    first = next(
        (i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
        min(len(got), len(want)),
    )
    pytest.fail(f"{what}: {len(got)} received, {len(want)} expected; first difference at {first}")


# -- MQTT packets, for the scripted broker -------------------------------------------------


def varint(value: int) -> bytes:
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def props_bytes(**values: Any) -> bytes:
    """Packed MQTT 5 PUBLISH properties (length prefix included)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return packed


def publish_packet(
    topic: bytes,
    payload: bytes,
    *,
    qos: int = 0,
    mid: int = 0,
    v5: bool = False,
    props: bytes = b"",
) -> bytes:
    """A PUBLISH as a broker sends it (``props`` only for MQTT 5; empty means none)."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += props or b"\x00"
    body += payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


def puback(mid: int) -> bytes:
    return bytes((0x40, 2)) + mid.to_bytes(2, "big")


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT packet from ``sock`` (blocking, with the socket's timeout)."""
    header = recv_exact(sock, 1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = recv_exact(sock, 1)
        raw += byte
        length += (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            return header + raw + recv_exact(sock, length)


def read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Scripted:
    """A client connected to a broker played by the test; paho's loop is driven by hand.

    ``writes`` holds the bytes of every ``send`` the client made after CONNACK.
    """

    def __init__(
        self,
        protocol: MQTTProtocolVersion,
        client_class: ClientClass,
        monkeypatch: pytest.MonkeyPatch,
        **kw: Any,
    ) -> None:
        self.v5 = protocol == V5
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.client = client_class(CallbackAPIVersion.VERSION2, protocol=protocol, **kw)
        self.inbox = Inbox()
        self.client.on_message = self.inbox.on_message
        if isinstance(self.client, IngestClient):
            self.client.on_fast_message = self.inbox.on_fast_message
        self.writes: list[bytes] = []
        send = self.client._sock_send

        def recording_send(buf: bytes | bytearray) -> int:
            sent = send(buf)
            self.writes.append(bytes(buf[:sent]))
            return sent

        monkeypatch.setattr(self.client, "_sock_send", recording_send)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect("127.0.0.1", self.listener.getsockname()[1], keepalive=60)
        self.server, _ = self.listener.accept()
        self.server.settimeout(WAIT)
        assert read_packet(self.server)[0] == 0x10  # CONNECT
        self.server.sendall(b"\x20\x03\x00\x00\x00" if self.v5 else b"\x20\x02\x00\x00")
        self.read_once()
        assert connected.is_set()
        self.writes.clear()

    @property
    def ingest(self) -> IngestClient:
        assert isinstance(self.client, IngestClient)
        return self.client

    def read_once(self) -> MQTTErrorCode:
        """Wait until the client's socket is readable, then one ``loop_read()``."""
        sock = self.client.socket()
        assert sock is not None
        readable, _, _ = select.select([sock], [], [], WAIT)
        assert readable, "nothing arrived"
        return self.client.loop_read()

    def pump(self, done: Callable[[], bool]) -> None:
        """Run paho's ``loop()`` until ``done()``."""
        deadline = time.monotonic() + WAIT
        while not done():
            assert time.monotonic() < deadline, "condition not met in time"
            rc = self.client.loop(timeout=0.05)
            assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS, rc

    def acks(self, count: int) -> list[bytes]:
        """The next ``count`` packets the broker received from the client."""
        return [read_packet(self.server) for _ in range(count)]

    def close(self) -> None:
        self.client._reset_sockets()
        self.server.close()
        self.listener.close()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Scripted]]:
    """``scripted(protocol=V311, client_class=IngestClient, **client_kwargs)``."""
    made: list[Scripted] = []

    def make(
        protocol: MQTTProtocolVersion = V311, client_class: ClientClass = IngestClient, **kw: Any
    ) -> Scripted:
        session = Scripted(protocol, client_class, monkeypatch, **kw)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


# -- real broker helpers ---------------------------------------------------------------------

Outgoing = tuple[str, bytes, int, Properties | None]
"""topic, payload, QoS, MQTT 5 properties."""


def connect_kwargs(protocol: MQTTProtocolVersion, persistent: bool) -> dict[str, Any]:
    if protocol != V5:
        return {}
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        props.SessionExpiryInterval = 300
    return {"clean_start": not persistent, "properties": props}


def publish_all(
    port: int,
    messages: Sequence[Outgoing],
    *,
    protocol: MQTTProtocolVersion = V5,
    host: str = "127.0.0.1",
) -> None:
    """Publish all of ``messages`` at once (no waiting in between), then wait for every one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(host, port)
    client.loop_start()
    try:
        assert connected.wait(WAIT), "publisher never connected"
        infos = [client.publish(t, p, qos=q, properties=props) for t, p, q, props in messages]
        for info in infos:
            info.wait_for_publish(WAIT)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """A started client (IngestClient or paho's) subscribed to one filter, with its Inbox."""

    def __init__(self, client: mqtt.Client, topic_filter: str, qos: int, fast: bool) -> None:
        self.client = client
        self.inbox = Inbox()
        self.session_present: bool | None = None
        self._filter, self._qos = topic_filter, qos
        self._subscribed = threading.Event()
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self.inbox.on_message
        if fast and isinstance(client, IngestClient):
            client.on_fast_message = self.inbox.on_fast_message

    @property
    def ingest(self) -> IngestClient:
        assert isinstance(self.client, IngestClient)
        return self.client

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        assert not reason.is_failure, reason
        self.session_present = flags.session_present
        client.subscribe(self._filter, self._qos)

    def start(self, host: str, port: int, **kwargs: Any) -> None:
        self.client.connect(host, port, **kwargs)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT), "no SUBACK"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """``subscribe(port, filter, protocol=V5, qos=1, ...)``: a connected, subscribed client."""
    started: list[Subscriber] = []

    def start(
        port: int,
        topic_filter: str,
        *,
        protocol: MQTTProtocolVersion = V5,
        qos: int = 1,
        client_class: ClientClass = IngestClient,
        client_id: str = "",
        persistent: bool = False,
        fast: bool = True,
        host: str = "127.0.0.1",
        configure: Callable[[mqtt.Client], None] | None = None,
        **client_kwargs: Any,
    ) -> Subscriber:
        client = client_class(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == V5 else not persistent,
            **client_kwargs,
        )
        if configure is not None:
            configure(client)
        sub = Subscriber(client, topic_filter, qos, fast)
        started.append(sub)
        sub.start(host, port, **connect_kwargs(protocol, persistent))
        return sub

    yield start
    for sub in started:
        sub.stop()


@pytest.fixture
def burst_broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A mosquitto that queues without limit: a 2000-message burst must not be trimmed."""
    return broker_factory(prefer="mosquitto", extra_config=["max_queued_messages 0"])


def burst_payloads(count: int) -> list[bytes]:
    """Distinct payloads, with an empty, a binary, a non-UTF-8 and a 1 MiB one among them."""
    big = random.Random(1).randbytes(1 << 20)
    special = {0: b"", 1: bytes(range(256)), 2: NOT_UTF8, count // 2: big, count - 1: b"\x00"}
    return [special.get(i, b"%d:" % i + b"x" * (i % 97)) for i in range(count)]


# == BufferedSocket ===========================================================================


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(peer, ours): ``ours`` is non-blocking, as paho sets its socket."""
    peer, ours = socket.socketpair()
    ours.setblocking(False)
    yield peer, ours
    peer.close()
    ours.close()


def wait_readable(sock: Any) -> None:
    readable, _, _ = select.select([sock], [], [], WAIT)
    assert readable, "nothing to read"


def test_small_reads_are_served_from_the_buffer(pair: tuple[socket.socket, socket.socket]) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    peer.sendall(b"abcdefghij")
    wait_readable(wrapped)
    assert wrapped.pending() == 0
    assert wrapped.recv(3) == b"abc"
    assert wrapped.pending() == 7
    # The kernel has nothing left: select() cannot see the buffered bytes, pending() can.
    assert select.select([wrapped], [], [], 0)[0] == []
    assert wrapped.recv(4) == b"defg"
    assert wrapped.pending() == 3
    assert wrapped.recv(10) == b"hij"  # a short read: only what is buffered, no system call
    assert wrapped.pending() == 0
    with pytest.raises(BlockingIOError):
        wrapped.recv(1)
    peer.sendall(b"kl")
    wait_readable(wrapped)
    assert wrapped.recv(1) == b"k"
    assert wrapped.recv(1) == b"l"
    assert wrapped.pending() == 0


def test_a_read_larger_than_what_arrived_returns_it_all(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    data = bytes(range(100))
    peer.sendall(data)
    wait_readable(wrapped)
    assert wrapped.recv(1000) == data
    assert wrapped.pending() == 0


def test_a_read_larger_than_read_size_and_a_stream_read_in_odd_pieces(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    data = random.Random(2).randbytes(3 * READ_SIZE + 12345)
    writer = threading.Thread(target=peer.sendall, args=(data,))
    writer.start()
    got = bytearray()
    sizes = [1, 2, 3, 4, 1000, READ_SIZE * 2, 7, READ_SIZE - 1, READ_SIZE + 1]
    deadline = time.monotonic() + WAIT
    step = 0
    while len(got) < len(data):
        assert time.monotonic() < deadline
        if not wrapped.pending():
            wait_readable(wrapped)
        size = sizes[step % len(sizes)]
        step += 1
        try:
            chunk = wrapped.recv(size)
        except BlockingIOError:
            continue
        assert 0 < len(chunk) <= size
        got += chunk
    writer.join(WAIT)
    assert bytes(got) == data
    assert wrapped.pending() == 0


class RecordingSocket:
    """Stands in for a socket: hands out ``data`` and records each ``recv`` size asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int] = []

    def recv(self, bufsize: int) -> bytes:
        self.asked.append(bufsize)
        if not self.data:
            raise BlockingIOError
        chunk, self.data = self.data[:bufsize], self.data[bufsize:]
        return chunk


def test_one_system_call_per_buffer_of_read_size() -> None:
    raw = RecordingSocket(bytes(200_000))
    wrapped = BufferedSocket(raw)
    assert wrapped.recv(1) == b"\x00"
    assert raw.asked == [READ_SIZE]  # one byte asked for, READ_SIZE read from the kernel
    assert wrapped.pending() == READ_SIZE - 1
    for _ in range(10):
        wrapped.recv(2)
    assert raw.asked == [READ_SIZE]  # served from the buffer
    assert len(wrapped.recv(READ_SIZE)) == READ_SIZE - 21  # the rest of the buffer only
    assert raw.asked == [READ_SIZE]
    assert len(wrapped.recv(100_000)) == 100_000  # larger than READ_SIZE: asked as is
    assert raw.asked == [READ_SIZE, 100_000]
    assert wrapped.pending() == 0
    rest = 200_000 - READ_SIZE - 100_000
    assert len(wrapped.recv(READ_SIZE)) == rest  # fits: returned without buffering
    assert wrapped.pending() == 0
    with pytest.raises(BlockingIOError):
        wrapped.recv(10)


def test_blocking_io_error_when_nothing_is_available(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    _peer, ours = pair
    wrapped = BufferedSocket(ours)
    with pytest.raises(BlockingIOError):
        wrapped.recv(1)
    with pytest.raises(BlockingIOError):
        wrapped.recv(READ_SIZE * 4)
    assert wrapped.pending() == 0


def test_end_of_stream_after_the_buffered_bytes(pair: tuple[socket.socket, socket.socket]) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    peer.sendall(b"last words")
    peer.close()
    wait_readable(wrapped)
    assert wrapped.recv(4) == b"last"
    assert wrapped.recv(100) == b" words"
    assert wrapped.recv(1) == b""
    assert wrapped.recv(1) == b""


def test_end_of_stream_right_away(pair: tuple[socket.socket, socket.socket]) -> None:
    peer, ours = pair
    peer.close()
    wrapped = BufferedSocket(ours)
    wait_readable(wrapped)
    assert wrapped.recv(1) == b""
    assert wrapped.pending() == 0


def test_close_closes_the_socket_and_drops_the_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    peer.sendall(b"0123456789")
    wait_readable(wrapped)
    assert wrapped.recv(1) == b"0"
    assert wrapped.pending() == 9
    wrapped.close()
    assert wrapped.pending() == 0
    assert ours.fileno() == -1
    with pytest.raises(OSError):  # noqa: PT011 - EBADF: any OSError proves the fd is gone
        wrapped.recv(1)
    peer.settimeout(WAIT)
    assert peer.recv(1) == b""  # the other end sees the close


def test_fileno_works_with_select(pair: tuple[socket.socket, socket.socket]) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    assert wrapped.fileno() == ours.fileno()
    assert select.select([wrapped], [], [], 0)[0] == []
    peer.sendall(b"x")
    readable, _, _ = select.select([wrapped], [], [], WAIT)
    assert readable == [wrapped]
    writable = select.select([], [wrapped], [], WAIT)[1]
    assert writable == [wrapped]


def test_send_is_unbuffered_and_other_attributes_pass_through(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    wrapped = BufferedSocket(ours)
    assert wrapped.send(b"hello") == 5
    assert wrapped.send(bytearray(b" there")) == 6
    peer.settimeout(WAIT)
    assert recv_exact(peer, 11) == b"hello there"
    assert wrapped.family == socket.AF_UNIX
    assert wrapped.gettimeout() == 0.0
    wrapped.setblocking(True)
    assert ours.gettimeout() is None
    assert wrapped.getsockname() == ours.getsockname()


# == IngestClient against a scripted broker ===================================================


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_pubacks_are_one_write_after_every_callback(
    scripted: Callable[..., Scripted], protocol: MQTTProtocolVersion
) -> None:
    s = scripted(protocol)
    v5 = s.v5
    writes_during_callbacks: list[int] = []

    def on_fast(topic: str, payload: bytes) -> None:
        writes_during_callbacks.append(len(s.writes))
        s.inbox.on_fast_message(topic, payload)

    s.ingest.on_fast_message = on_fast
    qos = [1, 0, 1, 1, 0, 1]
    batch = b"".join(
        publish_packet(b"t/ack", b"p%d" % i, qos=q, mid=300 + i, v5=v5) for i, q in enumerate(qos)
    )
    s.server.sendall(batch)
    assert s.read_once() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [(d.path, d.topic, d.payload) for d in s.inbox.items] == [
        ("fast", "t/ack", b"p%d" % i) for i in range(len(qos))
    ]
    # No byte left the client while the callbacks ran: nothing was acked early.
    assert writes_during_callbacks == [0] * len(qos)
    acked = [300 + i for i, q in enumerate(qos) if q]
    # Then one write, with the PUBACKs of the QoS 1 messages in the order they came.
    assert s.writes == [b"".join(puback(mid) for mid in acked)]
    assert s.acks(len(acked)) == [puback(mid) for mid in acked]
    assert s.ingest.fast_messages == len(qos)


@pytest.mark.parametrize("client_class", CLIENT_CLASSES)
def test_a_message_whose_callback_raises_is_not_acked(
    scripted: Callable[..., Scripted], client_class: ClientClass
) -> None:
    s = scripted(V311, client_class)
    seen: list[bytes] = []

    def handle(payload: bytes) -> None:
        seen.append(payload)
        if payload == b"bad":
            raise RuntimeError("handler failed")

    if isinstance(s.client, IngestClient):
        s.client.on_fast_message = lambda _t, p: handle(p)
    s.client.on_message = lambda _c, _u, m: handle(bytes(m.payload))
    payloads = [b"ok1", b"ok2", b"bad", b"ok4"]
    s.server.sendall(
        b"".join(publish_packet(b"t/x", p, qos=1, mid=i + 1) for i, p in enumerate(payloads))
    )
    with pytest.raises(RuntimeError, match="handler failed"):  # noqa: PT012
        for _ in payloads:  # paho's own loop_read takes one packet per call
            s.read_once()
    assert seen == [b"ok1", b"ok2", b"bad"]
    # Exactly the PUBACKs of the two handled messages were written; none for "bad" or later.
    assert b"".join(s.writes) == puback(1) + puback(2)
    assert s.acks(2) == [puback(1), puback(2)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_packets_cut_anywhere_are_reassembled(
    scripted: Callable[..., Scripted], protocol: MQTTProtocolVersion
) -> None:
    s = scripted(protocol)
    v5 = s.v5
    small = [
        publish_packet(b"c/a", b"", qos=1, mid=1, v5=v5),
        publish_packet("c/ü".encode(), bytes(range(200)), qos=0, v5=v5),  # 2-byte length
        publish_packet(b"c/b", NOT_UTF8, qos=1, mid=2, v5=v5),
    ]
    stream = b"".join(small)
    want = [("c/a", b""), ("c/ü", bytes(range(200))), ("c/b", NOT_UTF8)]
    for cut in range(1, len(stream)):
        before = len(s.inbox.items)
        for piece in (stream[:cut], stream[cut:]):
            s.server.sendall(piece)
            assert s.read_once() == MQTTErrorCode.MQTT_ERR_SUCCESS
        got = [(d.topic, d.payload) for d in s.inbox.items[before:]]
        assert got == want, f"cut at byte {cut}"
        assert s.acks(2) == [puback(1), puback(2)], f"cut at byte {cut}"
    # A large packet (3-byte remaining length) arriving in uneven pieces between reads.
    before = len(s.inbox.items)
    big = random.Random(3).randbytes(5 * READ_SIZE + 17)
    stream = publish_packet(b"c/big", big, qos=1, mid=9, v5=v5) + small[0]
    pos, sizes, step = 0, [1, 1, 2, 5, READ_SIZE + 3, 40_000, 1], 0
    while pos < len(stream):
        size = sizes[step % len(sizes)]
        step += 1
        s.server.sendall(stream[pos : pos + size])
        pos += size
        s.read_once()
    s.pump(lambda: len(s.inbox.items) >= before + 2)
    tail = s.inbox.items[-2:]
    assert [(d.topic, len(d.payload)) for d in tail] == [("c/big", len(big)), ("c/a", 0)]
    assert tail[0].payload == big
    assert s.acks(2) == [puback(9), puback(1)]
    assert all(d.path == "fast" for d in s.inbox.items)
    assert s.ingest.fast_messages == len(s.inbox.items)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_stops_at_batch_size_and_the_rest_is_read_without_waiting(
    scripted: Callable[..., Scripted], protocol: MQTTProtocolVersion
) -> None:
    s = scripted(protocol)
    count = BATCH + 88
    s.server.sendall(
        b"".join(publish_packet(b"b/n", b"%d" % i, qos=1, mid=i + 1, v5=s.v5) for i in range(count))
    )
    s.read_once()
    handled = len(s.inbox.items)
    assert handled == BATCH + 1  # paho's own read of one packet, then BATCH more
    sock = s.client.socket()
    assert isinstance(sock, BufferedSocket)
    assert sock.pending() > 0
    assert s.writes == [b"".join(puback(i + 1) for i in range(handled))]
    # Everything else is already in the buffer, none of it in the kernel: paho's loop must
    # not sleep in select() for its timeout (it asks pending() first).
    started = time.monotonic()
    assert s.client.loop(timeout=WAIT) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert time.monotonic() - started < WAIT / 2
    assert [d.payload for d in s.inbox.items] == [b"%d" % i for i in range(count)]
    assert s.acks(count) == [puback(i + 1) for i in range(count)]
    assert sock.pending() == 0


@pytest.mark.parametrize(
    ("protocol", "packet", "topic", "payload"),
    [
        pytest.param(
            V5,
            publish_packet(
                b"p/props", b"with", qos=1, mid=5, v5=True, props=props_bytes(ContentType="a/b")
            ),
            b"p/props",
            b"with",
            id="mqtt5-properties",
        ),
        pytest.param(
            V311,
            publish_packet(b"p/\xff\xfe", b"raw", qos=1, mid=5),
            b"p/\xff\xfe",
            b"raw",
            id="mqtt311-topic-not-utf8",
        ),
        pytest.param(
            V5,
            publish_packet(b"p/\xc3", b"raw", qos=1, mid=5, v5=True),
            b"p/\xc3",
            b"raw",
            id="mqtt5-topic-not-utf8",
        ),
    ],
)
def test_publishes_the_fast_path_leaves_to_paho(
    scripted: Callable[..., Scripted],
    protocol: MQTTProtocolVersion,
    packet: bytes,
    topic: bytes,
    payload: bytes,
) -> None:
    s = scripted(protocol)
    messages: list[mqtt.MQTTMessage] = []
    s.client.on_message = lambda _c, _u, m: messages.append(m)
    plain = publish_packet(b"p/plain", b"fast", qos=1, mid=6, v5=s.v5)
    s.server.sendall(packet + plain)
    s.read_once()
    [message] = messages
    assert message._topic == topic
    assert message.payload == payload
    assert message.mid == 5
    if protocol == V5 and topic == b"p/props":
        received: Any = message.properties
        assert received.ContentType == "a/b"
    assert [(d.path, d.topic, d.payload) for d in s.inbox.items] == [("fast", "p/plain", b"fast")]
    assert s.ingest.fast_messages == 1
    assert s.acks(2) == [puback(5), puback(6)]  # paho acked its message at once, then ours


def test_an_empty_mqtt5_topic_goes_to_paho(scripted: Callable[..., Scripted]) -> None:
    s = scripted(V5)
    s.server.sendall(publish_packet(b"", b"no topic", v5=True))
    s.read_once()
    [delivery] = s.inbox.items
    assert (delivery.path, delivery.topic, delivery.payload) == ("paho", "", b"no topic")
    assert s.ingest.fast_messages == 0


def test_a_protocol_error_in_a_batch_still_acks_the_handled_messages(
    scripted: Callable[..., Scripted],
) -> None:
    s = scripted(V311)
    disconnected = threading.Event()
    s.client.on_disconnect = lambda *_: disconnected.set()
    batch = b"".join(publish_packet(b"e/x", b"%d" % i, qos=1, mid=i + 1) for i in range(3))
    s.server.sendall(batch + b"\x00\x00")  # reserved packet type 0: paho closes the connection
    assert s.read_once() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [d.payload for d in s.inbox.items] == [b"0", b"1", b"2"]
    assert disconnected.is_set()
    assert s.client.socket() is None
    # The PUBACKs of the handled messages were written before the socket closed.
    assert read_until_eof(s.server) == puback(1) + puback(2) + puback(3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_connection_closed_mid_batch_gets_every_puback_first(
    scripted: Callable[..., Scripted], protocol: MQTTProtocolVersion
) -> None:
    """The broker closes (3.1.1) or sends DISCONNECT (5) right after a batch of 513
    QoS 1 messages: every one of them is acknowledged before the socket closes."""
    s = scripted(protocol)
    v5 = protocol == V5
    n = BATCH + 1
    batch = b"".join(publish_packet(b"b/x", b"%d" % i, qos=1, mid=i + 1, v5=v5) for i in range(n))
    s.server.sendall(batch + (b"\xe0\x01\x8b" if v5 else b""))  # 0x8B: server shutting down
    s.server.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + WAIT
    while s.client.socket() is not None:  # ends with a lost connection or a DISCONNECT
        assert time.monotonic() < deadline
        s.client.loop(timeout=0.05)
    assert len(s.inbox.items) == n
    assert read_until_eof(s.server) == b"".join(puback(i + 1) for i in range(n))


def assert_redelivery_of_mid_10_recognised(s2: Scripted) -> None:
    """The broker resends mid 10 ("22.0") with DUP, then a new message: the redelivery
    is acknowledged without being handled, the new one is handled."""
    dup = bytearray(publish_packet(b"d/x", b"22.0", qos=1, mid=10))
    dup[0] |= 0x08
    s2.server.sendall(bytes(dup) + publish_packet(b"d/x", b"22.5", qos=1, mid=11))
    s2.read_once()
    assert [d.payload for d in s2.inbox.items] == [b"22.5"]
    assert s2.ingest.duplicates == 1
    assert s2.acks(2) == [puback(10), puback(11)]  # the redelivery is acknowledged


def test_a_redelivery_of_a_message_whose_puback_was_lost_is_not_handled_twice(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scripted(V311)
    s.server.sendall(publish_packet(b"d/x", b"21.5", qos=1, mid=9))
    s.read_once()
    assert s.acks(1) == [puback(9)]

    def refuse(_self: BufferedSocket, _buf: bytes | bytearray) -> int:
        raise ConnectionResetError("gone")

    with monkeypatch.context() as broken:  # the next batch's PUBACKs cannot be written
        broken.setattr(BufferedSocket, "send", refuse)
        s.server.sendall(publish_packet(b"d/x", b"22.0", qos=1, mid=10))
        s.read_once()
        s.client.loop_write()  # fails: paho closes the connection
        assert s.client.socket() is None
    assert [d.payload for d in s.inbox.items] == [b"21.5", b"22.0"]
    # The same client connects again; the broker resends mid 10 with DUP, then a new one.
    s2 = scripted(V311, IngestClient)
    s2.ingest._lost = dict(s.ingest._lost)
    assert_redelivery_of_mid_10_recognised(s2)


def test_a_restarted_client_recognises_a_redelivery_it_acknowledged_before(
    scripted: Callable[..., Scripted],
) -> None:
    """What a batch acknowledges (``batch_acks``, journaled before its PUBACKs) is
    handed to the next process's client (``remember_acked``): the broker's redelivery
    of such a message (its PUBACK lost with a SIGKILL) is acknowledged, not taken."""
    s = scripted(V311)
    acked: list[tuple[int, int]] = []
    s.ingest.on_batch_end = lambda: acked.extend(s.ingest.batch_acks())
    s.server.sendall(publish_packet(b"d/x", b"22.0", qos=1, mid=10))
    s.read_once()
    # the digest is the same in every process (crc32 of topic and payload, not hash())
    assert acked == [(10, zlib.crc32(b"22.0", zlib.crc32(b"d/x")))]
    s2 = scripted(V311, IngestClient)
    s2.ingest.remember_acked(dict(acked))
    assert_redelivery_of_mid_10_recognised(s2)


def test_a_dup_flag_alone_does_not_drop_a_message(scripted: Callable[..., Scripted]) -> None:
    """DUP only says the broker sent it before: a message never handled here is handled."""
    s = scripted(V311)
    dup = bytearray(publish_packet(b"d/y", b"1", qos=1, mid=3))
    dup[0] |= 0x08
    s.server.sendall(bytes(dup))
    s.read_once()
    assert [d.payload for d in s.inbox.items] == [b"1"]
    assert s.ingest.in_dup is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_oversized_publish_is_discarded_unbuffered_acked_and_reported(
    scripted: Callable[..., Scripted], protocol: MQTTProtocolVersion
) -> None:
    s = scripted(protocol)
    v5 = protocol == V5
    refused: list[tuple[str, int]] = []
    s.ingest.max_packet_size = 4096
    s.ingest.on_refused = lambda topic, size, _poison: refused.append((topic, size))
    big = publish_packet(b"big/x", b"\x7b" * 3_000_000, qos=1, mid=7, v5=v5)
    small = publish_packet(b"small/x", b"ok", qos=1, mid=8, v5=v5)
    seen: list[int] = []
    original = s.ingest._sock_recv

    def recording_recv(n: int) -> bytes:
        seen.append(n)
        data: bytes = original(n)
        return data

    s.ingest._sock_recv = recording_recv  # type: ignore[method-assign]
    sender = threading.Thread(target=s.server.sendall, args=(big + small,))
    sender.start()
    s.pump(lambda: bool(s.inbox.items))
    sender.join()
    assert [d.payload for d in s.inbox.items] == [b"ok"]
    assert refused == [("big/x", len(big) - 5)]  # 1 command byte + 4 length bytes
    assert s.ingest.refused == 1
    assert max(seen) <= READ_SIZE  # never asked the kernel for the whole packet
    assert s.acks(2) == [puback(7), puback(8)]


def test_paused_acks_neither_take_nor_acknowledge(scripted: Callable[..., Scripted]) -> None:
    s = scripted(V311)
    s.server.sendall(publish_packet(b"p/x", b"1", qos=1, mid=1))
    s.read_once()
    assert s.acks(1) == [puback(1)]
    s.ingest.pause_acks()
    retained = bytearray(publish_packet(b"p/x", b"3", qos=1, mid=3))
    retained[0] |= 0x01
    s.server.sendall(publish_packet(b"p/x", b"2", qos=1, mid=2) + bytes(retained))
    s.read_once()
    s.client.loop_write()
    assert [d.payload for d in s.inbox.items] == [b"1"]
    s.server.settimeout(0.3)
    with pytest.raises(TimeoutError):
        s.server.recv(100)


@pytest.mark.parametrize("client_class", CLIENT_CLASSES)
def test_pubacks_follow_the_order_of_the_publishes(
    scripted: Callable[..., Scripted], client_class: ClientClass
) -> None:
    s = scripted(V5, client_class)
    s.server.sendall(
        publish_packet(b"o/1", b"plain", qos=1, mid=1, v5=True)
        + publish_packet(
            b"o/2", b"props", qos=1, mid=2, v5=True, props=props_bytes(ContentType="x")
        )
        + publish_packet(b"o/3", b"plain", qos=1, mid=3, v5=True)
    )
    s.pump(lambda: len(s.inbox.items) >= 3)
    assert [d.payload for d in s.inbox.items] == [b"plain", b"props", b"plain"]
    assert s.acks(3) == [puback(1), puback(2), puback(3)]


@pytest.mark.parametrize("client_class", CLIENT_CLASSES)
def test_a_publish_with_qos_3_is_a_protocol_error(
    scripted: Callable[..., Scripted], client_class: ClientClass
) -> None:
    s = scripted(V311, client_class)
    s.server.sendall(publish_packet(b"q/3", b"bad", qos=3, mid=7))
    assert s.read_once() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert s.inbox.items == []
    assert read_until_eof(s.server) == b""  # closed, nothing acked


@pytest.mark.parametrize("client_class", CLIENT_CLASSES)
def test_manual_ack_gets_the_mid_and_acks_only_when_asked(
    scripted: Callable[..., Scripted], client_class: ClientClass
) -> None:
    s = scripted(V311, client_class, manual_ack=True)
    s.server.sendall(publish_packet(b"m/a", b"x", qos=1, mid=42))
    s.read_once()
    assert s.writes == []  # not acked automatically
    [delivery] = s.inbox.items
    assert delivery.message is not None, "no MQTTMessage, so no mid to ack"
    assert delivery.message.mid == 42
    s.client.ack(delivery.message.mid, 1)
    assert s.acks(1) == [puback(42)]


@pytest.mark.parametrize("client_class", CLIENT_CLASSES)
def test_suppress_exceptions_keeps_the_loop_going(
    scripted: Callable[..., Scripted], client_class: ClientClass
) -> None:
    s = scripted(V311, client_class)
    s.client.suppress_exceptions = True

    def boom(*_: Any) -> None:
        raise RuntimeError("handler failed")

    if isinstance(s.client, IngestClient):
        s.client.on_fast_message = boom
    s.client.on_message = boom
    s.server.sendall(publish_packet(b"s/x", b"1", qos=1, mid=1))
    assert s.read_once() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert s.acks(1) == [puback(1)]


# == IngestClient against mosquitto ===========================================================


@needs_mosquitto
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_burst_arrives_once_in_order_byte_exact_through_the_fast_path(
    burst_broker: Broker,
    mqtt_topic: str,
    subscribe: Callable[..., Subscriber],
    protocol: MQTTProtocolVersion,
    qos: int,
) -> None:
    topics = [f"{mqtt_topic}/a", f"{mqtt_topic}/b/c", f"{mqtt_topic}/ü"]
    sent = [(topics[i % 3], p) for i, p in enumerate(burst_payloads(2000))]
    assert max(len(p) for _, p in sent) > 10 * READ_SIZE
    end = (topics[0], b"end of burst")
    sub = subscribe(burst_broker.port, f"{mqtt_topic}/#", protocol=protocol, qos=qos)
    assert type(sub.client.socket()) is BufferedSocket
    publish_all(burst_broker.port, [(t, p, qos, None) for t, p in [*sent, end]])
    got = sub.inbox.wait_for_payload(end[1])
    assert all(d.path == "fast" for d in got), "some messages took paho's path"
    assert all(type(d.payload) is bytes for d in got)  # not paho's bytearray or a memoryview
    want = per_topic([*sent, end])
    have = per_topic((d.topic, d.payload) for d in got)
    assert sorted(have) == sorted(want)
    for topic in want:
        assert_same_payloads(have[topic], want[topic], topic)
    assert len(got) == len(sent) + 1
    assert sub.ingest.fast_messages == len(got)


@needs_mosquitto
@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt5_messages_with_properties_go_to_on_message_in_order(
    broker: Broker, mqtt_topic: str, subscribe: Callable[..., Subscriber], qos: int
) -> None:
    topic = f"{mqtt_topic}/mixed"
    sub = subscribe(broker.port, topic, protocol=V5, qos=qos)
    outgoing: list[Outgoing] = []
    for i in range(80):
        props: Properties | None = None
        if i % 4 == 1:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("sensor", f"s{i}"), ("unit", "°C")]
        elif i % 4 == 2:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = "application/json"
            props.MessageExpiryInterval = 3600
        elif i % 4 == 3 and i % 8 == 3:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = f"{mqtt_topic}/reply"
            props.CorrelationData = b"\x00\x01" + bytes([i])
        outgoing.append((topic, b"%d" % i + (NOT_UTF8 if i % 5 == 0 else b""), qos, props))
    publish_all(broker.port, outgoing)
    got = sub.inbox.wait_for(lambda items: len(items) >= len(outgoing))
    assert [d.payload for d in got] == [p for _, p, _, _ in outgoing]  # one order, both paths
    for delivery, (_, _, _, sent) in zip(got, outgoing, strict=True):
        if sent is None:
            assert delivery.path == "fast", delivery.payload
            continue
        assert delivery.path == "paho", delivery.payload
        assert delivery.message is not None
        assert delivery.message.qos == qos
        expected: Any = sent
        received: Any = delivery.message.properties
        assert received is not None
        if hasattr(expected, "UserProperty"):
            assert received.UserProperty == expected.UserProperty
        if hasattr(expected, "ContentType"):
            assert received.ContentType == "application/json"
            assert 3590 <= received.MessageExpiryInterval <= 3600
        if hasattr(expected, "ResponseTopic"):
            assert received.ResponseTopic == expected.ResponseTopic
            assert received.CorrelationData == expected.CorrelationData
    plain = sum(1 for *_, sent in outgoing if sent is None)
    assert sub.ingest.fast_messages == plain
    assert 0 < plain < len(outgoing)


@needs_mosquitto
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_qos2_takes_paho_path_once(
    broker: Broker,
    mqtt_topic: str,
    subscribe: Callable[..., Subscriber],
    protocol: MQTTProtocolVersion,
) -> None:
    topic = f"{mqtt_topic}/q2"
    sub = subscribe(broker.port, topic, protocol=protocol, qos=2)
    payloads = [b"", NOT_UTF8, *(b"q2-%d" % i for i in range(60)), b"end"]
    publish_all(broker.port, [(topic, p, 2, None) for p in payloads])
    got = sub.inbox.wait_for_payload(b"end")
    assert [d.payload for d in got] == payloads
    assert all(d.path == "paho" and d.message and d.message.qos == 2 for d in got)
    assert sub.ingest.fast_messages == 0


@needs_mosquitto
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_without_on_fast_message_everything_goes_to_on_message(
    broker: Broker,
    mqtt_topic: str,
    subscribe: Callable[..., Subscriber],
    protocol: MQTTProtocolVersion,
) -> None:
    topic = f"{mqtt_topic}/plain"
    sub = subscribe(broker.port, topic, protocol=protocol, qos=1, fast=False)
    assert type(sub.client.socket()) is BufferedSocket  # reads are still buffered
    payloads = [b"%d" % i for i in range(300)]
    publish_all(broker.port, [(topic, p, i % 2, None) for i, p in enumerate(payloads)])
    got = sub.inbox.wait_for(lambda items: len(items) >= len(payloads))
    assert sorted(d.payload for d in got) == sorted(payloads)
    assert all(d.path == "paho" for d in got)
    assert sub.ingest.fast_messages == 0


@needs_mosquitto
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_fast_message_is_acked_so_a_resumed_session_gets_nothing_again(
    broker: Broker,
    mqtt_topic: str,
    subscribe: Callable[..., Subscriber],
    protocol: MQTTProtocolVersion,
) -> None:
    client_id = f"fastack-{protocol}-{uuid.uuid4().hex[:8]}"
    topic = f"{mqtt_topic}/q1"
    first = subscribe(broker.port, topic, protocol=protocol, client_id=client_id, persistent=True)
    payloads = [b"m%d" % i for i in range(400)]
    publish_all(broker.port, [(topic, p, 1, None) for p in payloads])
    got = first.inbox.wait_for(lambda items: len(items) >= len(payloads))
    assert [d.payload for d in got] == payloads
    assert first.ingest.fast_messages == len(payloads)
    # A round trip on the same connection: once its PUBACK is back, the PUBACKs the client
    # queued before it (at the end of each batch) have been written ahead of it.
    info = first.client.publish(f"{mqtt_topic}/barrier", b"", qos=1)
    info.wait_for_publish(WAIT)
    assert info.is_published()
    first.stop()
    second = subscribe(
        broker.port,
        topic,
        protocol=protocol,
        client_class=mqtt.Client,
        client_id=client_id,
        persistent=True,
    )
    assert second.session_present, "the broker should have kept the session"
    publish_all(broker.port, [(topic, b"after", 1, None)])
    # Unacked messages would be resent right after CONNACK, before anything new.
    got = second.inbox.wait_for_payload(b"after")
    assert [d.payload for d in got] == [b"after"]


@needs_mosquitto
def test_unacked_messages_are_resent_to_a_resumed_session(
    broker: Broker, mqtt_topic: str, subscribe: Callable[..., Subscriber]
) -> None:
    """The control for the test above: the same check does see messages left unacked."""
    client_id = f"noack-{uuid.uuid4().hex[:8]}"
    topic = f"{mqtt_topic}/q1"
    first = subscribe(
        broker.port,
        topic,
        protocol=V311,
        client_class=mqtt.Client,
        client_id=client_id,
        persistent=True,
        manual_ack=True,
    )
    publish_all(broker.port, [(topic, b"m%d" % i, 1, None) for i in range(5)])
    first.inbox.wait_for(lambda items: len(items) >= 5)
    first.stop()  # never acked
    second = subscribe(broker.port, topic, protocol=V311, client_id=client_id, persistent=True)
    publish_all(broker.port, [(topic, b"after", 1, None)])
    got = second.inbox.wait_for_payload(b"after")
    assert [d.payload for d in got] == [b"m%d" % i for i in range(5)] + [b"after"]
    assert all(d.path == "fast" for d in got)


@needs_mosquitto
def test_tls_socket_is_not_wrapped_and_still_takes_the_fast_path(
    broker_factory: Callable[..., Broker],
    tmp_path: Path,
    mqtt_topic: str,
    subscribe: Callable[..., Subscriber],
) -> None:
    ca = make_test_ca(tmp_path / "ca")
    broker = broker_factory(prefer="mosquitto", tls=TlsListener(ca.server_cert, ca.server_key))
    assert broker.tls_port is not None
    sub = subscribe(
        broker.tls_port,
        f"{mqtt_topic}/#",
        protocol=V5,
        configure=lambda c: c.tls_set(ca_certs=str(ca.ca_cert)),
    )
    sock = sub.client.socket()
    assert isinstance(sock, ssl.SSLSocket)
    assert not isinstance(sock, BufferedSocket)
    payloads = burst_payloads(300)
    topic = f"{mqtt_topic}/tls"
    publish_all(broker.port, [(topic, p, 1, None) for p in payloads])
    got = sub.inbox.wait_for(lambda items: len(items) >= len(payloads))
    assert_same_payloads([d.payload for d in got], payloads, topic)
    assert all(d.path == "fast" for d in got)
    assert sub.ingest.fast_messages == len(payloads)


@needs_mosquitto
def test_a_unix_socket_is_buffered_too(
    broker_factory: Callable[..., Broker], mqtt_topic: str, subscribe: Callable[..., Subscriber]
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fastclient-"))  # short: sun_path is 108 bytes
    try:
        path = folder / "mqtt.sock"
        broker = broker_factory(prefer="mosquitto", extra_config=[f"listener 0 {path}"])
        sub = subscribe(1883, f"{mqtt_topic}/#", protocol=V311, host=str(path), transport="unix")
        sock = sub.client.socket()
        assert type(sock) is BufferedSocket
        assert sock.family == socket.AF_UNIX
        payloads = burst_payloads(300)
        topic = f"{mqtt_topic}/unix"
        publish_all(broker.port, [(topic, p, 1, None) for p in payloads])
        got = sub.inbox.wait_for(lambda items: len(items) >= len(payloads))
        assert_same_payloads([d.payload for d in got], payloads, topic)
        assert sub.ingest.fast_messages == len(payloads)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@needs_mosquitto
def test_websockets_are_not_wrapped_and_still_take_the_fast_path(
    broker_factory: Callable[..., Broker], mqtt_topic: str, subscribe: Callable[..., Subscriber]
) -> None:
    ws_port = find_free_port()
    broker = broker_factory(
        prefer="mosquitto", extra_config=[f"listener {ws_port} 127.0.0.1", "protocol websockets"]
    )
    sub = subscribe(ws_port, f"{mqtt_topic}/#", protocol=V5, transport="websockets")
    assert not isinstance(sub.client.socket(), BufferedSocket)
    # Capped at 200 kB: a 1 MiB message over websockets stalls paho's own Client as well.
    payloads = [p[:200_000] for p in burst_payloads(200)]
    topic = f"{mqtt_topic}/ws"
    publish_all(broker.port, [(topic, p, 1, None) for p in payloads])
    got = sub.inbox.wait_for(lambda items: len(items) >= len(payloads))
    assert_same_payloads([d.payload for d in got], payloads, topic)
    assert sub.ingest.fast_messages == len(payloads)


# == through MqttIngest ========================================================================


@needs_mosquitto
@pytest.mark.parametrize("protocol", [5, 311])
def test_mqtt_ingest_takes_readings_through_both_paths(
    broker: Broker, mqtt_topic: str, tmp_path: Path, protocol: int
) -> None:
    text = f"""
[gateway]
name = "fast-{uuid.uuid4().hex[:8]}"
state_dir = "{tmp_path}"

[mqtt]
host = "127.0.0.1"
port = {broker.port}
protocol = {protocol}
persistent_session = false

[[sensors]]
id = "level"
topic = "{mqtt_topic}/level"

[[sensors]]
id = "temp_{{room}}"
topic = "{mqtt_topic}/rooms/{{room}}/temperature"
"""
    config = validate_config(tomllib.loads(text))
    state = StateStore()
    readings: list[SensorSnapshot] = []
    lock = threading.Lock()

    def on_reading(snapshot: SensorSnapshot) -> None:
        with lock:
            readings.append(snapshot)

    ingest = MqttIngest(config, state, FrameStore(tmp_path / "frames", state), on_reading)
    ingest.start()
    try:
        assert ingest.ready.wait(WAIT), "never connected and subscribed"
        assert type(ingest._client.socket()) is BufferedSocket
        outgoing: list[Outgoing] = []
        for i in range(200):
            props = None
            if i % 10 == 3:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = [("origin", "test")]
            outgoing.append((f"{mqtt_topic}/level", b"%d.5" % i, 1, props))
        outgoing.append((f"{mqtt_topic}/rooms/attic/temperature", "19.25 °C".encode(), 1, None))
        publish_all(broker.port, outgoing)

        def level_values() -> list[Any]:
            with lock:
                return [r.value for r in readings if r.sensor == "level"]

        wait_until(
            lambda: len(level_values()) >= 200 and state.get("temp_attic") is not None,
            timeout=WAIT,
            interval=0.01,
        )
        assert level_values() == [i + 0.5 for i in range(200)]
        latest = state.get("level")
        assert latest is not None
        assert latest.value == 199.5
        attic = state.get("temp_attic")
        assert attic is not None
        assert attic.value == 19.25
        with_props = sum(1 for *_, props in outgoing if props is not None)
        fast = ingest._client.fast_messages
        # MQTT 5 hands the messages with properties to on_message; 3.1.1 never sees them.
        assert fast == len(outgoing) - (with_props if protocol == 5 else 0)
        assert fast > 0
        assert ingest.stats.messages == len(outgoing)
        assert ingest.stats.readings == len(outgoing)
        assert ingest.stats.rejected == 0
    finally:
        ingest.stop()


def test_the_mqtt5_connect_advertises_the_packet_limit() -> None:
    """No broker can make the gateway buffer more than max_payload_bytes (+ the topic)."""
    from gateway.ingest.client import TOPIC_ALLOWANCE, connect_kwargs, make_client

    text = """
[gateway]
name = "limits"
timezone = "UTC"

[mqtt]
host = "127.0.0.1"
max_payload_bytes = 100000
"""
    config = validate_config(tomllib.loads(text))
    props = connect_kwargs(config.mqtt)["properties"]
    assert props.MaximumPacketSize == 100000 + TOPIC_ALLOWANCE
    packed = props.pack()
    assert bytes((0x27,)) + (100000 + TOPIC_ALLOWANCE).to_bytes(4, "big") in packed
    client = make_client(config)
    assert client.max_packet_size == 100000 + TOPIC_ALLOWANCE
