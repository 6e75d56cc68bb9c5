"""Polyglot end-to-end check: a Python grpcio client against the Rust mesh (`pm run`).

Everything goes over mTLS with the dev PKI's client certificate. Org calls carry an end user's bearer
token (`authorization: Bearer <jwt>`) issued by RBAC through the dev bootstrap (see conftest.py); the
`org` stub calls as `principals/pytest-admin`, Organization Administrator of the organization ids it
takes from `admin.take_org_id()`. Resources get unique ids per test.
"""

from __future__ import annotations

import socket
import ssl
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

ORG_SERVICE = "pm.org.v1.OrgService"
HEALTH_SERVICE = "grpc.health.v1.Health"
ERROR_DOMAIN = "org.pm.dev"
AUTHZ_DOMAIN = "authz.pm.dev"
TIMEOUT = 15  # seconds, per RPC


# --------------------------------------------------------------------------------------------------
# Helpers


def uid(prefix: str = "t") -> str:
    """A resource id: lowercase letters, digits and dashes, starting with a letter, <= 63 chars."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def rpc_error(fn, request, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn(request, timeout=TIMEOUT, **kw)
    return ei.value


def status_details(err: grpc.RpcError) -> dict:
    """Decodes grpc-status-details-bin into {ErrorInfo: [...], BadRequest: [...], ...}."""
    st = rpc_status.from_call(err)
    assert st is not None, (
        f"{err.code()} {err.details()!r}: no google.rpc.Status in grpc-status-details-bin"
    )
    assert st.code == err.code().value[0]
    out: dict = {}
    for cls in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
    ):
        for anyd in st.details:
            if anyd.Is(cls.DESCRIPTOR):
                msg = cls()
                assert anyd.Unpack(msg)
                out.setdefault(cls.__name__, []).append(msg)
    return out


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    infos = status_details(err).get("ErrorInfo", [])
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {infos}"
    return infos[0]


def assert_scoped_denial(err: grpc.RpcError, resource: str) -> None:
    """The Org service's refusal for a resource out of the caller's scope or nonexistent: one shape."""
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (err.code(), err.details())
    assert err.details() == f"permission denied on {resource} (or it might not exist)", err.details()
    info = error_info(err)
    assert info.reason == "PERMISSION_DENIED", info
    assert info.domain == ERROR_DOMAIN, info


def list_all(call, request, items_field: str, page_size: int = 1000, **kw) -> list:
    out = []
    request.page_size = page_size
    for _ in range(1000):
        resp = call(request, timeout=TIMEOUT, **kw)
        out.extend(getattr(resp, items_field))
        if not resp.next_page_token:
            return out
        request.page_token = resp.next_page_token
    raise AssertionError("pagination did not terminate")


def new_org(stubs, org, admin, display_name: str | None = None):
    """Creates an organization the admin administers (its id comes from the admin's pre-bound pool)."""
    oid = admin.take_org_id()
    return org.CreateOrganization(
        stubs.org_pb2.CreateOrganizationRequest(
            organization=stubs.res_pb2.Organization(
                display_name=display_name or f"Org {oid}", time_zone="America/New_York"
            ),
            organization_id=oid,
            request_id=str(uuid.uuid4()),
        ),
        timeout=TIMEOUT,
    )


def new_unit(stubs, org, parent: str, kind=None, display_name: str | None = None, parent_unit: str = ""):
    r = stubs.res_pb2
    uid_ = uid("unit")
    return org.CreateServiceUnit(
        stubs.org_pb2.CreateServiceUnitRequest(
            parent=parent,
            service_unit=r.ServiceUnit(
                display_name=display_name or f"Unit {uid_}",
                kind=kind if kind is not None else r.UNIT_KIND_PROGRAM,
                parent_unit=parent_unit,
            ),
            service_unit_id=uid_,
            request_id=str(uuid.uuid4()),
        ),
        timeout=TIMEOUT,
    )


# --------------------------------------------------------------------------------------------------
# Transport: startup, health, mTLS, reflection


def test_startup_banner_names_configured_ports(mesh):
    out = "".join(mesh.stdout_lines)
    org_lines = [l for l in mesh.stdout_lines if l.split()[:1] == ["org"] and "listening on" in l]
    rbac_lines = [l for l in mesh.stdout_lines if l.split()[:1] == ["rbac"] and "listening on" in l]
    assert org_lines and f":{mesh.org_port}" in org_lines[0], out
    assert rbac_lines and f":{mesh.rbac_port}" in rbac_lines[0], out
    assert "mTLS" in org_lines[0] and "mTLS" in rbac_lines[0], out
    # The ports the fixtures connect to are the ones the banner names.
    assert mesh.listening.get("org") == mesh.org_port, (mesh.listening, out)
    assert mesh.listening.get("rbac") == mesh.rbac_port, (mesh.listening, out)
    for name in ("ca.crt", "client.crt", "client.key"):
        assert (mesh.pki_dir / name).is_file(), f"dev PKI file {name} missing in {mesh.pki_dir}"


@pytest.mark.parametrize("service", ["", ORG_SERVICE])
def test_health_serving_over_mtls(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_health_unknown_service_is_not_found(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    err = rpc_error(stub.Check, health_pb2.HealthCheckRequest(service="pm.nope.v1.NoSuchService"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_connection_without_client_certificate_is_refused(mesh):
    creds = grpc.ssl_channel_credentials(root_certificates=mesh.ca)  # no client cert
    with grpc.secure_channel(f"localhost:{mesh.org_port}", creds) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        err = rpc_error(stub.Check, health_pb2.HealthCheckRequest(service=""))
    # A refused handshake surfaces as a transport failure, not as an application status.
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
        err.code(),
        err.details(),
    )


def _tls_exchange(mesh, port: int, with_client_cert: bool) -> bytes:
    """Does a TLS handshake (ALPN h2), sends the HTTP/2 preface and returns the first bytes read."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=mesh.ca.decode())
    ctx.set_alpn_protocols(["h2"])
    if with_client_cert:
        ctx.load_cert_chain(mesh.pki_dir / "client.crt", mesh.pki_dir / "client.key")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            # With TLS 1.3 the server checks the client certificate after the client considers the
            # handshake done: the refusal shows up on the first read.
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            data = b""
            while len(data) < 9:
                chunk = tls.recv(9 - len(data))
                if not chunk:
                    break
                data += chunk
            return data


@pytest.mark.parametrize("port_name", ["org_port", "rbac_port", "scheduling_port"])
def test_raw_tls_requires_client_certificate(mesh, port_name):
    port = getattr(mesh, port_name)
    # With the client certificate: the server verifies against the dev CA and answers with an HTTP/2
    # frame (its SETTINGS).
    first = _tls_exchange(mesh, port, with_client_cert=True)
    assert len(first) == 9 and first[3] == 0x04, f"expected an HTTP/2 SETTINGS frame, got {first!r}"
    # Without it: the handshake is refused (an alert, or the connection is closed).
    try:
        data = _tls_exchange(mesh, port, with_client_cert=False)
    except (ssl.SSLError, ConnectionError, OSError):
        return
    assert data == b"", f"server answered a client without a certificate: {data!r}"


def test_reflection_v1alpha_lists_services_and_describes_org(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    reqs = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=ORG_SERVICE),
    ]
    responses = list(stub.ServerReflectionInfo(iter(reqs), timeout=TIMEOUT))
    assert len(responses) == 2

    listed = {s.name for s in responses[0].list_services_response.service}
    assert ORG_SERVICE in listed, listed
    assert HEALTH_SERVICE in listed, listed

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    svc = [
        s
        for f in files
        if f.package == "pm.org.v1"
        for s in f.service
        if s.name == "OrgService"
    ]
    assert svc, f"OrgService not in reflected files {[f.name for f in files]}"
    methods = {m.name for m in svc[0].method}
    assert {"CreateOrganization", "GetOrganization", "ListServiceUnits", "UpdateServiceUnit"} <= methods


# --------------------------------------------------------------------------------------------------
# OrgService behaviour


def test_create_then_get_organization_round_trips(stubs, org, admin):
    p, r = stubs.org_pb2, stubs.res_pb2
    oid = admin.take_org_id()
    created = org.CreateOrganization(
        p.CreateOrganizationRequest(
            organization=r.Organization(display_name=f"Acme Health {oid}", time_zone="America/Chicago"),
            organization_id=oid,
            request_id=str(uuid.uuid4()),
        ),
        timeout=TIMEOUT,
    )
    assert created.name == f"organizations/{oid}"
    assert created.display_name == f"Acme Health {oid}"
    assert created.time_zone == "America/Chicago"
    assert created.etag
    assert created.HasField("create_time") and created.create_time.seconds > 0
    assert not created.HasField("delete_time")

    got = org.GetOrganization(p.GetOrganizationRequest(name=created.name), timeout=TIMEOUT)
    assert got.name == created.name
    assert got.display_name == created.display_name
    assert got.time_zone == "America/Chicago"
    assert got.etag == created.etag
    assert got.create_time == created.create_time


def test_get_missing_organization_is_not_found(stubs, org, admin):
    # The admin administers this id but it was never created: an administrator learns it is missing.
    err = rpc_error(
        org.GetOrganization, stubs.org_pb2.GetOrganizationRequest(name=f"organizations/{admin.take_org_id()}")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(err)
    assert info.reason == "RESOURCE_NOT_FOUND"
    assert info.domain == ERROR_DOMAIN


def test_get_organization_without_a_binding_is_permission_denied(stubs, org):
    # No binding on this id: missing and "not yours" look the same, so ids cannot be probed.
    name = f"organizations/{uid('nope')}"
    err = rpc_error(org.GetOrganization, stubs.org_pb2.GetOrganizationRequest(name=name))
    assert_scoped_denial(err, name)


def test_invalid_time_zone_is_invalid_argument_and_creates_nothing(stubs, org, admin):
    p, r = stubs.org_pb2, stubs.res_pb2
    oid = admin.take_org_id()
    display_name = f"Martian Clinic {oid}"
    err = rpc_error(
        org.CreateOrganization,
        p.CreateOrganizationRequest(
            organization=r.Organization(display_name=display_name, time_zone="Mars/Olympus"),
            organization_id=oid,
            request_id=str(uuid.uuid4()),
        ),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()

    details = status_details(err)
    infos = details.get("ErrorInfo", [])
    assert len(infos) == 1, details
    assert infos[0].reason == "INVALID_ARGUMENT"
    assert infos[0].domain == ERROR_DOMAIN
    violations = [v for br in details.get("BadRequest", []) for v in br.field_violations]
    assert any(v.field == "organization.time_zone" for v in violations), violations
    assert all(v.description for v in violations), violations

    # Nothing was written: not by id, not by display name, deleted or not.
    err = rpc_error(org.GetOrganization, p.GetOrganizationRequest(name=f"organizations/{oid}"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    everything = list_all(
        org.ListOrganizations, p.ListOrganizationsRequest(show_deleted=True), "organizations"
    )
    assert not [o for o in everything if o.name == f"organizations/{oid}" or o.display_name == display_name]


def test_create_organization_request_id_replay(stubs, org, admin):
    explicit_id = True
    p, r = stubs.org_pb2, stubs.res_pb2
    oid = admin.take_org_id()
    display_name = f"Replay {oid}"
    req = p.CreateOrganizationRequest(
        organization=r.Organization(display_name=display_name, time_zone="Europe/Paris"),
        organization_id=oid if explicit_id else "",
        request_id=str(uuid.uuid4()),
    )
    first = org.CreateOrganization(req, timeout=TIMEOUT)
    second = org.CreateOrganization(req, timeout=TIMEOUT)
    if explicit_id:
        assert first.name == f"organizations/{oid}"
    else:
        assert first.name.startswith("organizations/") and len(first.name) > len("organizations/")
    assert second.name == first.name
    assert second.create_time == first.create_time
    assert second.etag == first.etag

    everything = list_all(org.ListOrganizations, p.ListOrganizationsRequest(), "organizations")
    assert [o.name for o in everything if o.display_name == display_name] == [first.name]


def test_end_users_must_name_the_organization_they_create(stubs, org):
    p, r = stubs.org_pb2, stubs.res_pb2
    err = rpc_error(
        org.CreateOrganization,
        p.CreateOrganizationRequest(organization=r.Organization(display_name="Nameless", time_zone="UTC")),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "organization_id" in err.details()


def test_list_service_units_pages(stubs, org, admin):
    p = stubs.org_pb2
    parent = new_org(stubs, org, admin).name
    created = sorted(new_unit(stubs, org, parent).name for _ in range(3))
    assert all(n.startswith(f"{parent}/units/") for n in created)

    page1 = org.ListServiceUnits(p.ListServiceUnitsRequest(parent=parent, page_size=2), timeout=TIMEOUT)
    assert len(page1.service_units) == 2
    assert page1.next_page_token

    page2 = org.ListServiceUnits(
        p.ListServiceUnitsRequest(parent=parent, page_size=2, page_token=page1.next_page_token),
        timeout=TIMEOUT,
    )
    assert len(page2.service_units) == 1
    assert page2.next_page_token == ""

    listed = [u.name for u in page1.service_units] + [u.name for u in page2.service_units]
    assert listed == created  # default order is by name, no duplicates, nothing missing


@pytest.mark.parametrize("filter_expr", ["kind = UNIT_KIND_PROGRAM", 'kind = "UNIT_KIND_PROGRAM"'])
def test_list_service_units_filter_by_kind(stubs, org, admin, filter_expr):
    p, r = stubs.org_pb2, stubs.res_pb2
    parent = new_org(stubs, org, admin).name
    programs = sorted(new_unit(stubs, org, parent, kind=r.UNIT_KIND_PROGRAM).name for _ in range(2))
    new_unit(stubs, org, parent, kind=r.UNIT_KIND_CLINIC)

    got = list_all(
        org.ListServiceUnits,
        p.ListServiceUnitsRequest(parent=parent, filter=filter_expr),
        "service_units",
    )
    assert sorted(u.name for u in got) == programs
    assert all(u.kind == r.UNIT_KIND_PROGRAM for u in got)


def test_update_service_unit_with_stale_etag_is_aborted(stubs, org, admin):
    p, r = stubs.org_pb2, stubs.res_pb2
    parent = new_org(stubs, org, admin).name
    unit = new_unit(stubs, org, parent, display_name="Before")
    stale_etag = unit.etag
    assert stale_etag

    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    updated = org.UpdateServiceUnit(
        p.UpdateServiceUnitRequest(
            service_unit=r.ServiceUnit(name=unit.name, display_name="After", etag=stale_etag),
            update_mask=mask,
        ),
        timeout=TIMEOUT,
    )
    assert updated.display_name == "After"
    assert updated.kind == unit.kind  # not in the mask: untouched
    assert updated.etag and updated.etag != stale_etag

    err = rpc_error(
        org.UpdateServiceUnit,
        p.UpdateServiceUnitRequest(
            service_unit=r.ServiceUnit(name=unit.name, display_name="Lost update", etag=stale_etag),
            update_mask=mask,
        ),
    )
    assert err.code() == grpc.StatusCode.ABORTED, err.details()
    info = error_info(err)
    assert info.reason == "ETAG_MISMATCH"
    assert info.domain == ERROR_DOMAIN

    current = org.GetServiceUnit(p.GetServiceUnitRequest(name=unit.name), timeout=TIMEOUT)
    assert current.display_name == "After"
    assert current.etag == updated.etag


# --------------------------------------------------------------------------------------------------
# Authentication and authorization: bearer tokens, role bindings, the dev bootstrap


@pytest.mark.parametrize("call", ["ListOrganizations", "GetOrganization", "CreateOrganization"])
def test_org_call_without_token_is_unauthenticated(stubs, org, org_anon, admin, call):
    p, r = stubs.org_pb2, stubs.res_pb2
    existing = new_org(stubs, org, admin).name  # exists, and the tool certificate alone still may not read it
    request = {
        "ListOrganizations": p.ListOrganizationsRequest(),
        "GetOrganization": p.GetOrganizationRequest(name=existing),
        "CreateOrganization": p.CreateOrganizationRequest(
            organization=r.Organization(display_name="No token", time_zone="UTC"),
            organization_id=uid("org"),
            request_id=str(uuid.uuid4()),
        ),
    }[call]
    err = rpc_error(getattr(org_anon, call), request)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    info = error_info(err)
    assert info.reason == "TOKEN_MISSING", info
    assert info.domain == AUTHZ_DOMAIN, info


def test_garbage_bearer_token_is_unauthenticated(stubs, org_anon):
    err = rpc_error(
        org_anon.ListOrganizations,
        stubs.org_pb2.ListOrganizationsRequest(),
        metadata=[("authorization", "Bearer not-a-jwt")],
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    info = error_info(err)
    assert info.domain == AUTHZ_DOMAIN, info
    assert info.reason.startswith("TOKEN_") and info.reason != "TOKEN_MISSING", info


def test_principal_without_binding_is_permission_denied(stubs, org_as, new_principal):
    nobody = new_principal("pytest-nobody")
    err = rpc_error(org_as(nobody).ListOrganizations, stubs.org_pb2.ListOrganizationsRequest())
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (err.code(), err.details())
    info = error_info(err)
    assert info.reason == "PERMISSION_DENIED", info
    assert info.domain == AUTHZ_DOMAIN, info


def test_list_organizations_returns_only_bound_organizations(stubs, org, org_as, admin, new_principal):
    p = stubs.org_pb2
    mine = new_org(stubs, org, admin).name
    theirs_admin = new_principal("pytest-other-admin")
    other_oid = uid("org")
    theirs_admin.bind(f"organizations/{other_oid}", stubs.rbac_pb2.ROLE_ORGANIZATION_ADMINISTRATOR)
    other_org = org_as(theirs_admin)
    theirs = other_org.CreateOrganization(
        p.CreateOrganizationRequest(
            organization=stubs.res_pb2.Organization(display_name="Theirs", time_zone="UTC"),
            organization_id=other_oid,
            request_id=str(uuid.uuid4()),
        ),
        timeout=TIMEOUT,
    ).name

    seen_by_admin = {o.name for o in list_all(org.ListOrganizations, p.ListOrganizationsRequest(), "organizations")}
    assert mine in seen_by_admin and theirs not in seen_by_admin
    seen_by_other = {
        o.name for o in list_all(other_org.ListOrganizations, p.ListOrganizationsRequest(), "organizations")
    }
    assert seen_by_other == {theirs}
    # And the admin cannot read the other organization by name.
    assert_scoped_denial(rpc_error(org.GetOrganization, p.GetOrganizationRequest(name=theirs)), theirs)


def test_program_manager_sees_only_its_unit_subtree(stubs, org, org_as, admin, new_principal):
    p, r = stubs.org_pb2, stubs.res_pb2
    organization = new_org(stubs, org, admin).name
    parent_unit = new_unit(stubs, org, organization, display_name="Parent").name
    child = new_unit(stubs, org, organization, display_name="Child", parent_unit=parent_unit).name
    sibling = new_unit(stubs, org, organization, display_name="Sibling").name
    missing = f"{organization}/units/{uid('unit')}"

    manager = new_principal("pytest-pm")
    binding = manager.bind(organization, stubs.rbac_pb2.ROLE_PROGRAM_MANAGER, units=[parent_unit])
    assert binding.name.startswith(f"{organization}/roleBindings/"), binding.name
    assert list(binding.units) == [parent_unit]
    as_manager = org_as(manager)

    # Listing is narrowed to the bound unit and its subtree.
    listed = list_all(as_manager.ListServiceUnits, p.ListServiceUnitsRequest(parent=organization), "service_units")
    assert sorted(u.name for u in listed) == sorted([parent_unit, child])
    # While the administrator sees all three.
    everything = list_all(org.ListServiceUnits, p.ListServiceUnitsRequest(parent=organization), "service_units")
    assert sorted(u.name for u in everything) == sorted([parent_unit, child, sibling])

    # Inside the subtree: readable.
    assert as_manager.GetServiceUnit(p.GetServiceUnitRequest(name=child), timeout=TIMEOUT).name == child
    # Outside it, and nonexistent: the same PERMISSION_DENIED, so ids cannot be probed.
    assert_scoped_denial(rpc_error(as_manager.GetServiceUnit, p.GetServiceUnitRequest(name=sibling)), sibling)
    assert_scoped_denial(rpc_error(as_manager.GetServiceUnit, p.GetServiceUnitRequest(name=missing)), missing)
    # For an Organization Administrator of that organization, the missing unit is NOT_FOUND.
    err = rpc_error(org.GetServiceUnit, p.GetServiceUnitRequest(name=missing))
    assert err.code() == grpc.StatusCode.NOT_FOUND, (err.code(), err.details())
    info = error_info(err)
    assert info.reason == "RESOURCE_NOT_FOUND" and info.domain == ERROR_DOMAIN, info


def test_list_permissions_via_bootstrap_marks_phi(stubs, rbac):
    p = stubs.rbac_pb2
    perms = []
    req = p.ListPermissionsRequest(page_size=100)
    for _ in range(100):
        resp = rbac.ListPermissions(req, timeout=TIMEOUT)  # no token: the dev bootstrap
        perms.extend(resp.permissions)
        if not resp.next_page_token:
            break
        req.page_token = resp.next_page_token
    else:
        raise AssertionError("pagination did not terminate")
    by_name = {perm.name: perm for perm in perms}
    assert len(by_name) == len(perms), "duplicate permissions across pages"
    assert [perm.name for perm in perms] == sorted(by_name), "permissions are not ordered by name"

    patients_get = by_name.get("org.patients.get")
    assert patients_get is not None, sorted(by_name)
    assert patients_get.phi is True
    assert "/pm.org.v1.OrgService/GetPatient" in patients_get.methods, list(patients_get.methods)
    assert by_name["org.organizations.get"].phi is False

    prefixed = rbac.ListPermissions(p.ListPermissionsRequest(name_prefix="org.patients.", page_size=1000), timeout=TIMEOUT)
    assert prefixed.permissions and all(x.name.startswith("org.patients.") for x in prefixed.permissions)
    assert "org.patients.get" in {x.name for x in prefixed.permissions}


def test_bootstrap_is_limited_to_its_rbac_calls(stubs, rbac):
    # Without a token, the tool certificate may not read principals (not a bootstrap permission).
    err = rpc_error(rbac.ListPrincipals, stubs.rbac_pb2.ListPrincipalsRequest())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    info = error_info(err)
    assert info.reason == "TOKEN_MISSING" and info.domain == AUTHZ_DOMAIN, info
