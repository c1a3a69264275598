"""A secured Temporal for the tests: Debian's nginx terminating TLS in front of a dev server.

The dev server speaks plain gRPC only, and Temporal Cloud or a production cluster never does,
so nginx (its grpc module and HTTP/2 are in Debian's build) stands in for the secured front:
one listener with TLS alone (a private CA, a server name that is not the address dialled),
one with mutual TLS (`ssl_verify_client on`), one checking `Authorization: Bearer <key>` as
Temporal Cloud checks an API key. Certificates are made with the `openssl` CLI, X.509 v3 with
subjectAltName (the SDK's rustls refuses v1 certificates). nginx runs in the foreground as
the current user, every path it writes under a temp prefix, on free loopback ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NGINX = "/usr/sbin/nginx"
SERVER_NAME = "temporal.test"
API_KEY = "rmd-test-key-0c5e2a"


def nginx_binary() -> str | None:
    if Path(NGINX).is_file():
        return NGINX
    return shutil.which("nginx")


@dataclass(frozen=True)
class Certificates:
    ca: Path  # signs the server certificate: what a client trusts
    server_cert: Path
    server_key: Path
    client_ca: Path  # signs client certificates: what the mTLS listener trusts
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusted by nobody: a client given it must fail to verify the server
    stranger_cert: Path  # a client certificate the mTLS listener does not trust
    stranger_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-sha256", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    return cert, key


def make_certificates(folder: Path) -> Certificates:
    """Two CAs that sign, one that signs nothing we use; X.509 v3 leaves with subjectAltName."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "server-ca")
    client_ca = _ca(folder, "client-ca")
    other_ca = _ca(folder, "other-ca")
    server = _leaf(
        folder,
        "server",
        ca,
        f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{SERVER_NAME}\n",
    )
    client_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:remedium-worker\n"
    )
    client = _leaf(folder, "client", client_ca, client_ext)
    stranger = _leaf(folder, "stranger", other_ca, client_ext)
    return Certificates(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_ca=client_ca[0],
        client_cert=client[0],
        client_key=client[1],
        other_ca=other_ca[0],
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SecuredFront:
    """nginx running with its three listeners; addresses are `127.0.0.1:<port>`."""

    process: subprocess.Popen[bytes]
    prefix: Path
    certs: Certificates
    tls_address: str
    mtls_address: str
    bearer_address: str

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _config(prefix: Path, certs: Certificates, upstream: str, ports: tuple[int, int, int]) -> str:
    tls = f"ssl_certificate {certs.server_cert};\n    ssl_certificate_key {certs.server_key};"
    # Long polls (workflow and activity task polls) hold a request open for about a minute:
    # nginx's 60 s defaults would cut them, and a 1 MiB body limit would refuse big histories.
    upstream_block = (
        f"grpc_pass grpc://{upstream};\n      grpc_read_timeout 300s;\n      grpc_send_timeout 300s;"
    )
    temp = "\n  ".join(
        f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 512; }}
http {{
  access_log {prefix / "access.log"};
  {temp}
  client_max_body_size 0;
  client_body_timeout 300s;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{ports[0]} ssl http2;
    {tls}
    location / {{
      {upstream_block}
    }}
  }}
  server {{
    listen 127.0.0.1:{ports[1]} ssl http2;
    {tls}
    ssl_client_certificate {certs.client_ca};
    ssl_verify_client on;
    location / {{
      {upstream_block}
    }}
  }}
  server {{
    listen 127.0.0.1:{ports[2]} ssl http2;
    {tls}
    location / {{
      # Answered as Temporal Cloud answers a bad key: gRPC status 16 (UNAUTHENTICATED).
      if ($http_authorization != "Bearer {API_KEY}") {{
        add_header grpc-status 16 always;
        add_header grpc-message "Request unauthenticated" always;
        return 401;
      }}
      {upstream_block}
    }}
  }}
}}
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_front(nginx: str, prefix: Path, upstream: str, timeout: float = 30.0) -> SecuredFront:
    """Certificates, a config, nginx in the foreground; returns once all three ports accept."""
    prefix.mkdir(parents=True, exist_ok=True)
    certs = make_certificates(prefix / "certs")
    ports = (free_port(), free_port(), free_port())
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, certs, upstream, ports))
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    front = SecuredFront(
        process=process,
        prefix=prefix,
        certs=certs,
        tls_address=f"127.0.0.1:{ports[0]}",
        mtls_address=f"127.0.0.1:{ports[1]}",
        bearer_address=f"127.0.0.1:{ports[2]}",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"nginx exited at start: {stderr.strip()} {front.error_log()}")
        if all(_listening(port) for port in ports):
            return front
        time.sleep(0.1)
    front.stop()
    raise RuntimeError(f"nginx did not listen within {timeout:.0f}s: {front.error_log()}")
