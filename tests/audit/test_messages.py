"""Every audit event is a DICOM PS3.15 A.5.1 message valid against the standard's own schema (with
jing), with the coded values and the participants A.5.3 lists for it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from lxml import etree
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from app.audit.context import MessageContext, Peer, StudyFacts
from app.audit.dicom_xml import (
    EVENTS,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HOSTNAME,
    MEDIA_DIRECTORY,
    STUDY_ROOT_FIND,
    message_of,
    to_xml,
)
from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.log import GENESIS, _digest
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.security.roles import Role
from tests.audit.schema import invalid
from tests.conftest import VaultEnv, study_bytes

AT = "2026-11-23T10:00:00.123456+00:00"
CT, SR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.22"
PATIENTS = ("PID-1", "noid:1.2.3.9#1", "PID-2")
STUDIES = ("1.2.3.4", "1.2.3.5")  # the second is not in the cache (a query's answer, a failed retrieve)
CONTEXT = MessageContext(
    patient_names={"PID-1": ("Doe^Jane",), "noid:1.2.3.9#1": ("Roe^Richard",),
                   "PID-2": ("Two^Anna", "Two^Berta")},  # one Patient ID, two people
    studies={"1.2.3.4": StudyFacts("CT CHEST W/O", "ACC-17", ((CT, 40), (SR, 1)))},
    peer=Peer("ORTHANC", "10.1.2.3"), local_ae="CUSTODIAN")
QUERY = {"patient_id": "PID-1", "patient_name": "Doe^J*", "study_date": "20260101-", "modality": "CT",
         "accession": "ACC-17"}
# what the vault records with each kind of event (app/store/vault.py), beside a "why"
DETAILS: dict[EventType, dict[str, object]] = {
    EventType.STUDY_LIST: {"studies": 3, "query": {"patient_id": "PID-1"}},
    EventType.QUERY_PACS: {"node": "pacs", "query": QUERY, "studies": 2},
    EventType.RETRIEVE: {"node": "pacs", "received": 41, "refused": 0, "failed_at_pacs": 0},
    EventType.SEND: {"node": "pacs", "sent": 41, "failed": 0},
    EventType.COMMITMENT: {"committed": 41, "failed": 0},
    EventType.NODE_ECHO: {"node": "pacs", "ms": 3},
    EventType.NODE_CHANGE: {"node": "pacs", "set": "ORTHANC at 10.1.2.3:4242"},
    EventType.EXPORT: {"disclosure": 7, "serial": "CUS-20261123-ABC", "media": "iso", "instances": 41,
                       "deidentified": False},
    EventType.USER_CHANGE: {"added": "newbie"},
    EventType.SECURITY_ALERT: {"alert": "repeated failures"},
    EventType.AUDIT_READ: {"records": 3, "patient": "PID-1"},
    EventType.BACKUP: {"file": "day.backup", "instances": 41, "missing": 0, "sha256": "00" * 32},
    EventType.RESTORE: {"backup": "day.backup", "made": AT, "instances": 41},
    EventType.SHRED: {"reason": "wrong patient", "instances": 41},
}
USERS = {EventType.COMMITMENT: "dicom:pacs"}  # the PACS reports; everything else is a person's act


def _event(event_type: EventType) -> AuditEvent:
    return AuditEvent(event_type, Outcome.MINOR_FAILURE, user=USERS.get(event_type, "rad"), studies=STUDIES,
                      patients=PATIENTS, detail={"why": "test", **DETAILS.get(event_type, {})})


# the corners, by name: (event, context)
CORNERS: dict[str, tuple[AuditEvent, MessageContext | None]] = {
    "received-from-peer": (AuditEvent(EventType.IMPORT, user="dicom:STORESCU", studies=STUDIES[:1],
                                      patients=PATIENTS[:1], detail={"instances": 3}),
                           MessageContext(peer=Peer("STORESCU", "modality-3"), local_ae="CUSTODIAN")),
    "retrieve-from-a-removed-node": (AuditEvent(EventType.RETRIEVE, user="rad", studies=STUDIES[:1],
                                                detail={"node": "gone"}), MessageContext()),
    "outside-media-survey": (AuditEvent(EventType.STUDY_LIST, user="tech", patients=PATIENTS,
                                        detail={"outside_media": "cd.iso", "studies": 2}), CONTEXT),
    "hostile-values": (AuditEvent(EventType.IMPORT, user="tech\x00", patients=("PID\x00\x1b[2J\ud800",),
                                  studies=("1.2\n3",), detail={"why": "line one\nline two\r\n"}),
                       MessageContext(patient_names={"PID\x00\x1b[2J\ud800": ("Evil\n^Name\ud800",)},
                                      studies={"1.2\n3": StudyFacts("two\nlines", "A\x01",
                                                                    (("1.2\x00", 1),))})),
}
# (label, event, context): every event type with everything it can name, bare, and the corners
CASES = [(t.value, _event(t), CONTEXT) for t in EventType] + [
    (f"{t.value}-bare", AuditEvent(t), None) for t in EventType] + [
    (label, event, context) for label, (event, context) in CORNERS.items()]


def _corner(label: str) -> etree._Element:
    event, context = CORNERS[label]
    return etree.fromstring(to_xml(event, AT, context))


@pytest.fixture(scope="module")
def rendered() -> tuple[list[str], dict[int, str]]:
    """Every case's message, and jing's verdict on each (one run for all)."""
    messages = [to_xml(event, AT, context) for _, event, context in CASES]
    return messages, invalid(messages)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[label for label, _, _ in CASES])
def test_every_event_type_is_schema_valid(case: int,
                                         rendered: tuple[list[str], dict[int, str]]) -> None:
    """Against the schema the standard prints (jing): each event type with all it can name, bare,
    and the corners."""
    messages, errors = rendered
    assert case not in errors, errors.get(case)
    assert "\n" not in messages[case] and "\r" not in messages[case]  # one syslog line each


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda e: e.value)
def test_every_event_type_has_its_coded_values(event_type: EventType) -> None:
    doc = etree.fromstring(to_xml(_event(event_type), AT, CONTEXT))
    event_id, action, type_code = EVENTS[event_type]
    ident = doc.find("EventIdentification")
    assert ident.get("EventActionCode") == action and ident.get("EventOutcomeIndicator") == "4"
    assert ident.find("EventID").get("csd-code") == event_id.code
    assert (ident.find("EventTypeCode") is None) == (type_code is None)
    assert ident.get("EventDateTime") == AT and ident.findtext("EventOutcomeDescription") == "test"


def test_jing_refuses_a_participant_object_without_name_or_query() -> None:
    """The defect the standard's schema found: the project's own schema let this through."""
    doc = etree.fromstring(to_xml(_event(EventType.INSTANCES_READ), AT, CONTEXT))
    name = doc.find("ParticipantObjectIdentification/ParticipantObjectName")
    name.getparent().remove(name)
    errors = invalid([etree.tostring(doc, encoding="unicode")])
    assert list(errors) == [0] and '"ParticipantObjectName" or "ParticipantObjectQuery"' in errors[0]


def _objects(doc: etree._Element, id_type: str) -> list[etree._Element]:
    return [o for o in doc.iter("ParticipantObjectIdentification")
            if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type]


def _named(objects: list[etree._Element]) -> list[tuple[str, str]]:
    return [(o.get("ParticipantObjectID"), o.findtext("ParticipantObjectName")) for o in objects]


def _active(doc: etree._Element, role: str) -> etree._Element:
    (found,) = [a for a in doc.iter("ActiveParticipant") if a.find("RoleIDCode") is not None
                and a.find("RoleIDCode").get("csd-code") == role]
    return found


def test_patients_carry_their_names_and_one_without_an_id_its_study() -> None:
    doc = etree.fromstring(to_xml(_event(EventType.INSTANCES_READ), AT, CONTEXT))
    patients = _objects(doc, "2")
    assert _named(patients) == [("PID-1", "Doe^Jane"), ("noid:1.2.3.9#1", "Roe^Richard"),
                                ("PID-2", "Two^Anna"), ("PID-2", "Two^Berta")]
    assert {(p.get("ParticipantObjectTypeCode"), p.get("ParticipantObjectTypeCodeRole"))
            for p in patients} == {("1", "1")}
    (anchor,) = patients[1].iterfind("ParticipantObjectDescription/ParticipantObjectContainsStudy/StudyIDs")
    assert anchor.get("UID") == "1.2.3.9"
    assert patients[0].find("ParticipantObjectDescription") is None
    # the event's own detail rides on the first object, as before
    detail = patients[0].find("ParticipantObjectDetail")
    assert detail.get("type") == "custodian-detail"
    assert json.loads(base64.b64decode(detail.get("value")))["why"] == "test"


def test_without_names_a_patient_still_has_a_valid_empty_one() -> None:
    doc = etree.fromstring(to_xml(_event(EventType.INSTANCES_READ), AT))
    assert _named(_objects(doc, "2")) == [(ref, "") for ref in PATIENTS]


def test_studies_are_described_by_accession_and_sop_classes() -> None:
    doc = etree.fromstring(to_xml(_event(EventType.INSTANCES_READ), AT, CONTEXT))
    known, unknown = _objects(doc, "110180")
    assert _named([known]) == [("1.2.3.4", "CT CHEST W/O")]
    assert [(e.tag, dict(e.attrib)) for e in known.find("ParticipantObjectDescription")] == [
        ("Accession", {"Number": "ACC-17"}), ("SOPClass", {"UID": CT, "NumberOfInstances": "40"}),
        ("SOPClass", {"UID": SR, "NumberOfInstances": "1"})]
    assert _named([unknown]) == [("1.2.3.5", "")]
    assert unknown.find("ParticipantObjectDescription") is None


def test_a_study_names_its_patient_when_the_event_does_not() -> None:
    event = AuditEvent(EventType.RETRIEVE, user="rad", studies=("1.2.3.4",), detail={"node": "pacs"})
    context = MessageContext(patient_names={"PID-1": ("Doe^Jane",)}, filed_patients=("PID-1",),
                             peer=Peer("ORTHANC", "pacs.hospital"))
    doc = etree.fromstring(to_xml(event, AT, context))
    assert _named(_objects(doc, "2")) == [("PID-1", "Doe^Jane")]


def _query(doc: etree._Element) -> tuple[etree._Element, dict[str, str]]:
    (queried,) = _objects(doc, "110181")
    data = base64.b64decode(queried.findtext("ParticipantObjectQuery"))
    ds = read_dataset(DicomBytesIO(data), is_implicit_VR=False, is_little_endian=True)
    return queried, {e.keyword: str(e.value) for e in ds}


def test_a_pacs_query_names_the_sop_class_queried_and_carries_its_identifier() -> None:
    doc = etree.fromstring(to_xml(_event(EventType.QUERY_PACS), AT, CONTEXT))
    queried, identifier = _query(doc)
    assert queried.get("ParticipantObjectID") == STUDY_ROOT_FIND
    assert (queried.get("ParticipantObjectTypeCode"), queried.get("ParticipantObjectTypeCodeRole")) == (
        "2", "3")
    assert queried.find("ParticipantObjectName") is None
    assert identifier == {"SpecificCharacterSet": "ISO_IR 192", "QueryRetrieveLevel": "STUDY",
                          "PatientID": "PID-1", "PatientName": "Doe^J*", "StudyDate": "20260101-",
                          "ModalitiesInStudy": "CT", "AccessionNumber": "ACC-17"}
    (syntax,) = queried.iterfind("ParticipantObjectDetail[@type='TransferSyntax']")
    assert base64.b64decode(syntax.get("value")).decode() == EXPLICIT_VR_LITTLE_ENDIAN
    # A.5.3.12: this workstation asks (Source), the PACS answers (Destination)
    assert _active(doc, "110153").get("UserID").startswith("CUSTODIAN@")
    assert _active(doc, "110152").get("NetworkAccessPointID") == "10.1.2.3"


def test_the_local_study_list_and_outside_media_are_queries_too() -> None:
    listed = etree.fromstring(to_xml(_event(EventType.STUDY_LIST), AT, CONTEXT))
    queried, identifier = _query(listed)
    assert queried.get("ParticipantObjectID") == STUDY_ROOT_FIND and identifier["PatientID"] == "PID-1"
    queried, identifier = _query(_corner("outside-media-survey"))
    assert queried.get("ParticipantObjectID") == MEDIA_DIRECTORY and "PatientID" not in identifier


def _ends(doc: etree._Element) -> dict[str, tuple[str | None, ...]]:
    return {role: (a.get("UserID"), a.get("AlternativeUserID"), a.get("NetworkAccessPointID"),
                   a.get("NetworkAccessPointTypeCode"), a.get("UserIsRequestor"))
            for role in ("110153", "110152") for a in [_active(doc, role)]}


def test_transfers_name_source_and_destination_with_their_network_access_points() -> None:
    us = (f"CUSTODIAN@{HOSTNAME}", "AETITLES=CUSTODIAN", HOSTNAME, "1", "false")
    pacs = ("ORTHANC", "AETITLES=ORTHANC", "10.1.2.3", "2", "false")
    assert _ends(etree.fromstring(to_xml(_event(EventType.RETRIEVE), AT, CONTEXT))) == {
        "110153": pacs, "110152": us}
    assert _ends(etree.fromstring(to_xml(_event(EventType.SEND), AT, CONTEXT))) == {
        "110153": us, "110152": pacs}
    committed = etree.fromstring(to_xml(_event(EventType.COMMITMENT), AT, CONTEXT))
    assert _ends(committed) == {"110153": us, "110152": (*pacs[:4], "true")}  # the PACS reports
    assert [a.get("UserID") for a in committed.iter("ActiveParticipant")] == [us[0], "ORTHANC"]
    # the requesting person is there beside the two ends
    sent = etree.fromstring(to_xml(_event(EventType.SEND), AT, CONTEXT))
    (person,) = [a for a in sent.iter("ActiveParticipant") if a.get("UserIsRequestor") == "true"]
    assert person.get("UserID") == "rad" and person.find("RoleIDCode") is None


def test_instances_a_peer_sends_in_are_a_transfer_from_it() -> None:
    doc = _corner("received-from-peer")
    ident = doc.find("EventIdentification")
    assert (ident.find("EventID").get("csd-code"), ident.get("EventActionCode")) == ("110104", "C")
    assert _ends(doc)["110153"] == ("STORESCU", "AETITLES=STORESCU", "modality-3", "1", "true")
    assert _ends(doc)["110152"][0] == f"CUSTODIAN@{HOSTNAME}"
    # an import by a person stays an Import, with the application in its plain role
    imported = etree.fromstring(to_xml(_event(EventType.IMPORT), AT, CONTEXT))
    assert imported.find("EventIdentification/EventID").get("csd-code") == "110107"
    assert _active(imported, "110150").get("AlternativeUserID") is None


def test_a_transfer_with_a_node_since_removed_still_names_it() -> None:
    assert _ends(_corner("retrieve-from-a-removed-node"))["110153"] == ("gone", None, None, None, "false")


def test_hostile_values_still_make_a_one_line_message() -> None:
    """A Patient ID or name from a crafted file may carry control characters and line breaks."""
    doc = _corner("hostile-values")
    (patient,) = _objects(doc, "2")
    assert patient.get("ParticipantObjectID").startswith("PID\ufffd")
    assert patient.findtext("ParticipantObjectName") == "Evil ^Name\ufffd"
    assert doc.findtext("EventIdentification/EventOutcomeDescription") == "line one line two"


def test_messages_in_the_trail_name_patients_from_their_records(env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    env.vault.intake.import_bytes(env.login("tech"),
                                  study_bytes(Patient("", "Nameless^Nadia"), slices=1, size=16))
    rad = env.login("rad")
    for study in env.vault.reading.studies(rad):
        env.vault.reading.open_series(rad, env.vault.reading.series(rad, study.study_uid)[0].series_uid)
    messages = [xml for _, xml in env.vault._gate._audit.messages()]
    assert invalid(messages) == {}
    reads = [etree.fromstring(xml) for xml in messages if 'csd-code="110103"' in xml]
    named = {(p.get("ParticipantObjectID").split(":")[0], p.findtext("ParticipantObjectName"))
             for doc in reads for p in _objects(doc, "2")}
    assert named == {("PID-0001", "Testperson^Quentin"), ("noid", "Nameless^Nadia")}
    # the structured record keeps references only: listings and reports are unchanged
    env.add("po", Role.PRIVACY_OFFICER)
    records = env.vault.trail.show(env.login("po"), AuditQuery(event_type=EventType.INSTANCES_READ))
    assert records and all("Testperson" not in json.dumps(r.detail) + " ".join(r.patients) for r in records)


def test_a_record_from_before_messages_still_verifies_and_renders(env: VaultEnv) -> None:
    """Records written before messages were kept have none (and no names were ever looked up):
    the chain still verifies, and the privacy officer's listing renders one from the record."""
    conn = env.vault._core.conn
    seq, prev = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone() or (
        0, GENESIS)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    record = json.dumps({"type": "instances-accessed", "outcome": 0, "user": "rad", "studies": ["1.2.3.4"],
                         "patients": ["PID-OLD"], "detail": {}}, sort_keys=True, separators=(",", ":"))
    with conn:
        conn.execute("INSERT INTO audit (seq, at, record, message, prev_hash, hash) "
                     "VALUES (?, ?, ?, '', ?, ?)",
                     (seq + 1, at, record, prev, _digest(prev, seq + 1, at.encode(), record.encode(), None)))
    assert env.vault._gate._audit.verify().ok
    env.add("po", Role.PRIVACY_OFFICER)
    (old,) = env.vault.trail.show(env.login("po"), AuditQuery(patient="PID-OLD"))
    assert old.message == ""
    xml = message_of(old)
    assert invalid([xml]) == {}
    doc = etree.fromstring(xml)
    assert doc.find("EventIdentification").get("EventDateTime") == at
    assert [p.get("ParticipantObjectID") for p in _objects(doc, "2")] == ["PID-OLD"]
    assert env.vault._gate._audit.verify().ok  # (the listing's own record joined the chain after it)
