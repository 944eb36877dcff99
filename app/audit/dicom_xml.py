"""Audit events as DICOM PS3.15 Annex A.5 audit messages (the XML the central repository reads).

Coded values come from DCM (CID 400 event IDs, CID 401 event types, CID 402 participant roles)
and RFC 3881 (participant object ID types). Patients are identified by Patient ID only: the
message carries no names, following the minimum-necessary rule.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from dataclasses import dataclass

from lxml import etree as ET

from app.audit.events import AuditEvent, EventType


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    meaning: str

    def element(self, parent: ET._Element, tag: str) -> ET._Element:
        return ET.SubElement(parent, tag, {"csd-code": self.code, "codeSystemName": self.scheme,
                                           "originalText": self.meaning})


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# Event IDs (CID 400) and event type codes (CID 401)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
EXPORT = _dcm("110106", "Export")
IMPORT = _dcm("110107", "Import")
PATIENT_RECORD = _dcm("110110", "Patient Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
EMERGENCY_OVERRIDE = _dcm("110127", "Emergency Override Started")
SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
NETWORK_CONFIGURATION = _dcm("110128", "Network Configuration")
NETWORK_ENTRY = _dcm("110108", "Network Entry")
RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
OBJECT_SECURITY_CHANGED = _dcm("110135", "Object Security Attributes Changed")
USER_SECURITY_CHANGED = _dcm("110137", "User Security Attributes Changed")
APPLICATION_ROLE = _dcm("110150", "Application")
DESTINATION_MEDIA = _dcm("110154", "Destination Media")
# CID 405 media types, by the export's media kind
MEDIA_TYPES = {"zip": _dcm("110030", "USB Disk Emulation"), "iso": _dcm("110032", "CD")}
SOURCE_TYPE = _dcm("1", "End-user display device, diagnostic device")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
URI = Code("12", "RFC-3881", "URI")
STUDY_UID = _dcm("110180", "Study Instance UID")

# event -> (EventID, EventActionCode, EventTypeCode or None)
EVENTS: dict[EventType, tuple[Code, str, Code | None]] = {
    EventType.APPLICATION_START: (APPLICATION_ACTIVITY, "E", APPLICATION_START),
    EventType.APPLICATION_STOP: (APPLICATION_ACTIVITY, "E", APPLICATION_STOP),
    EventType.VAULT_CREATED: (SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
    EventType.LOGIN: (USER_AUTHENTICATION, "E", LOGIN),
    EventType.LOGOUT: (USER_AUTHENTICATION, "E", LOGOUT),
    EventType.ACCESS_REFUSED: (SECURITY_ALERT, "E", RESTRICTED_FUNCTION),
    EventType.STUDY_LIST: (QUERY, "E", None),
    EventType.INSTANCES_READ: (INSTANCES_ACCESSED, "R", None),
    EventType.IMPORT: (IMPORT, "C", None),
    EventType.QUARANTINE: (IMPORT, "C", None),
    EventType.VERIFY: (INSTANCES_ACCESSED, "R", None),
    EventType.SHRED: (STUDY_DELETED, "D", None),
    EventType.KEY_ROTATION: (SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
    EventType.USER_CHANGE: (SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    EventType.ENROLMENT: (SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    EventType.BREAK_GLASS: (SECURITY_ALERT, "E", EMERGENCY_OVERRIDE),
    EventType.SECURITY_ALERT: (SECURITY_ALERT, "E", RESTRICTED_FUNCTION),
    EventType.POLICY_CHANGE: (SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
    EventType.PATIENT_RESTRICTION: (PATIENT_RECORD, "U", OBJECT_SECURITY_CHANGED),
    EventType.AUDIT_READ: (AUDIT_LOG_USED, "R", None),
    EventType.NODE_CHANGE: (SECURITY_ALERT, "E", NETWORK_CONFIGURATION),
    EventType.NODE_ECHO: (NETWORK_ENTRY, "E", None),
    EventType.QUERY_PACS: (QUERY, "E", None),
    EventType.RETRIEVE: (INSTANCES_TRANSFERRED, "C", None),
    EventType.SEND: (INSTANCES_TRANSFERRED, "R", None),
    EventType.STUDY_PIN: (PATIENT_RECORD, "U", None),
    EventType.COMMITMENT: (INSTANCES_TRANSFERRED, "U", None),
    EventType.EXPORT: (EXPORT, "R", None),
    # A backup copies every instance out of the vault (an export to backup media); a restore
    # brings them in.
    EventType.BACKUP: (EXPORT, "R", None),
    EventType.RESTORE: (IMPORT, "C", None),
}

HOSTNAME = socket.gethostname() or "localhost"
SOURCE_ID = f"CUSTODIAN@{HOSTNAME}"


def to_xml(event: AuditEvent, at: str, *, source_id: str = SOURCE_ID, site: str = "Custodian") -> str:
    """The PS3.15 A.5.1 message for one event recorded at ``at`` (ISO 8601, UTC)."""
    event_id, action, type_code = EVENTS[event.type]
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action, "EventDateTime": at,
        "EventOutcomeIndicator": str(int(event.outcome))})
    event_id.element(ident, "EventID")
    if type_code is not None:
        type_code.element(ident, "EventTypeCode")
    why = event.detail.get("why") or event.detail.get("alert")
    if why:
        # one line: syslog repositories escape control characters, and the copy must match
        ET.SubElement(ident, "EventOutcomeDescription").text = " ".join(_clean(str(why)).split())

    ET.SubElement(root, "ActiveParticipant", {"UserID": _clean(event.user or "unknown"),
                                              "UserIsRequestor": "true"})
    application = ET.SubElement(root, "ActiveParticipant", {"UserID": source_id,
                                                            "UserIsRequestor": "false"})
    APPLICATION_ROLE.element(application, "RoleIDCode")
    if event.type is EventType.EXPORT and event.detail.get("serial"):
        # A.5.3.7: the media written is a participant, identified by its serial and type
        media = ET.SubElement(root, "ActiveParticipant", {"UserID": _clean(str(event.detail["serial"])),
                                                          "UserIsRequestor": "false"})
        DESTINATION_MEDIA.element(media, "RoleIDCode")
        kind = MEDIA_TYPES.get(str(event.detail.get("media")), MEDIA_TYPES["zip"])
        kind.element(ET.SubElement(media, "MediaIdentifier"), "MediaType")

    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditEnterpriseSiteID": site,
                                                               "AuditSourceID": source_id})
    SOURCE_TYPE.element(source, "AuditSourceTypeCode")

    objects = []
    for patient_id in event.patients:
        objects.append(_object(root, patient_id, "1", "1", PATIENT_NUMBER))
    for study_uid in event.studies:
        objects.append(_object(root, study_uid, "2", "3", STUDY_UID))
    if event.type in (EventType.USER_CHANGE, EventType.ENROLMENT):
        account = event.detail.get("added") or event.detail.get("disabled") or event.user or "unknown"
        objects.append(_object(root, str(account), "1", "11", USER_IDENTIFIER))
    if event.type is EventType.AUDIT_READ:
        objects.append(_object(root, "custodian:audit-trail", "2", "13", URI))
    if event.detail and objects:
        detail = base64.b64encode(json.dumps(event.detail, sort_keys=True, default=str).encode())
        ET.SubElement(objects[0], "ParticipantObjectDetail",
                      {"type": "custodian-detail", "value": detail.decode()})
    return ET.tostring(root, encoding="unicode")


def _object(root: ET._Element, object_id: str, type_code: str, role: str, id_type: Code) -> ET._Element:
    obj = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": _clean(object_id) or "unknown", "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    id_type.element(obj, "ParticipantObjectIDTypeCode")
    return obj


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: str) -> str:
    """Values from outside (a file's Patient ID) may hold characters XML cannot carry."""
    return _NOT_XML.sub("\ufffd", value)
