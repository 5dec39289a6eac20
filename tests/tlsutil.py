"""A throw-away certificate authority for TLS tests, made with the openssl command."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@dataclass(frozen=True)
class CertificateSet:
    """Paths of a CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: str


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(folder: Path, name: str, usage: str, sans: str, key_args: list[str]) -> None:
    _run("req", *_EC, *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    ext = folder / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
    if sans:
        lines.append(f"subjectAltName={sans}")
    ext.write_text("\n".join(lines) + "\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name,
         cwd=folder)  # fmt: skip


def make_test_ca(
    folder: Path, *, server_names: str = "IP:127.0.0.1,DNS:localhost"
) -> CertificateSet:
    """Create a CA and sign a server and a client certificate (client key has a passphrase)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", *_EC, "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=things-gateway test CA", cwd=folder)  # fmt: skip
    _issue(folder, "server", "serverAuth", server_names, ["-nodes"])
    password = "client-key-passphrase-42"
    _issue(folder, "client", "clientAuth", "", ["-passout", f"pass:{password}"])
    return CertificateSet(
        folder / "ca.crt",
        folder / "server.crt",
        folder / "server.key",
        folder / "client.crt",
        folder / "client.key",
        password,
    )
