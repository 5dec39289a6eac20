"""A paho client with a faster inbound path for the common PUBLISH.

Profiling a subscriber draining a queue of small JSON readings showed where
paho-mqtt 2.x spends its time per message, before any user code runs:

- reading each packet as ``recv(1)`` for the command byte, ``recv(1)`` per byte
  of the remaining length, then ``recv(n)``: three or more system calls, plus a
  ``select()`` per packet, since ``loop_read`` reads one packet at a time;
- building an MQTT 5 ``Properties`` object for every PUBLISH, even one without
  properties (a third of paho's time on the path);
- building an ``MQTTMessage``, whose ``MQTTMessageInfo`` makes a
  ``threading.Condition`` that nothing on the receiving side waits on;
- for QoS 1, one PUBACK packet, one wake-up byte and one ``send()`` per message.

:class:`IngestClient` keeps paho for everything (connect, TLS, keepalive, will,
reconnects, QoS 2, outgoing messages) and changes only that path:

- a plain TCP or Unix socket is read through :class:`BufferedSocket` (64 KiB at a
  time); its ``pending()`` tells paho's loop that bytes are waiting, the way an
  SSL socket's does, and :meth:`IngestClient.loop_read` handles every complete
  packet already buffered before returning to ``select()``;
- a QoS 0 or 1 PUBLISH without MQTT 5 properties, not retained and with a UTF-8
  topic goes straight to ``on_fast_message(topic, payload)``; everything else
  (properties, QoS 2, the retain flag, a malformed topic) takes paho's own path to
  ``on_message``, whose message tells whether it was retained;
- the PUBACKs of one batch are queued as one write, after the batch's messages
  were handled and ``on_batch_end`` ran (the gateway commits the batch's event
  firings there: a message is acknowledged only once recorded), so QoS 1 stays
  at-least-once as with paho.  Messages paho decodes itself are acknowledged the
  same way, in order with the rest;
- when the connection ends in the middle of a batch (the broker closes it, a server
  DISCONNECT, a protocol error), the PUBACKs not yet written are written before the
  socket closes, wherever the socket still takes them.  Those it does not take are
  remembered (packet id and content), and a redelivery of such a message (``DUP``
  set, same packet id and content) is acknowledged without being handled again
  (``duplicates``).  A ``disconnect()`` from another thread in the middle of a batch
  is written before that batch's PUBACKs; the gateway journals every batch's
  acknowledged messages (:meth:`IngestClient.batch_acks`, in ``on_batch_end``) and hands
  them to the next run's client (:meth:`IngestClient.remember_acked`), so such a
  redelivery, or one after a SIGKILL, is recognised the same way;
- :meth:`IngestClient.pause_acks` stops taking and acknowledging messages at once
  (shutting down: the broker keeps what arrives for the next start);
- with ``max_packet_size`` set, a PUBLISH whose packet is larger is never buffered:
  it is read and discarded in small pieces, keeping only its topic and packet id,
  then acknowledged (so it is not sent again) and reported to ``on_refused``.

``manual_ack`` and ``suppress_exceptions`` behave as in paho; callbacks added with
``message_callback_add`` see only the messages paho's path handles.

``tests/test_fastclient.py`` checks each of these against a real broker, so an
upgrade of paho that changes the internals used here fails there, not in the field.
"""

from __future__ import annotations

import select
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, _ConnectionState

__all__ = ["READ_SIZE", "BufferedSocket", "FastMessageListener", "IngestClient"]

READ_SIZE = 65536
"""Bytes asked of the kernel per ``recv``."""
BATCH = 512
"""Most packets handled per ``loop_read`` before paho's loop runs again (keepalive, writes)."""
LOST_ACKS = 4096
"""Most handled messages whose PUBACK never went out that are remembered (see ``duplicates``)."""
CONNACK_WAIT = 5.0
"""Seconds a CONNECT may wait for its CONNACK before the connection is given up."""
UNANSWERED_FALLBACK = 2
"""MQTT 5 CONNECTs closed unanswered in a row after which the client tries 3.1.1."""
CLOSE_WRITE_WAIT = 1.0
"""Seconds given to writing pending PUBACKs to a connection that is closing."""
_PUBACK = mqtt.PUBACK
# paho 2.2 calls it _last_bytes_received, 2.1 _last_msg_in
_LAST_IN = (
    "_last_bytes_received"
    if "_last_bytes_received" in mqtt.Client.__init__.__code__.co_names
    else "_last_msg_in"
)
_PUBLISH = mqtt.PUBLISH
_DISCONNECT = mqtt.DISCONNECT
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_CONN_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST

FastMessageListener = Callable[[str, bytes], None]
"""``(topic, payload)`` of a QoS 0/1 PUBLISH, called in paho's network thread."""
RefusedListener = Callable[[str, int, bool], None]
"""``(topic, packet size, poison)`` of a PUBLISH discarded unread: over
``max_packet_size``, or (``poison`` true) one of the ``poison`` messages."""


def _fresh_in_packet() -> dict[str, Any]:
    """paho's empty inbound packet state."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


@dataclass(slots=True)
class _Discard:
    """An oversized PUBLISH being read and dropped: only its head (topic, packet id) is kept.

    ``peek``: a packet of a poison message's size, read up to its topic (every byte
    kept) to decide whether it is that message (then dropped) or not (then paho reads
    the rest as usual)."""

    header: int
    size: int
    left: int
    need: int = 2
    head: bytearray = field(default_factory=bytearray)
    peek: bool = False
    poisoned: bool = False

    def take(self, chunk: bytes) -> None:
        """Account for ``chunk``, keeping the bytes up to the end of the packet id."""
        self.left -= len(chunk)
        if self.peek:
            self.head += chunk
            if self.need == 2 and len(self.head) >= 2:
                qos = (self.header & 0x06) >> 1
                self.need = 2 + ((self.head[0] << 8) | self.head[1]) + (2 if qos else 0)
            return
        while chunk and len(self.head) < self.need:
            room = self.need - len(self.head)
            self.head += chunk[:room]
            chunk = chunk[room:]
            if self.need == 2 and len(self.head) == 2:
                qos = (self.header & 0x06) >> 1
                self.need = 2 + ((self.head[0] << 8) | self.head[1]) + (2 if qos else 0)

    def topic_and_mid(self) -> tuple[str, int | None]:
        """The packet's topic (undecodable bytes replaced) and packet id (QoS 1/2)."""
        head = bytes(self.head)
        if len(head) < 2:
            return "", None
        end = 2 + ((head[0] << 8) | head[1])
        topic = head[2:end].decode("utf-8", errors="replace")
        qos = (self.header & 0x06) >> 1
        if not qos or len(head) < end + 2:
            return topic, None
        return topic, (head[end] << 8) | head[end + 1]


class BufferedSocket:
    """A connected, non-blocking stream socket read through a buffer.

    ``recv(n)`` answers from the buffer when it holds anything, else makes one
    ``recv(max(n, READ_SIZE))`` system call; writes and everything else go
    straight to the socket.  ``pending()`` is the number of buffered bytes.
    """

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        """Wrap ``sock`` (a ``socket.socket``); it is closed with this object."""
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; raises ``BlockingIOError`` when none are available."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            data: bytes = self._sock.recv(max(bufsize, READ_SIZE))
            if len(data) <= bufsize:
                return data  # all of it fits: no copy into the buffer
            buf, pos = data, 0
            self._buf = data
        end = pos + bufsize
        self._pos = end
        if end >= len(buf):
            self._buf, self._pos = b"", 0
        return buf[pos:end]

    def pending(self) -> int:
        """Bytes received from the kernel and not yet read."""
        return len(self._buf) - self._pos

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``)."""
        fileno: int = self._sock.fileno()
        return fileno

    def send(self, data: bytes | bytearray) -> int:
        """Send on the socket (unbuffered)."""
        sent: int = self._sock.send(data)
        return sent

    def close(self) -> None:
        """Close the socket and drop the buffer."""
        self._buf, self._pos = b"", 0
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class IngestClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with the fast inbound path described above.

    Set ``on_fast_message`` to receive plain QoS 0/1 messages as ``(topic,
    payload)``; ``on_message`` still receives the rest.  With ``on_fast_message``
    unset the client behaves exactly like paho's, apart from buffered reads.
    ``in_dup`` tells a callback whether the message it handles carries MQTT's DUP
    flag (the broker sent it before).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments as for ``paho.mqtt.client.Client``."""
        super().__init__(*args, **kwargs)
        self.on_fast_message: FastMessageListener | None = None
        self.on_batch_end: Callable[[], None] | None = None
        """Called before a batch's PUBACKs are queued (and before the socket closes)."""
        self.on_refused: RefusedListener | None = None
        self.max_packet_size: int | None = None
        """Inbound PUBLISH packets larger than this are discarded while read (None: no limit)."""
        self.poison: set[tuple[int, str]] = set()
        """``(remaining length, topic)`` of messages that stopped a previous run: discarded
        while read, never buffered (see ``in_size``)."""
        self.in_size = 0
        """The remaining length of the PUBLISH being handled (for ``poison``)."""
        self.watch_size: int | None = None
        """A PUBLISH this large or larger is reported to ``on_watch`` before it is buffered."""
        self.on_watch: Callable[[int, str], None] | None = None
        """``(remaining length, topic)`` of a large PUBLISH about to be read whole."""
        self.fast_messages = 0
        """Messages that took the fast path (the rest took paho's)."""
        self.duplicates = 0
        """Redeliveries of handled messages whose PUBACK was lost, acknowledged unhandled."""
        self.refused = 0
        """PUBLISH packets over ``max_packet_size``, discarded."""
        self.in_dup = False
        self._acks: list[int] = []
        self._ack_keys: list[tuple[int, int]] = []
        self._queued_keys: list[tuple[int, int]] = []
        self._lost: dict[int, int] = {}
        self._acking = True
        self._closing = False
        self._discard: _Discard | None = None
        self._awaiting_connack = False
        self._connect_sent = 0.0
        self._unanswered = 0
        self.fallback_clean_session = True
        """The 3.1.1 clean-session flag used after falling back from MQTT 5."""
        self.on_protocol_fallback: Callable[[str], None] | None = None
        """Called (with the broker's answer) when an MQTT 5 connect is refused as an
        unsupported protocol version and the client goes on with MQTT 3.1.1."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._ssl or self._transport == "websockets":
            return sock  # SSL sockets buffer (and report pending()) already
        return BufferedSocket(sock)

    def _send_connect(self, keepalive: int) -> MQTTErrorCode:
        self._awaiting_connack = True
        self._connect_sent = time.monotonic()
        return super()._send_connect(keepalive)

    def loop_misc(self) -> MQTTErrorCode:
        """paho's, and a CONNECT left unanswered for :data:`CONNACK_WAIT` closes the
        connection (some 3.1.1 brokers neither answer an MQTT 5 CONNECT nor hang up)."""
        waited = time.monotonic() - self._connect_sent
        if self._awaiting_connack and self._sock is not None and waited > CONNACK_WAIT:
            self._sock_close()
            self._state = _ConnectionState.MQTT_CS_CONNECTION_LOST
            self._do_on_disconnect(packet_from_broker=False, v1_rc=_CONN_LOST)
            return _CONN_LOST
        return super().loop_misc()

    def _handle_connack(self) -> MQTTErrorCode:
        self._awaiting_connack = False
        self._unanswered = 0
        packet = self._in_packet["packet"]
        # 0x84 (MQTT 5: unsupported protocol version) or 0x01 (a 3.1.1 broker's answer)
        if self._protocol == mqtt.MQTTv5 and len(packet) >= 2 and packet[1] in (0x01, 0x84):
            self._fall_back(f"CONNACK return code 0x{packet[1]:02x}, unsupported protocol version")
            if not self._reconnect_on_failure:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            return self.reconnect()
        return super()._handle_connack()

    def _fall_back(self, answer: str) -> None:
        """Go on with MQTT 3.1.1: the broker does not take MQTT 5."""
        self._protocol = mqtt.MQTTv311
        self._clean_session = self.fallback_clean_session
        self._connect_properties = None
        callback = self.on_protocol_fallback
        if callback is not None:
            callback(answer)

    def _connect_unanswered(self) -> None:
        """The connection closes with our MQTT 5 CONNECT unanswered: some 3.1.1 brokers
        (amqtt with a will set) fail to parse it and hang up; twice in a row means that."""
        self._awaiting_connack = False
        if self._protocol != mqtt.MQTTv5:
            return
        self._unanswered += 1
        if self._unanswered >= UNANSWERED_FALLBACK:
            self._unanswered = 0
            self._fall_back("the broker closed the connection without answering an MQTT 5 CONNECT")

    def pause_acks(self) -> None:
        """From now on take no message and acknowledge none (any thread): the broker keeps
        QoS 1 messages for the next connection of a persistent session."""
        self._acking = False
        self.manual_ack_set(True)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's ``loop_read``, then every complete packet already buffered (up to
        :data:`BATCH`); the batch's PUBACKs are queued as one write at the end."""
        try:
            rc = super().loop_read(max_packets)
            sock = self._sock
            if type(sock) is BufferedSocket:
                budget = BATCH
                while rc == _SUCCESS and budget and sock.pending() and self._sock is sock:
                    rc = super().loop_read(1)
                    budget -= 1
            return rc
        finally:
            self._flush_acks()

    def _batch_end(self) -> None:
        callback = self.on_batch_end
        if callback is not None:
            callback()

    def _flush_acks(self) -> None:
        self._batch_end()
        if not self._acks:
            return
        mids, self._acks = self._acks, []
        keys, self._ack_keys = self._ack_keys, []
        if self._sock is None:
            self._remember_lost(keys)  # the broker will send these again
            return
        # Queued, not yet written: if the write fails, the close remembers them as lost.
        self._queued_keys = keys
        packet = b"".join(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
        self._packet_queue(_PUBACK, packet, 0, 0)

    def batch_acks(self) -> list[tuple[int, int]]:
        """The messages this batch acknowledges: ``(packet id, digest)`` (a digest of
        topic and payload, stable across restarts; 0 for those paho handled)."""
        return self._ack_keys

    def remember_acked(self, acks: Mapping[int, int]) -> None:
        """Messages a previous run recorded and acknowledged (from its readings
        journal): if the broker sends one again (DUP, same id, same digest), the
        PUBACK was lost with that run, and it is acknowledged, not taken again."""
        self._remember_lost(list(acks.items()))

    def _remember_lost(self, keys: list[tuple[int, int]]) -> None:
        lost = self._lost
        for mid, key in keys:
            lost[mid] = key
        while len(lost) > LOST_ACKS:
            del lost[next(iter(lost))]

    # -- the connection closing -----------------------------------------------------

    def _sock_close(self) -> None:
        if self._sock is not None and self._awaiting_connack:
            self._connect_unanswered()
        if self._sock is not None and not self._closing:
            self._closing = True
            try:
                self._write_before_close()
            except Exception as err:  # closing must close, whatever happened
                self._easy_log(mqtt.MQTT_LOG_WARNING, "writing PUBACKs before close: %s", err)
            finally:
                self._closing = False
        self._discard = None
        super()._sock_close()

    def _write_before_close(self) -> None:
        """Write what is queued (PUBACKs above all) before the socket closes, in order."""
        self._batch_end()
        keys, self._ack_keys = [*self._queued_keys, *self._ack_keys], []
        self._queued_keys = []
        mids, self._acks = self._acks, []
        if self._state == _ConnectionState.MQTT_CS_DISCONNECTING:
            self._remember_lost(keys)  # our DISCONNECT went first
            return
        data = bytearray()
        for packet in list(self._out_packet):
            if (packet["command"] & 0xF0) == _DISCONNECT:
                break
            data += packet["packet"][packet["pos"] :]
        data += b"".join(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
        if not data:
            return
        if not self._send_all(bytes(data)):
            self._remember_lost(keys)
            return
        self._out_packet.clear()

    def _send_all(self, data: bytes) -> bool:
        """Send ``data`` on the (non-blocking) socket within :data:`CLOSE_WRITE_WAIT`."""
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + CLOSE_WRITE_WAIT
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(bytes(view))
                view = view[sent:]
            except (BlockingIOError, InterruptedError):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [sock], [], left)
            except OSError:
                return False
        return True

    # -- reading: oversized packets are discarded, never buffered ----------------------

    def _packet_read(self) -> MQTTErrorCode:
        limit = self.max_packet_size
        if limit is None and not self.poison and self.watch_size is None:
            return super()._packet_read()
        if self._discard is not None:
            return self._read_discard()
        if self._in_packet["have_remaining"] == 0:
            rc = self._read_fixed_header()
            if rc != _SUCCESS:
                return rc
            packet = self._in_packet
            if (packet["command"] & 0xF0) == _PUBLISH:
                size = packet["remaining_length"]
                if limit is not None and size > limit:
                    self._discard = _Discard(packet["command"], size, size)
                    return self._read_discard()
                watch = self.watch_size is not None and size >= self.watch_size
                if watch or any(size == poison for poison, _ in self.poison):
                    self._discard = _Discard(packet["command"], size, size, peek=True)
                    return self._read_discard()
        return super()._packet_read()

    def _read_fixed_header(self) -> MQTTErrorCode:
        """The command byte and remaining length, as paho reads them (paho reads the rest)."""
        packet = self._in_packet
        try:
            if packet["command"] == 0:
                command = self._sock_recv(1)
                if not command:
                    return _CONN_LOST
                packet["command"] = command[0]
            while True:
                byte = self._sock_recv(1)
                if not byte:
                    return _CONN_LOST
                packet["remaining_count"].append(byte[0])
                if len(packet["remaining_count"]) > 4:
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL
                packet["remaining_length"] += (byte[0] & 127) * packet["remaining_mult"]
                packet["remaining_mult"] *= 128
                if not byte[0] & 128:
                    break
        except BlockingIOError:
            return _AGAIN
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return _CONN_LOST
        packet["have_remaining"] = 1
        packet["to_process"] = packet["remaining_length"]
        return _SUCCESS

    def _read_discard(self) -> MQTTErrorCode:
        discard = self._discard
        assert discard is not None
        for _ in range(100):  # as paho: do not get stuck in one huge message
            if not discard.left:
                return self._refuse(discard)
            try:
                chunk = self._sock_recv(min(discard.left, READ_SIZE))
            except BlockingIOError:
                return _AGAIN
            except OSError as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return _CONN_LOST
            if not chunk:
                return _CONN_LOST
            discard.take(chunk)
            with self._msgtime_mutex:  # keepalive: bytes did arrive
                setattr(self, _LAST_IN, mqtt.time_func())
            if discard.peek and discard.need > 2 and len(discard.head) >= discard.need:
                topic, _mid = discard.topic_and_mid()
                if (discard.size, topic) not in self.poison:
                    return self._read_rest(discard, topic)
                discard.peek = False
                discard.poisoned = True
                del discard.head[discard.need :]
        return self._refuse(discard) if not discard.left else _AGAIN

    def _read_rest(self, discard: _Discard, topic: str) -> MQTTErrorCode:
        """Not a poison message: paho reads the rest of it as usual (``on_watch`` first)."""
        self._discard = None
        watch = self.on_watch
        if watch is not None and self.watch_size is not None and discard.size >= self.watch_size:
            watch(discard.size, topic)
        packet = self._in_packet
        packet["packet"] = bytearray(discard.head)
        packet["to_process"] = discard.left
        return super()._packet_read()

    def _refuse(self, discard: _Discard) -> MQTTErrorCode:
        self._discard = None
        self._in_packet = _fresh_in_packet()  # type: ignore[assignment]
        topic, mid = discard.topic_and_mid()
        self.refused += 1
        if not self._acking:
            return _SUCCESS
        callback = self.on_refused
        if callback is not None:
            with self._in_callback_mutex:
                try:
                    callback(topic, discard.size, discard.poisoned)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_refused: %s", err)
        if mid is not None and (discard.header & 0x06) == 0x02:
            self._acks.append(mid)  # counted and dropped: never sent again
        return _SUCCESS

    # -- PUBLISH ----------------------------------------------------------------------

    def _handle_publish(self) -> MQTTErrorCode:
        if not self._acking:
            return _SUCCESS  # paused: neither taken nor acknowledged
        callback = self.on_fast_message
        header: int = self._in_packet["command"]
        self.in_size = self._in_packet["remaining_length"]
        qos = (header & 0x06) >> 1
        if callback is None or qos > 1 or self._manual_ack:  # QoS 3 is paho's protocol error
            return self._paho_publish()
        if header & 0x01:
            # retained: sent once per subscription, and the receiver must know it is old
            return self._paho_publish()
        packet = self._in_packet["packet"]
        try:
            end = topic_end = 2 + ((packet[0] << 8) | packet[1])
            topic = packet[2:end].decode("utf-8")
            mid = 0
            if qos:
                mid = (packet[end] << 8) | packet[end + 1]
                end += 2
            if self._protocol == mqtt.MQTTv5:
                if packet[end]:
                    return self._paho_publish()  # has properties: let paho decode them
                end += 1
        except (IndexError, UnicodeDecodeError):
            return self._paho_publish()  # paho reports it as it always has
        if not topic or end > len(packet):
            return self._paho_publish()
        payload = bytes(memoryview(packet)[end:])  # paho collects packets in a bytearray
        dup = bool(header & 0x08)
        key = 0
        if qos:
            key = zlib.crc32(payload, zlib.crc32(packet[2:topic_end]))
            if dup and self._lost.get(mid) == key:
                del self._lost[mid]
                self.duplicates += 1
                self._acks.append(mid)
                self._ack_keys.append((mid, key))
                return _SUCCESS
        self.fast_messages += 1
        self.in_dup = dup
        with self._in_callback_mutex:
            try:
                callback(topic, payload)
            except Exception as err:  # as paho's _handle_on_message does
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
        if qos:
            self._acks.append(mid)
            self._ack_keys.append((mid, key))
        return _SUCCESS

    def _paho_publish(self) -> MQTTErrorCode:
        """paho's own handling; a QoS 1 message is acknowledged with the batch (after
        ``on_batch_end``), so PUBACKs keep their order and follow the recording."""
        header: int = self._in_packet["command"]
        if (header & 0x06) != 0x02 or self._manual_ack:
            self._flush_acks()
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
            mid = (packet[end] << 8) | packet[end + 1]
        except IndexError:
            self._flush_acks()
            return super()._handle_publish()
        self.in_dup = bool(header & 0x08)
        self._manual_ack = True
        try:
            rc = super()._handle_publish()
        finally:
            self._manual_ack = not self._acking
        if rc == _SUCCESS and self._acking:
            self._acks.append(mid)
            self._ack_keys.append((mid, 0))
        return rc
