"""Fixtures for the polyglot (Python grpcio) end-to-end check of the mesh.

* ``stubs``: Python stubs generated from every .proto under ``proto/`` with grpc_tools.protoc.
* ``mesh``: the ``pm run`` process, on free ports with a fresh data dir, stopped with SIGTERM.
* ``channel``: an mTLS channel to the org port, using the dev PKI's client certificate, without a
  bearer token (health, reflection, and the checks that a token is required).
* ``rbac``: the RbacService on the rbac port over mTLS, without a token: in dev mode the tool
  certificate may bootstrap access (CreatePrincipal, CreateRoleBinding, IssueToken, ListPermissions).
* ``admin``: the ``principals/pytest-admin`` end user, Organization Administrator of a pool of
  organization ids bound before its first token (see ``ORG_POOL_SIZE``).
* ``org``: an OrgService stub that calls as ``admin`` (``authorization: Bearer <jwt>``).
* ``org_as(principal)``: an OrgService stub that calls as any principal.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
RPC_TIMEOUT_S = 15

# The Org service's authorization layer caches a principal's role bindings for a few seconds
# (pm_authz::layer::ACCESS_TTL), so a binding created after the principal's first call may not be seen
# at once. The admin is therefore bound, up front, as Organization Administrator of this many
# organization ids; tests take ids from the pool (RBAC does not require the organization to exist).
ORG_POOL_SIZE = 48
ADMIN_PRINCIPAL_ID = "pytest-admin"
# Reissue a token when it has less than this left (tokens last 15 minutes by default).
TOKEN_REFRESH_MARGIN_S = 60


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
    """The generated modules, as a namespace: org_pb2, org_grpc, res_pb2, rbac_pb2, rbac_grpc."""
    gen = generate_stubs(tmp_path_factory.mktemp("gen"))
    sys.path.insert(0, str(gen))
    import importlib

    ns = types.SimpleNamespace(
        gen_dir=gen,
        org_pb2=importlib.import_module("pm.org.v1.org_service_pb2"),
        org_grpc=importlib.import_module("pm.org.v1.org_service_pb2_grpc"),
        res_pb2=importlib.import_module("pm.org.v1.resources_pb2"),
        rbac_pb2=importlib.import_module("pm.rbac.v1.rbac_service_pb2"),
        rbac_grpc=importlib.import_module("pm.rbac.v1.rbac_service_pb2_grpc"),
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
    scheduling_port: int
    data_dir: Path
    pki_dir: Path
    proc: subprocess.Popen
    stdout_lines: list = field(default_factory=list)
    stderr_path: Path | None = None
    # Ports as the `  <service>  listening on https://127.0.0.1:PORT (mTLS)` banner lines name them.
    listening: dict = field(default_factory=dict)

    def port_of(self, service: str) -> int:
        """The port `service` listens on, as printed by `pm run` (the configured one otherwise)."""
        return self.listening.get(service) or {
            "org": self.org_port,
            "rbac": self.rbac_port,
            "scheduling": self.scheduling_port,
        }[service]

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


_LISTENING_RE = re.compile(r"^\s*(?P<service>[a-z][a-z0-9-]*)\s+listening on \S+?:(?P<port>\d+)\b")


def parse_listening(lines) -> dict:
    """{service: port} from the `  org   listening on https://127.0.0.1:PORT (mTLS)` banner lines."""
    out = {}
    for line in lines:
        m = _LISTENING_RE.match(line)
        if m:
            out.setdefault(m["service"], int(m["port"]))
    return out


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
    scheduling_port = free_port()
    while scheduling_port in (org_port, rbac_port):
        scheduling_port = free_port()
    billing_port = free_port()
    while billing_port in (org_port, rbac_port, scheduling_port):
        billing_port = free_port()

    env = dict(os.environ)
    env.update(
        PM_DATA_DIR=str(data_dir),
        PM_LISTEN__ORG_PORT=str(org_port),
        PM_LISTEN__RBAC_PORT=str(rbac_port),
        PM_LISTEN__SCHEDULING_PORT=str(scheduling_port),
        PM_LISTEN__BILLING_PORT=str(billing_port),
        PM_LISTEN__MLLP_PORT="0",
        # The web edge (grpc-web for the calendar page) on a free port, not the default 8443.
        PM_LISTEN__WEB_PORT="0",
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
        scheduling_port=scheduling_port,
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

    m.listening = parse_listening(m.stdout_lines)
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


def mtls_channel(mesh, port: int) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=mesh.ca,
        private_key=mesh.client_key,
        certificate_chain=mesh.client_cert,
    )
    ch = grpc.secure_channel(f"localhost:{port}", creds)
    try:
        grpc.channel_ready_future(ch).result(timeout=20)
    except grpc.FutureTimeoutError:
        ch.close()
        pytest.fail(f"mTLS channel to localhost:{port} not ready in 20s\n{mesh.diagnostics()}")
    return ch


@pytest.fixture(scope="session")
def channel(mesh):
    """mTLS to the org port, no bearer token."""
    ch = mtls_channel(mesh, mesh.port_of("org"))
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def rbac_channel(mesh):
    """mTLS to the rbac port, no bearer token."""
    ch = mtls_channel(mesh, mesh.port_of("rbac"))
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def rbac(stubs, rbac_channel):
    """An RbacService stub without a token: the dev bootstrap (tool certificate, dev mode)."""
    return stubs.rbac_grpc.RbacServiceStub(rbac_channel)


# --------------------------------------------------------------------------------------------------
# End users: principals, role bindings and bearer tokens


class Principal:
    """An end user created through the dev bootstrap, with its bindings and a cached bearer token."""

    def __init__(self, stubs, rbac, principal_id: str, display_name: str):
        self._stubs = stubs
        self._rbac = rbac
        p = stubs.rbac_pb2
        try:
            created = rbac.CreatePrincipal(
                p.CreatePrincipalRequest(
                    principal=p.Principal(display_name=display_name, kind=p.PRINCIPAL_KIND_USER),
                    principal_id=principal_id,
                    request_id=str(uuid.uuid4()),
                ),
                timeout=RPC_TIMEOUT_S,
            )
            self.name = created.name
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            self.name = f"principals/{principal_id}"
        assert self.name == f"principals/{principal_id}", self.name
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def bind(self, organization: str, role, units=()):
        """CreateRoleBinding(parent=organization) for this principal (bootstrap: no token)."""
        p = self._stubs.rbac_pb2
        return self._rbac.CreateRoleBinding(
            p.CreateRoleBindingRequest(
                parent=organization,
                role_binding=p.RoleBinding(principal=self.name, role=role, units=list(units)),
                request_id=str(uuid.uuid4()),
            ),
            timeout=RPC_TIMEOUT_S,
        )

    def token(self) -> str:
        """A bearer token for this principal (IssueToken; reissued shortly before it expires)."""
        with self._lock:
            if self._token is None or time.time() > self._expires_at - TOKEN_REFRESH_MARGIN_S:
                resp = self._rbac.IssueToken(
                    self._stubs.rbac_pb2.IssueTokenRequest(principal=self.name), timeout=RPC_TIMEOUT_S
                )
                assert resp.token, "IssueToken returned an empty token"
                assert resp.HasField("expire_time"), "IssueToken returned no expire_time"
                self._token = resp.token
                self._expires_at = resp.expire_time.seconds + resp.expire_time.nanos / 1e9
            return self._token

    def metadata(self) -> list:
        return [("authorization", f"Bearer {self.token()}")]


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (unless the call sets its own)."""

    def __init__(self, principal: Principal):
        self._principal = principal

    def _details(self, d):
        md = list(d.metadata or ())
        if not any(k.lower() == "authorization" for k, _ in md):
            md.extend(self._principal.metadata())
        return _CallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, d, request):
        return continuation(self._details(d), request)

    def intercept_unary_stream(self, continuation, d, request):
        return continuation(self._details(d), request)

    def intercept_stream_unary(self, continuation, d, request_iterator):
        return continuation(self._details(d), request_iterator)

    def intercept_stream_stream(self, continuation, d, request_iterator):
        return continuation(self._details(d), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class Admin(Principal):
    """The session's Organization Administrator, bound in advance to a pool of organization ids."""

    def __init__(self, stubs, rbac, pool_size: int = ORG_POOL_SIZE):
        super().__init__(stubs, rbac, ADMIN_PRINCIPAL_ID, "pytest admin")
        self._pool = [f"org-{uuid.uuid4().hex[:16]}" for _ in range(pool_size)]
        for oid in self._pool:
            self.bind(f"organizations/{oid}", stubs.rbac_pb2.ROLE_ORGANIZATION_ADMINISTRATOR)
        self._pool_lock = threading.Lock()

    def take_org_id(self) -> str:
        """An organization id this admin administers (not created yet)."""
        with self._pool_lock:
            if not self._pool:
                raise AssertionError(
                    f"the admin's pool of {ORG_POOL_SIZE} pre-bound organization ids is exhausted: "
                    "raise ORG_POOL_SIZE in conftest.py"
                )
            return self._pool.pop()


@pytest.fixture(scope="session")
def admin(stubs, rbac):
    """principals/pytest-admin: Organization Administrator of every organization id it hands out."""
    return Admin(stubs, rbac)


@pytest.fixture(scope="session")
def new_principal(stubs, rbac):
    """Factory: a fresh user principal (bootstrap), bind it with `.bind(...)` before its first call."""

    def make(prefix: str = "pytest-user") -> Principal:
        pid = f"{prefix}-{uuid.uuid4().hex[:12]}"
        return Principal(stubs, rbac, pid, f"pytest {pid}")

    return make


@pytest.fixture(scope="session")
def org_as(stubs, channel):
    """Factory: an OrgService stub whose calls carry `principal`'s bearer token."""

    def make(principal: Principal):
        return stubs.org_grpc.OrgServiceStub(grpc.intercept_channel(channel, _BearerInterceptor(principal)))

    return make


@pytest.fixture(scope="session")
def org(org_as, admin):
    """An OrgService stub on the mTLS channel, calling as the admin (bearer token)."""
    return org_as(admin)


@pytest.fixture(scope="session")
def org_anon(stubs, channel):
    """An OrgService stub on the mTLS channel with no bearer token."""
    return stubs.org_grpc.OrgServiceStub(channel)
