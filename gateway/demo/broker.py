"""Start a private MQTT broker: a mosquitto subprocess, or amqtt in a thread.

Used by the demo (``things-gateway demo``) and by the test suite, so that neither
depends on a system-wide broker. mosquitto is preferred because it is what a real
site runs (MQTT 5 and 3.1.1, on-disk persistence); amqtt is a pure-Python fallback
that speaks **MQTT 3.1.1 only** and keeps sessions in memory.

Example::

    with start_broker() as broker:
        client.connect(broker.host, broker.port)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "Broker",
    "BrokerKind",
    "BrokerStartError",
    "BrokerUnavailable",
    "TlsListener",
    "find_free_port",
    "find_mosquitto",
    "start_broker",
]

BrokerKind = Literal["mosquitto", "amqtt"]

#: How long to wait for a broker to accept TCP connections, and to shut down.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_INSTALL_HINT = (
    "no MQTT broker available: install mosquitto (`apt install mosquitto`) "
    "or the pure-Python fallback (`pip install 'things-gateway[demo]'`)"
)


class BrokerUnavailable(RuntimeError):  # noqa: N818 - public name fixed by the design
    """Neither the mosquitto binary nor the amqtt package can be found."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{_INSTALL_HINT}{': ' + detail if detail else ''}")


class BrokerStartError(RuntimeError):
    """A broker was found but did not start (port in use, bad config, crash)."""


@dataclass(frozen=True)
class TlsListener:
    """A second, TLS-only mosquitto listener (for tests of TLS clients).

    Attributes:
        certfile: the broker's certificate (PEM).
        keyfile: its private key (PEM, unencrypted).
        cafile: CA that client certificates must chain to (needed with ``require_certificate``).
        require_certificate: refuse clients without a valid certificate.
        port: TCP port; ``None`` picks a free one.
    """

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_certificate: bool = False
    port: int | None = None


class Broker:
    """Handle on a running private broker; stop it with :meth:`stop` or ``with``.

    Attributes:
        host: address the broker listens on.
        port: TCP port the broker listens on.
        kind: ``"mosquitto"`` or ``"amqtt"`` (the latter speaks MQTT 3.1.1 only).
        tls_port: port of the TLS listener, when one was asked for.
    """

    def __init__(
        self,
        host: str,
        port: int,
        kind: BrokerKind,
        stopper: Callable[[], None],
        tls_port: int | None = None,
    ) -> None:
        """Wrap a started broker; ``stopper`` shuts it down and is called at most once."""
        self.host = host
        self.port = port
        self.kind: BrokerKind = kind
        self.tls_port = tls_port
        self._stopper: Callable[[], None] | None = stopper
        self._lock = threading.Lock()
        _running.add(self)

    @property
    def running(self) -> bool:
        """True until :meth:`stop` has been called."""
        return self._stopper is not None

    def stop(self) -> None:
        """Stop the broker and wait until it has shut down; safe to call repeatedly."""
        with self._lock:
            stopper, self._stopper = self._stopper, None
            if stopper is not None:
                stopper()
        _running.discard(self)

    def __enter__(self) -> Self:
        """Return self; the broker is already running."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Broker {self.kind} {self.host}:{self.port} {state}>"


# Strong references: a handle dropped without stop() must still be stopped at exit.
_running: set[Broker] = set()


@atexit.register
def _stop_all() -> None:
    for broker in list(_running):
        broker.stop()


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary: on PATH, else Debian's /usr/sbin, else None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401 - a real import also checks its dependencies
    except ImportError:
        return False
    return True


def start_broker(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    prefer: Literal["auto", "mosquitto", "amqtt"] = "auto",
    persistence_dir: Path | None = None,
    tls: TlsListener | None = None,
    extra_config: Sequence[str] = (),
) -> Broker:
    """Start a private MQTT broker on ``host:port`` and return once it accepts connections.

    Args:
        host: address to listen on (loopback by default: the broker allows anonymous
            clients). amqtt needs an IPv4 address or a host name here.
        port: TCP port; ``None`` picks a free one (retrying if another process takes it first).
        prefer: ``"mosquitto"``, ``"amqtt"``, or ``"auto"`` (mosquitto when installed,
            else amqtt). amqtt speaks MQTT 3.1.1 only.
        persistence_dir: mosquitto only: keep sessions, subscriptions and queued QoS 1/2
            messages in this folder, so a broker restarted with the same folder (and port)
            resumes persistent sessions. amqtt ignores it (its sessions live in memory).
        tls: mosquitto only: also listen with TLS (see :class:`TlsListener`); the port is
            ``Broker.tls_port``.
        extra_config: mosquitto only: more lines for its config file, e.g.
            ``["max_queued_messages 0"]``.

    Raises:
        BrokerUnavailable: the preferred broker (or, for ``auto``, either) is not installed.
        BrokerStartError: the broker was found but did not start.
    """
    kind = _choose_kind(prefer)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else find_free_port(host)
        try:
            if kind == "mosquitto":
                return _start_mosquitto(host, chosen, persistence_dir, tls, extra_config)
            if tls is not None:
                raise BrokerUnavailable("a TLS listener needs mosquitto")
            return _start_amqtt(host, chosen)
        except BrokerStartError:
            # A free port can be taken between find_free_port and bind; try another.
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _choose_kind(prefer: Literal["auto", "mosquitto", "amqtt"]) -> BrokerKind:
    if prefer in ("auto", "mosquitto") and find_mosquitto() is not None:
        return "mosquitto"
    if prefer == "mosquitto":
        raise BrokerUnavailable("mosquitto not found on PATH or in /usr/sbin")
    if _amqtt_available():
        return "amqtt"
    raise BrokerUnavailable("amqtt is not importable" if prefer == "amqtt" else "")


# MQTT 3.1.1 CONNECT (clean session, empty client id, keepalive 5 s), its CONNACK, DISCONNECT.
_PROBE_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x05\x00\x00"
_PROBE_CONNACK = b"\x20\x02\x00\x00"
_PROBE_DISCONNECT = b"\xe0\x00"


def _answers_mqtt(host: str, port: int) -> bool:
    """True if an MQTT broker accepts a connection on host:port.

    A bare TCP connect is not enough: when the port is taken by another program the
    connect succeeds although our broker failed to bind.  Any CONNACK counts: a broker
    without anonymous access answers the probe "not authorized" (return code 5).
    """
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(_PROBE_CONNECT)
            reply = sock.recv(len(_PROBE_CONNACK))
            sock.sendall(_PROBE_DISCONNECT)
    except OSError:
        return False
    return len(reply) == len(_PROBE_CONNACK) and reply[:3] == _PROBE_CONNACK[:3]


def _wait_until_listening(host: str, port: int, alive: Callable[[], bool]) -> bool:
    """Poll until the broker answers on ``host:port``; False on timeout or once not alive()."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            return False
        if _answers_mqtt(host, port):
            return True
        time.sleep(0.02)
    return False


# --- mosquitto ------------------------------------------------------------------------------


def _tls_lines(host: str, port: int, tls: TlsListener) -> list[str]:
    lines = [
        f"listener {port} {host}",
        f"certfile {tls.certfile.resolve()}",
        f"keyfile {tls.keyfile.resolve()}",
    ]
    if tls.cafile is not None:
        lines.append(f"cafile {tls.cafile.resolve()}")
    lines.append(f"require_certificate {'true' if tls.require_certificate else 'false'}")
    return lines


def _mosquitto_config(
    host: str,
    port: int,
    persistence_dir: Path | None,
    tls: tuple[int, TlsListener] | None = None,
    extra: Sequence[str] = (),
) -> str:
    lines = [
        f"listener {port} {host}",
        *(_tls_lines(host, *tls) if tls else []),
        "allow_anonymous true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        # As root, mosquitto 2 drops to the "mosquitto" user, which then cannot write
        # persistence files in the caller's folders.
        lines.append("user root")
    if persistence_dir is not None:
        persistence_dir.mkdir(parents=True, exist_ok=True)
        # mosquitto concatenates location and file name, so the trailing slash matters.
        lines += ["persistence true", f"persistence_location {persistence_dir.resolve()}/"]
    else:
        lines.append("persistence false")
    lines.extend(extra)
    return "\n".join(lines) + "\n"


def _mosquitto_command(exe: str, conf: Path) -> list[str]:
    command = [exe, "-c", str(conf)]
    setpriv = shutil.which("setpriv")
    # If this process is killed outright (SIGKILL, a CI timeout) the kernel then sends
    # mosquitto SIGTERM instead of leaving it running. The death signal follows the
    # *thread* that started the child, so only the main thread can rely on it.
    if setpriv and threading.current_thread() is threading.main_thread():
        command = [setpriv, "--pdeathsig", "TERM", *command]
    return command


def _start_mosquitto(
    host: str,
    port: int,
    persistence_dir: Path | None,
    tls: TlsListener | None = None,
    extra: Sequence[str] = (),
) -> Broker:
    exe = find_mosquitto()
    if exe is None:
        raise BrokerUnavailable("mosquitto not found on PATH or in /usr/sbin")
    workdir = Path(tempfile.mkdtemp(prefix="things-mosquitto-"))
    conf = workdir / "mosquitto.conf"
    tls_port = None
    if tls is not None:
        tls_port = tls.port if tls.port is not None else find_free_port(host)
    conf.write_text(
        _mosquitto_config(
            host, port, persistence_dir, (tls_port, tls) if tls and tls_port else None, extra
        )
    )
    log_path = workdir / "mosquitto.log"
    # A file rather than a pipe: nobody drains a pipe, and a full one would block mosquitto.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _mosquitto_command(exe, conf),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl-C reaches its owner, which stops
            # the gateway first and then the broker, instead of the broker vanishing
            # under a gateway that is still stopping (and logs a lost connection).
            start_new_session=True,
        )
    if not _wait_until_listening(host, port, lambda: proc.poll() is None):
        _terminate(proc)
        output = log_path.read_text(errors="replace").strip()
        shutil.rmtree(workdir, ignore_errors=True)
        raise BrokerStartError(
            f"mosquitto did not start on {host}:{port} (exit code {proc.returncode}): "
            f"{output or 'no output'}"
        )

    def stop() -> None:
        _terminate(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    return Broker(host, port, "mosquitto", stop, tls_port)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (mosquitto then saves its persistence file), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- amqtt ----------------------------------------------------------------------------------


class _AmqttThread:
    """amqtt's asyncio broker on its own event loop in a daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"amqtt-{host}:{port}", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until the listener is bound (or failed)."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise BrokerStartError(f"amqtt did not start on {self.host}:{self.port} in time")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT)
            raise BrokerStartError(
                f"amqtt did not start on {self.host}:{self.port}: {self._error}"
            ) from self._error

    def stop(self) -> None:
        """Ask the broker to shut down and wait for the thread to finish."""
        if self._stop_requested is not None:
            # RuntimeError: the loop has already closed, so the broker is gone anyway.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        from amqtt.broker import Broker as AmqttBroker  # optional dependency: imported late

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous auth: the default logging and $SYS plugins add noise and timers.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        try:
            broker = AmqttBroker(config, loop=asyncio.get_running_loop())
            await broker.start()
        except Exception as exc:  # reported to the starting thread, not lost in this one
            self._error = exc
            self._ready.set()
            return
        self._stop_requested = asyncio.Event()
        self._ready.set()
        await self._stop_requested.wait()
        await broker.shutdown()


def _start_amqtt(host: str, port: int) -> Broker:
    if not _amqtt_available():
        raise BrokerUnavailable("amqtt is not importable")
    runner = _AmqttThread(host, port)
    # No TCP probe here: start() returns once the listener is bound, and amqtt logs an
    # error for every connection that closes without sending CONNECT.
    runner.start()
    return Broker(host, port, "amqtt", runner.stop)
