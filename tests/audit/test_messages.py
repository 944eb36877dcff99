"""Every audit event is a schema-valid DICOM PS3.15 A.5.1 message with the right coded values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from app.audit.dicom_xml import EVENTS, to_xml
from app.audit.events import AuditEvent, EventType, Outcome
from app.paths import resource_path
from tests.conftest import VaultEnv, study_bytes

SCHEMA = etree.RelaxNG(etree.parse(str(resource_path("audit-message.rng"))))


def _valid(xml: str) -> etree._Element:
    doc = etree.fromstring(xml.encode())
    assert SCHEMA.validate(doc), SCHEMA.error_log.last_error
    return doc


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda e: e.value)
def test_every_event_type_is_schema_valid(event_type: EventType) -> None:
    event = AuditEvent(event_type, Outcome.MINOR_FAILURE, user="rad", studies=("1.2.3.4",),
                       patients=("PID-1",), detail={"why": "test", "added": "newbie"})
    doc = _valid(to_xml(event, datetime.now(UTC).isoformat()))
    event_id, action, type_code = EVENTS[event_type]
    ident = doc.find("EventIdentification")
    assert ident.get("EventActionCode") == action and ident.get("EventOutcomeIndicator") == "4"
    assert ident.find("EventID").get("csd-code") == event_id.code
    assert (ident.find("EventTypeCode") is None) == (type_code is None)
    patient = doc.find("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PID-1"
    assert patient.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"


def test_schema_refuses_a_broken_message() -> None:
    xml = to_xml(AuditEvent(EventType.LOGIN, user="rad"), datetime.now(UTC).isoformat())
    doc = etree.fromstring(xml.encode())
    del doc.find("EventIdentification").find("EventID").attrib["originalText"]
    assert not SCHEMA.validate(doc)


def test_messages_in_the_trail_carry_no_patient_name(env: VaultEnv) -> None:
    env.vault.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    env.vault.studies(env.login("rad"))
    messages = env.vault.audit.messages()
    assert len(messages) > 5
    for _, xml in messages:
        _valid(xml)
        assert "Testperson" not in xml and "Quentin" not in xml
    imports = [xml for _, xml in messages if 'csd-code="110107"' in xml]
    assert imports and "PID-0001" in imports[0]


def test_hostile_values_still_make_a_one_line_valid_message() -> None:
    """A Patient ID from a crafted file may carry control characters; the event must still be written."""
    event = AuditEvent(EventType.IMPORT, user="tech", patients=("PID\x00\x1b[2J\ud800",),
                       detail={"why": "line one\nline two\r\n"})
    xml = to_xml(event, datetime.now(UTC).isoformat())
    assert "\n" not in xml and "\r" not in xml
    doc = _valid(xml)
    assert doc.find("ParticipantObjectIdentification").get("ParticipantObjectID").startswith("PID\ufffd")
