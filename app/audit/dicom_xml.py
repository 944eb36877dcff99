"""Audit events as DICOM PS3.15 Annex A.5 audit messages (the XML the central repository reads).

Every message is valid against the schema printed in A.5.1.1 (the tests check every event type
with jing, the reference validator: libxml2 accepts some messages jing refuses). That schema
requires each participant object to carry a name or a query, and A.5.3 lists each event's
participants, so: a patient carries the name its patient record holds when the event is written
(app/audit/context.py; the structured record keeps references only), a study its description,
with accession and SOP classes in its ParticipantObjectDescription, a query the SOP class and
identifier it asked, and a transfer or query its source and destination processes with their
network access points.

Coded values come from DCM (CID 400 event IDs, CID 401 event types, CID 402 participant roles)
and RFC 3881 (participant object ID types).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import struct
from dataclasses import dataclass, field

from lxml import etree as ET

from app.audit.context import PEER_USER, MessageContext, StudyFacts, peer_name
from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.report import AuditRecord
from app.store.patients import NO_ID_PREFIX


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
DESTINATION_ROLE = _dcm("110152", "Destination Role ID")
SOURCE_ROLE = _dcm("110153", "Source Role ID")
DESTINATION_MEDIA = _dcm("110154", "Destination Media")
# CID 405 media types, by the export's media kind
MEDIA_TYPES = {"zip": _dcm("110030", "USB Disk Emulation"), "iso": _dcm("110032", "CD")}
SOURCE_TYPE = _dcm("1", "End-user display device, diagnostic device")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
URI = Code("12", "RFC-3881", "URI")
STUDY_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
# What a query event queried (A.5.3.12): the study list and a PACS are asked study-root C-FINDs;
# outside media are surveyed through their DICOMDIR.
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"  # how the query identifier is encoded
# A query's filters as its event records them, by the C-FIND matching key each was sent as
QUERY_KEYS = {"patient_id": ("PatientID", "LO"), "patient_name": ("PatientName", "PN"),
              "study_date": ("StudyDate", "DA"), "modality": ("ModalitiesInStudy", "CS"),
              "accession": ("AccessionNumber", "SH")}
IDENTIFIER_TAGS = {"SpecificCharacterSet": (0x0008, 0x0005), "StudyDate": (0x0008, 0x0020),
                   "AccessionNumber": (0x0008, 0x0050), "QueryRetrieveLevel": (0x0008, 0x0052),
                   "ModalitiesInStudy": (0x0008, 0x0061), "PatientName": (0x0010, 0x0010),
                   "PatientID": (0x0010, 0x0020)}
AUDIT_TRAIL = "custodian:audit-trail"

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
    EventType.PATIENT_RECORD: (PATIENT_RECORD, "U", None),
    EventType.MEASUREMENT_SAVED: (INSTANCES_ACCESSED, "C", None),
    EventType.MEASUREMENT_DELETED: (INSTANCES_ACCESSED, "D", None),
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


def to_xml(event: AuditEvent, at: str, context: MessageContext | None = None, *, source_id: str = SOURCE_ID,
           site: str = "Custodian") -> str:
    """The PS3.15 A.5.1 message for one event recorded at ``at`` (ISO 8601, UTC), on one line."""
    context = context or MessageContext()
    event_id, action, type_code = _codes(event)
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
        ET.SubElement(ident, "EventOutcomeDescription").text = _text(str(why))

    _active_participants(root, event, context, source_id)
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditEnterpriseSiteID": site,
                                                               "AuditSourceID": source_id})
    SOURCE_TYPE.element(source, "AuditSourceTypeCode")

    objects = [*_patients(event, context), *_studies(event, context), *_other_objects(event, event_id)]
    if event.detail and objects:
        objects[0].details.append(
            ("custodian-detail", json.dumps(event.detail, sort_keys=True, default=str).encode()))
    for obj in objects:
        obj.render(root)
    return ET.tostring(root, encoding="unicode")


def message_of(record: AuditRecord) -> str:
    """A record's stored message; one written before messages were kept is rendered from the record
    now (its participants' names were never looked up, so they stay unknown)."""
    if record.message:
        return record.message
    event = AuditEvent(EventType(record.type), Outcome(record.outcome), record.user, record.studies,
                       record.patients, record.detail)
    return to_xml(event, record.at.isoformat(timespec="microseconds"))


def _received(event: AuditEvent) -> bool:
    """Instances a DICOM peer sent us (to the storage SCP, or a C-GET's sub-operations) were
    transferred (A.5.3.7), not imported from media (A.5.3.8)."""
    return event.type in (EventType.IMPORT, EventType.QUARANTINE) and _peer_acts(event)


def _peer_acts(event: AuditEvent) -> bool:
    return bool(event.user and event.user.startswith(PEER_USER))


def _codes(event: AuditEvent) -> tuple[Code, str, Code | None]:
    return (INSTANCES_TRANSFERRED, "C", None) if _received(event) else EVENTS[event.type]


def _outgoing(event: AuditEvent) -> bool | None:
    """Which way a network exchange went (True: from this workstation); None for local events."""
    if event.type is EventType.RETRIEVE or _received(event):
        return False
    if event.type in (EventType.SEND, EventType.COMMITMENT, EventType.QUERY_PACS):
        return True
    return None


def _active_participants(root: ET._Element, event: AuditEvent, context: MessageContext,
                         source_id: str) -> None:
    """The person (or peer) who asked, this application and, for a transfer or query, the process
    at the other end: A.5.3.7 and A.5.3.12 name the two ends Source and Destination."""
    outgoing = _outgoing(event)
    if outgoing is None or not _peer_acts(event):
        _active(root, event.user or "unknown", requestor=True)
    local_role = APPLICATION_ROLE if outgoing is None else SOURCE_ROLE if outgoing else DESTINATION_ROLE
    _active(root, source_id, requestor=False, role=local_role,
            ae_title=context.local_ae if outgoing is not None else "", host=HOSTNAME)
    if outgoing is not None:
        peer = context.peer
        _active(root, (peer.ae_title or peer.host) if peer else peer_name(event) or "unknown",
                requestor=_peer_acts(event),
                role=DESTINATION_ROLE if outgoing else SOURCE_ROLE, ae_title=peer.ae_title if peer else "",
                host=peer.host if peer else "")
    if event.type is EventType.EXPORT and event.detail.get("serial"):
        # A.5.3.6: the media written is a participant, identified by its serial and type
        media = _active(root, str(event.detail["serial"]), requestor=False, role=DESTINATION_MEDIA)
        kind = MEDIA_TYPES.get(str(event.detail.get("media")), MEDIA_TYPES["zip"])
        kind.element(ET.SubElement(media, "MediaIdentifier"), "MediaType")


def _active(root: ET._Element, user_id: str, *, requestor: bool, role: Code | None = None,
            ae_title: str = "", host: str = "") -> ET._Element:
    attrs = {"UserID": _clean(user_id), "UserIsRequestor": "true" if requestor else "false"}
    if ae_title:  # A.5.2.1: a process's AE titles go in AlternativeUserID
        attrs["AlternativeUserID"] = f"AETITLES={_clean(ae_title)}"
    if host:
        attrs["NetworkAccessPointID"] = _clean(host)
        attrs["NetworkAccessPointTypeCode"] = "5" if "://" in host else "2" if _is_address(host) else "1"
    participant = ET.SubElement(root, "ActiveParticipant", attrs)
    if role is not None:
        role.element(participant, "RoleIDCode")
    return participant


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class _Object:
    """A ParticipantObjectIdentification, built whole so its children keep the schema's order."""

    object_id: str
    type_code: str
    role: str
    id_type: Code
    name: str | None = None  # exactly one of name and query: the schema requires one
    query: bytes | None = None
    details: list[tuple[str, bytes]] = field(default_factory=list)
    description: list[ET._Element] = field(default_factory=list)  # DICOMObjectDescriptionContents

    def render(self, root: ET._Element) -> None:
        obj = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(self.object_id) or "unknown",
            "ParticipantObjectTypeCode": self.type_code, "ParticipantObjectTypeCodeRole": self.role})
        self.id_type.element(obj, "ParticipantObjectIDTypeCode")
        if self.query is not None:
            ET.SubElement(obj, "ParticipantObjectQuery").text = base64.b64encode(self.query).decode()
        else:
            ET.SubElement(obj, "ParticipantObjectName").text = _text(self.name or "")
        for kind, value in self.details:
            ET.SubElement(obj, "ParticipantObjectDetail",
                          {"type": kind, "value": base64.b64encode(value).decode()})
        if self.description:
            described = ET.SubElement(obj, "ParticipantObjectDescription")
            described.extend(self.description)


def _patients(event: AuditEvent, context: MessageContext) -> list[_Object]:
    """The event's patients, else those its studies are filed under; one object per patient
    record: a reference whose records hold two names (one Patient ID, two people) names both. A
    patient without a Patient ID keeps its reference as the ID and says which study stands for
    it. An empty name: none is known."""
    objects = []
    for ref in event.patients or context.filed_patients:
        description = []
        if ref.startswith(NO_ID_PREFIX):
            contains = ET.Element("ParticipantObjectContainsStudy")
            ET.SubElement(contains, "StudyIDs", {"UID": _clean(ref[len(NO_ID_PREFIX):].split("#")[0])})
            description.append(contains)
        for name in context.patient_names.get(ref) or ("",):
            objects.append(_Object(ref, "1", "1", PATIENT_NUMBER, name=name, description=list(description)))
    return objects


def _studies(event: AuditEvent, context: MessageContext) -> list[_Object]:
    """A study's name is its description (A.5.2 leaves it to the application); its accession and
    SOP classes as the index holds them when the event is written."""
    objects = []
    for uid in event.studies:
        facts = context.studies.get(uid, StudyFacts())
        description = []
        if facts.accession:
            description.append(ET.Element("Accession", {"Number": _clean(facts.accession)}))
        description += [ET.Element("SOPClass", {"UID": _clean(sop_class), "NumberOfInstances": str(count)})
                        for sop_class, count in facts.sop_classes]
        objects.append(_Object(uid, "2", "3", STUDY_UID, name=facts.description, description=description))
    return objects


def _other_objects(event: AuditEvent, event_id: Code) -> list[_Object]:
    objects = []
    if event_id is QUERY:  # A.5.3.12: the SOP class queried, with the identifier sent
        queried = MEDIA_DIRECTORY if "outside_media" in event.detail else STUDY_ROOT_FIND
        objects.append(_Object(queried, "2", "3", SOP_CLASS_UID, query=_identifier(event.detail.get("query")),
                               details=[("TransferSyntax", EXPLICIT_VR_LITTLE_ENDIAN.encode())]))
    if event.type in (EventType.USER_CHANGE, EventType.ENROLMENT):
        account = str(event.detail.get("added") or event.detail.get("disabled") or event.user or "unknown")
        objects.append(_Object(account, "1", "11", USER_IDENTIFIER, name=account))
    if event.type is EventType.AUDIT_READ:  # A.5.3.2
        objects.append(_Object(AUDIT_TRAIL, "2", "13", URI, name="Security Audit Log"))
    return objects


def _identifier(query: object) -> bytes:
    """The study-level C-FIND identifier of a query's recorded filters (Explicit VR Little Endian).

    A few short text elements, encoded here rather than by pydicom: listing studies writes a query
    event, and loading pydicom for it would double the start of `custodian studies` (issue 24)."""
    asked = query if isinstance(query, dict) else {}
    elements = [("SpecificCharacterSet", "CS", "ISO_IR 192"), ("QueryRetrieveLevel", "CS", "STUDY")]
    elements += [(keyword, vr, _clean(str(asked[key]))) for key, (keyword, vr) in QUERY_KEYS.items()
                 if asked.get(key)]
    out = bytearray()
    for keyword, vr, text in sorted(elements, key=lambda element: IDENTIFIER_TAGS[element[0]]):
        value = text.encode("utf-8")  # (ISO_IR 192; not validated: a value is what was asked)
        value += b" " * (len(value) % 2)  # text values are padded to even length with a space
        out += struct.pack("<HH2sH", *IDENTIFIER_TAGS[keyword], vr.encode("ascii"), len(value)) + value
    return bytes(out)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: str) -> str:
    """Values from outside (a file's Patient ID) may hold characters XML cannot carry."""
    return _NOT_XML.sub("\ufffd", value)


def _text(value: str) -> str:
    """Element text on one line (attributes escape line breaks; text would carry them): each
    message is one syslog line, and the schema's tokens collapse whitespace anyway."""
    return " ".join(_clean(value).split())
