"""An ordinary day at the workstation, against a real PACS (Orthanc) and modality (DCMTK storescu):
its audit messages are what the schema test checks, and what the validity count in the report on
issue 19 measured. Deterministic: prefetch is off, so no background thread adds events.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pydicom

from app.audit.events import EventType
from app.audit.report import AuditQuery, ReportKind
from app.demo.studies import Patient
from app.errors import NotPermitted
from app.media.disclosures import Delivery, ExportRequest, IdentityCheck, MediaKind, Purpose, RecipientKind
from app.net.nodes import Node
from app.security.roles import Role
from tests.conftest import VaultEnv, study_bytes, write_study
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import AET, Orthanc
from tests.peers.ports import free_port

ALICE = Patient("PID-DAY-A", "Daylight^Alice")
BOB = Patient("PID-DAY-B", "Dusk^Bob")
BOB_AGAIN = Patient("PID-DAY-B", "Dawn^Bert", birth_date="19700101")  # another person, same ID
NOID = Patient("", "Noid^Nina")


def _uid(items: list[tuple[str, bytes]]) -> str:
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1])).StudyInstanceUID)


def _wait_for(env: VaultEnv, kind: EventType, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not env.vault._gate._audit.records(AuditQuery(event_type=kind, limit=1)):
        assert time.monotonic() < deadline, f"no {kind.value} event"
        time.sleep(0.1)


def ordinary_day(env: VaultEnv, folder: Path) -> list[str]:
    """``env`` has admin, rad and tech; the day's audit messages, oldest first."""
    scp_port = free_port()  # our SCP: where the modality sends and Orthanc reports commitment
    pacs = Orthanc(folder / "orthanc", known={"custodian": ("CUSTODIAN", scp_port),
                                              "modality": ("STORESCU", 104)})
    pacs.start()
    try:
        prior = write_study(folder / "prior", ALICE, slices=3, size=16, date="20250101")
        assert storescu(pacs.port, prior, called=AET).returncode == 0
        prior_uid = str(pydicom.dcmread(prior[0]).StudyInstanceUID)

        admin = env.login("admin")
        env.add("po", Role.PRIVACY_OFFICER)
        env.add("films", Role.LIBRARIAN)
        env.vault.admin.set_policy(admin, "scp_port", str(scp_port))
        env.vault.admin.set_policy(admin, "prefetch_priors", "0")
        env.vault.admin.set_policy(admin, "pacs_node", "pacs")
        env.vault.nodes.add(admin, Node("pacs", AET, "127.0.0.1", pacs.port))
        env.vault.nodes.add(admin, Node("modality", "STORESCU", "127.0.0.1", 104))
        env.vault.nodes.echo(admin, "pacs")
        scp = env.vault.pacs.storage_scp(host="127.0.0.1")
        scp.start()
        try:
            # the morning's study from the modality, outside studies, an unreadable file
            today = write_study(folder / "today", ALICE, slices=4, size=16)
            assert storescu(scp.port, today, called="CUSTODIAN").returncode == 0
            today_uid = str(pydicom.dcmread(today[0]).StudyInstanceUID)
            tech = env.login("tech")
            bob, bert, noid = (study_bytes(p, slices=2, size=16) for p in (BOB, BOB_AGAIN, NOID))
            for items in (bob, bert, noid):
                env.vault.intake.import_bytes(tech, items)
            env.vault.intake.import_bytes(tech, [("junk.dcm", b"not a DICOM file")])

            rad = env.login("rad")
            env.vault.reading.studies(rad)
            env.vault.reading.studies(rad, ALICE.patient_id)
            for uid in (today_uid, _uid(bob), _uid(noid)):
                env.vault.reading.open_series(rad, env.vault.reading.series(rad, uid)[0].series_uid)
            env.vault.pacs.query(rad, "pacs", patient_id=ALICE.patient_id)
            env.vault.pacs.retrieve(rad, "pacs", prior_uid)
            env.vault.intake.reconcile_patients(tech, _uid(bert), _uid(bob))

            env.vault.outbox.send(tech, "pacs", _uid(bob))
            _wait_for(env, EventType.COMMITMENT)

            films = env.login("films")
            env.vault.disclosure.export(films, ExportRequest(
                (_uid(noid),), RecipientKind.PATIENT, "The patient herself", Purpose.PATIENT_REQUEST,
                IdentityCheck.PHOTO_ID, Delivery.HANDED_OVER, MediaKind.ZIP, folder / "media.zip"),
                env.accounts["films"].codes.next())

            po = env.login("po")
            env.vault.admin.restrict_patient(po, ALICE.patient_id)
            env.vault.reading.break_glass(rad, today_uid, "ward round, patient deteriorating",
                                  env.accounts["rad"].codes.next())
            env.vault.trail.show(po, AuditQuery(patient=ALICE.patient_id))
            env.vault.trail.report(po, ReportKind.USER, AuditQuery(user="rad"))
            with contextlib.suppress(NotPermitted):  # refused, and the refusal is recorded
                env.vault.trail.show(rad, AuditQuery())
            env.vault.admin.shred(po, _uid(bert), "imported by mistake")
            env.vault.admin.backup(admin, folder / "day.backup", "a backup passphrase for today")
            env.vault.accounts.logout(rad)
        finally:
            scp.stop()
    finally:
        pacs.stop()
    return [xml for _, xml in reversed(env.vault._gate._audit.messages())]
