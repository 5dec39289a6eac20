"""systemd's notify protocol in a few lines: datagrams to ``$NOTIFY_SOCKET``.

No dependency: the protocol is ``KEY=VALUE`` lines in one datagram on an AF_UNIX
socket; a leading ``@`` names an abstract socket.  Outside systemd (no
``$NOTIFY_SOCKET``) every call is a no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and friends to systemd."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return bool(self.address)

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` fields (``ready=1`` becomes ``READY=1``); True if sent."""
        if not self.address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8"), target)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete (``Type=notify``)."""
        return self.send(ready=1, status=status) if status else self.send(ready=1)

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``."""
        return self.send(status=text.replace("\n", " "))

    def watchdog(self) -> bool:
        """Feed the watchdog (``WatchdogSec=``)."""
        return self.send(watchdog=1)

    def reloading(self) -> bool:
        """Tell systemd a reload has begun; send :meth:`ready` when done."""
        return self.send(reloading=1)

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down."""
        return self.send(stopping=1)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec=``), or None when off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
