"""The one table that decides who may do what, and which demographics each role may see.

Every CLI command and GUI action names an :class:`Action`; :func:`permits` is the only place that
answers. :data:`VISIBLE_FIELDS` is the minimum-necessary policy: the vault blanks every other
demographic field before a record leaves it, so hidden values never reach a UI model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from enum import StrEnum
from typing import Any, TypeVar

R = TypeVar("R", bound=Any)  # a dataclass record


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    LIBRARIAN = "librarian"
    PRIVACY_OFFICER = "privacy-officer"
    ADMIN = "admin"


class Action(StrEnum):
    LIST_STUDIES = "list studies"
    VIEW_IMAGES = "view images"
    MEASURE = "save measurements"
    KEY_IMAGES = "mark key images"
    SEND_KEY_IMAGES = "send key images to the PACS"  # as a Key Object Selection document
    BREAK_GLASS = "open a restricted study in an emergency"
    IMPORT = "import"  # files, folders and DICOMDIRs of this site's own (`import`)
    IMPORT_MEDIA = "import outside media"  # surveyed, reconciled with the local patient (`import-media`)
    RECONCILE_PATIENTS = "reconcile patient records"
    SEND = "send studies"
    QUERY = "query the PACS"
    RETRIEVE = "retrieve from the PACS"
    EXPORT = "export media"
    COPY_VIEW = "copy or save a displayed image"  # a disclosure, like export (app/vault/disclosure.py)
    DISCLOSURES = "account for disclosures"
    MANAGE_AGREEMENTS = "manage business associate agreements"
    RESTRICT_PATIENT = "restrict a patient"
    VERIFY = "verify the vault"
    SHRED = "shred a study"
    AUDIT_READ = "read the audit trail"
    AUDIT_VERIFY = "verify the audit trail"
    MANAGE_USERS = "manage users"
    MANAGE_NODES = "manage PACS nodes"
    ECHO_NODE = "check a PACS node"
    SITE_POLICY = "change the site policy"
    ROTATE_KEYS = "rotate keys"
    BACKUP = "back up the vault"
    PIN_STUDY = "pin a study in the cache"
    EVICT_CACHE = "evict studies to the cache budget"
    PREFETCH = "prefetch a patient's priors"


class Duty(StrEnum):
    """The workstation's own work, done while nobody is logged in or on a reader's behalf. Each is
    held to the action it performs, so emergency mode stops the duties that change the cache as
    it stops people."""

    RECEIVE = "receive instances"
    FLUSH_OUTBOX = "send what waited in the outbox"
    EVICT_CACHE = "keep the cache to its budget"
    PREFETCH = "prefetch priors"
    FORWARD_AUDIT = "forward the audit trail"
    CHECK_AUDIT = "check the audit trail's new records"


class Field(StrEnum):
    """Demographic fields of the minimum-necessary policy."""

    PATIENT_NAME = "patient name"
    PATIENT_ID = "patient ID"
    BIRTH_DATE = "birth date"
    SEX = "sex"
    ACCESSION = "accession number"


A = Action
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.RADIOLOGIST: frozenset({A.LIST_STUDIES, A.VIEW_IMAGES, A.MEASURE, A.BREAK_GLASS, A.QUERY,
                                 A.RETRIEVE, A.ECHO_NODE, A.PIN_STUDY, A.PREFETCH, A.COPY_VIEW,
                                 A.KEY_IMAGES, A.SEND_KEY_IMAGES}),
    Role.TECHNOLOGIST: frozenset({A.LIST_STUDIES, A.VIEW_IMAGES, A.IMPORT, A.IMPORT_MEDIA,
                                  A.RECONCILE_PATIENTS, A.SEND, A.QUERY, A.RETRIEVE, A.VERIFY,
                                  A.BREAK_GLASS, A.ECHO_NODE, A.PIN_STUDY, A.EVICT_CACHE, A.PREFETCH}),
    # The film library brings in outside media only, through the survey and reconciliation.
    Role.LIBRARIAN: frozenset({A.LIST_STUDIES, A.IMPORT_MEDIA, A.RECONCILE_PATIENTS, A.EXPORT,
                               A.DISCLOSURES}),
    Role.PRIVACY_OFFICER: frozenset({A.AUDIT_READ, A.AUDIT_VERIFY, A.DISCLOSURES, A.MANAGE_AGREEMENTS,
                                     A.RESTRICT_PATIENT, A.SHRED, A.VERIFY}),
    Role.ADMIN: frozenset({A.MANAGE_USERS, A.MANAGE_NODES, A.ECHO_NODE, A.SITE_POLICY, A.ROTATE_KEYS,
                           A.BACKUP, A.VERIFY, A.AUDIT_VERIFY, A.EVICT_CACHE}),
}
# What each duty does, in the terms of the table above.
DUTIES: dict[Duty, Action] = {
    Duty.RECEIVE: A.IMPORT,
    Duty.FLUSH_OUTBOX: A.SEND,
    Duty.EVICT_CACHE: A.EVICT_CACHE,
    Duty.PREFETCH: A.RETRIEVE,
    Duty.FORWARD_AUDIT: A.AUDIT_READ,  # (the trail is read and sent, never changed)
    Duty.CHECK_AUDIT: A.AUDIT_READ,  # (the trail is read; only the signed mark moves)
}

VISIBLE_FIELDS: dict[Role, frozenset[Field]] = {
    Role.RADIOLOGIST: frozenset(Field),
    # Technologists and librarians match patients (and requesters) on these and nothing more.
    Role.TECHNOLOGIST: frozenset({Field.PATIENT_NAME, Field.PATIENT_ID, Field.BIRTH_DATE, Field.SEX,
                                  Field.ACCESSION}),
    Role.LIBRARIAN: frozenset({Field.PATIENT_NAME, Field.PATIENT_ID, Field.BIRTH_DATE,
                               Field.ACCESSION}),
    Role.PRIVACY_OFFICER: frozenset({Field.PATIENT_NAME, Field.PATIENT_ID}),
    Role.ADMIN: frozenset(),
}

# Where each field stands in the records the door hands out (StudySummary, a PACS's RemoteStudy).
_ATTRIBUTES = {Field.PATIENT_NAME: "patient_name", Field.PATIENT_ID: "patient_id",
               Field.BIRTH_DATE: "birth_date", Field.SEX: "sex", Field.ACCESSION: "accession"}


def blanked(record: R, shown: frozenset[Field]) -> R:
    """The one minimum-necessary rule: ``record`` (a dataclass) with every demographic field that is
    not ``shown`` set to None, so a hidden value never leaves the vault."""
    return replace(record, **{attribute: None for field_, attribute in _ATTRIBUTES.items()
                              if field_ not in shown and attribute in {f.name for f in fields(record)}})


def permits(role: Role, action: Action) -> bool:
    return action in PERMISSIONS.get(role, frozenset())


def narrowed(site: Mapping[str, Iterable[str]]) -> dict[Role, frozenset[Field]]:
    """:data:`VISIBLE_FIELDS` with a site's lists (role -> field names) in force; a site may show a
    role fewer fields than the table, never more. ValueError names what is wrong."""
    visible = dict(VISIBLE_FIELDS)
    for role_name, names in site.items():
        role = parse_role(role_name)
        try:
            fields = frozenset(Field(name) for name in names)
        except ValueError:
            known = ", ".join(f.value for f in Field)
            raise ValueError(f"unknown demographic field for the {role.value} role; fields: "
                             f"{known}") from None
        if extra := fields - VISIBLE_FIELDS[role]:
            raise ValueError(f"the {role.value} role may only be shown fewer fields than Custodian's table, "
                             f"not also {', '.join(sorted(f.value for f in extra))}")
        visible[role] = fields
    return visible


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValueError(f"Unknown role '{text}'; choose one of: {names}.") from None
