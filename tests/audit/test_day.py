"""An ordinary day's audit trail (tests/audit/day.py, with a real PACS and modality): every message
valid against the standard's schema, with the participants A.5.3 asks for."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from lxml import etree
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from tests.audit.day import ALICE, NOID, ordinary_day
from tests.audit.schema import invalid
from tests.conftest import VaultEnv

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None or shutil.which("storescu") is None,
                                reason="Orthanc and DCMTK are not installed (installer/setup.sh does)")


def _roles(doc: etree._Element) -> dict[str, etree._Element]:
    return {a.find("RoleIDCode").get("csd-code"): a for a in doc.iter("ActiveParticipant")
            if a.find("RoleIDCode") is not None}


def _names(doc: etree._Element) -> set[str]:
    return {o.findtext("ParticipantObjectName") or "" for o in doc.iter("ParticipantObjectIdentification")
            if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"}


def test_every_message_of_an_ordinary_day_is_valid(env: VaultEnv, tmp_path: Path) -> None:
    messages = ordinary_day(env, tmp_path)
    assert len(messages) > 40
    assert invalid(messages) == {}
    docs = [etree.fromstring(xml) for xml in messages]
    by_id: dict[str, list[etree._Element]] = {}
    for doc in docs:
        by_id.setdefault(doc.find("EventIdentification/EventID").get("csd-code"), []).append(doc)
    assert {"110103", "110104", "110105", "110106", "110110", "110112", "110113", "110114"} <= set(by_id)

    # transfers: the modality's sends, the retrieve (and its C-GET arrivals), the send, the commitment
    transfers = [_roles(doc) for doc in by_id["110104"]]
    assert all({"110152", "110153"} <= set(ends) for ends in transfers)
    sources = {ends["110153"].get("UserID") for ends in transfers}
    assert {"STORESCU", "ORTHANC"} <= sources
    orthanc = next(ends["110153"] for ends in transfers if ends["110153"].get("UserID") == "ORTHANC")
    assert (orthanc.get("NetworkAccessPointID"), orthanc.get("NetworkAccessPointTypeCode")) == (
        "127.0.0.1", "2")
    assert all(_names(doc) for doc in by_id["110104"])  # each names its patient

    # the PACS query carries what was asked
    (pacs_query,) = [doc for doc in by_id["110112"] if "110152" in _roles(doc)]
    query = base64.b64decode(pacs_query.findtext(".//ParticipantObjectQuery"))
    assert read_dataset(DicomBytesIO(query), is_implicit_VR=False, is_little_endian=True).PatientID == \
        ALICE.patient_id

    # patients by name, the one without a Patient ID too (on the media under the media's ID)
    everyone = set().union(*(_names(doc) for doc in docs))
    assert {ALICE.name, NOID.name, "Dusk^Bob", "Dawn^Bert"} <= everyone
    (export,) = [doc for doc in by_id["110106"] if "110154" in _roles(doc)]
    assert _names(export) == {NOID.name}
    (shred,) = by_id["110105"]
    assert _names(shred) == {"Dusk^Bob"}  # the reconciled record the shredded study was filed under
