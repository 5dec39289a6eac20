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
  were handled (and before any PUBACK paho sends itself, so they stay in order), so
  QoS 1 stays at-least-once as with paho.  One difference: a ``disconnect()`` from
  another thread in the middle of a batch is written before that batch's PUBACKs,
  so on a persistent session the broker sends those messages again.

``manual_ack`` and ``suppress_exceptions`` behave as in paho; callbacks added with
``message_callback_add`` see only the messages paho's path handles.

``tests/test_fastclient.py`` checks each of these against a real broker, so an
upgrade of paho that changes the internals used here fails there, not in the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["READ_SIZE", "BufferedSocket", "FastMessageListener", "IngestClient"]

READ_SIZE = 65536
"""Bytes asked of the kernel per ``recv``."""
BATCH = 512
"""Most packets handled per ``loop_read`` before paho's loop runs again (keepalive, writes)."""
_PUBACK = mqtt.PUBACK
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS

FastMessageListener = Callable[[str, bytes], None]
"""``(topic, payload)`` of a QoS 0/1 PUBLISH, called in paho's network thread."""


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
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments as for ``paho.mqtt.client.Client``."""
        super().__init__(*args, **kwargs)
        self.on_fast_message: FastMessageListener | None = None
        self.fast_messages = 0
        """Messages that took the fast path (the rest took paho's)."""
        self._acks: list[int] = []

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._ssl or self._transport == "websockets":
            return sock  # SSL sockets buffer (and report pending()) already
        return BufferedSocket(sock)

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
            if self._acks:
                self._flush_acks()

    def _flush_acks(self) -> None:
        mids, self._acks = self._acks, []
        if self._sock is None:
            return  # connection lost before acking: the broker will send these again
        packet = b"".join(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
        self._packet_queue(_PUBACK, packet, 0, 0)

    def _handle_publish(self) -> MQTTErrorCode:
        callback = self.on_fast_message
        header: int = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if callback is None or qos > 1 or self._manual_ack:  # QoS 3 is paho's protocol error
            return self._paho_publish()
        if header & 0x01:
            # retained: sent once per subscription, and the receiver must know it is old
            return self._paho_publish()
        packet = self._in_packet["packet"]
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
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
        self.fast_messages += 1
        with self._in_callback_mutex:
            try:
                callback(topic, payload)
            except Exception as err:  # as paho's _handle_on_message does
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
        if qos:
            self._acks.append(mid)
        return _SUCCESS

    def _paho_publish(self) -> MQTTErrorCode:
        """paho's own handling, after the acks of earlier messages (PUBACKs keep their order)."""
        if self._acks:
            self._flush_acks()
        return super()._handle_publish()
