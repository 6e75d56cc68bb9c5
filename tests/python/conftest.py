"""Fixtures for the polyglot (Python grpcio) end-to-end check of the mesh.

* ``stubs``: Python stubs generated from every .proto under ``proto/`` with grpc_tools.protoc.
* ``mesh``: the ``pm run`` process, on free ports with a fresh data dir, stopped with SIGTERM.
* ``channel``: an mTLS channel to the org port, using the dev PKI's client certificate.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


# --------------------------------------------------------------------------------------------------
# Stub generation


def generate_stubs(out_dir: Path, proto_root: Path = PROTO_ROOT) -> Path:
    """Generates *_pb2.py / *_pb2_grpc.py for every .proto under proto_root into out_dir.

    Returns out_dir. Raises RuntimeError with protoc's output when generation fails.
    """
    import grpc_tools

    wkt_include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {proto_root}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{wkt_include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    res = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(
            f"protoc failed ({res.returncode}):\n{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
        )
    # Regular packages (not namespace packages) so that nothing else named `pm` on sys.path can
    # shadow or merge with the generated tree.
    for d in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        if d != out_dir and any(d.rglob("*_pb2.py")):
            (d / "__init__.py").touch()
    return out_dir


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """The generated modules, as a namespace: org_pb2, org_grpc, res_pb2."""
    gen = generate_stubs(tmp_path_factory.mktemp("gen"))
    sys.path.insert(0, str(gen))
    import importlib

    ns = types.SimpleNamespace(
        gen_dir=gen,
        org_pb2=importlib.import_module("pm.org.v1.org_service_pb2"),
        org_grpc=importlib.import_module("pm.org.v1.org_service_pb2_grpc"),
        res_pb2=importlib.import_module("pm.org.v1.resources_pb2"),
    )
    yield ns
    try:
        sys.path.remove(str(gen))
    except ValueError:
        pass


# --------------------------------------------------------------------------------------------------
# The mesh process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mesh:
    org_port: int
    rbac_port: int
    data_dir: Path
    pki_dir: Path
    proc: subprocess.Popen
    stdout_lines: list = field(default_factory=list)
    stderr_path: Path | None = None

    @property
    def ca(self) -> bytes:
        return (self.pki_dir / "ca.crt").read_bytes()

    @property
    def client_cert(self) -> bytes:
        return (self.pki_dir / "client.crt").read_bytes()

    @property
    def client_key(self) -> bytes:
        return (self.pki_dir / "client.key").read_bytes()

    def diagnostics(self) -> str:
        err = ""
        if self.stderr_path and self.stderr_path.exists():
            err = self.stderr_path.read_text(errors="replace")[-8000:]
        return "--- pm stdout ---\n" + "".join(self.stdout_lines)[-8000:] + "\n--- pm stderr ---\n" + err


def _pump(stream, lines: list, q: "queue.Queue[str | None]") -> None:
    # Keeps draining stdout for the whole run so the child never blocks on a full pipe.
    for line in iter(stream.readline, ""):
        lines.append(line)
        q.put(line)
    q.put(None)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    pm_bin = Path(os.environ.get("PM_BIN", REPO_ROOT / "target" / "debug" / "pm"))
    if not pm_bin.is_file():
        pytest.fail(f"pm binary not found at {pm_bin}: run `cargo build -p pm` or set PM_BIN")

    base = tmp_path_factory.mktemp("mesh")
    data_dir = base / "data"
    data_dir.mkdir()
    org_port = free_port()
    rbac_port = free_port()
    while rbac_port == org_port:
        rbac_port = free_port()

    env = dict(os.environ)
    env.update(
        PM_DATA_DIR=str(data_dir),
        PM_LISTEN__ORG_PORT=str(org_port),
        PM_LISTEN__RBAC_PORT=str(rbac_port),
    )
    stderr_path = base / "pm.stderr"
    stderr_f = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [str(pm_bin), "run"],
        cwd=str(base),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_f,
        text=True,
        bufsize=1,
    )
    m = Mesh(
        org_port=org_port,
        rbac_port=rbac_port,
        data_dir=data_dir,
        pki_dir=data_dir / "pki",
        proc=proc,
        stderr_path=stderr_path,
    )
    q: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, m.stdout_lines, q), daemon=True).start()

    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = False
    try:
        while not ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                line = q.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process is exiting
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                stderr_f.close()
                pytest.fail(
                    f"pm run exited ({proc.returncode}) before printing `ready`\n{m.diagnostics()}"
                )
            ready = line.strip() == "ready"
    except TimeoutError:
        proc.kill()
        proc.wait()
        stderr_f.close()
        pytest.fail(f"pm run did not print `ready` within {READY_TIMEOUT_S}s\n{m.diagnostics()}")

    try:
        yield m
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stderr_f.close()
            pytest.fail(f"pm run did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n{m.diagnostics()}")
        stderr_f.close()
        assert rc == 0, f"pm run exited with {rc} after SIGTERM (expected a clean 0)\n{m.diagnostics()}"


# --------------------------------------------------------------------------------------------------
# Channels


@pytest.fixture(scope="session")
def channel(mesh):
    creds = grpc.ssl_channel_credentials(
        root_certificates=mesh.ca,
        private_key=mesh.client_key,
        certificate_chain=mesh.client_cert,
    )
    ch = grpc.secure_channel(f"localhost:{mesh.org_port}", creds)
    try:
        grpc.channel_ready_future(ch).result(timeout=20)
    except grpc.FutureTimeoutError:
        pytest.fail(f"mTLS channel to localhost:{mesh.org_port} not ready in 20s\n{mesh.diagnostics()}")
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def org(stubs, channel):
    """An OrgService stub on the mTLS channel."""
    return stubs.org_grpc.OrgServiceStub(channel)
