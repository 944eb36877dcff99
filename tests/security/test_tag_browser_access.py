"""The tag browser's door: the attributes of an image a session opened, with what the role may
not be shown withheld as the site's signed policy narrows it, and every look in the trail."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.errors import NotPermitted
from app.imaging.tags import WITHHELD
from app.security import managed_policy
from app.vault import Vault
from tests.conftest import PASSPHRASE, VaultEnv, study_bytes
from tests.security.test_managed_policy import site  # noqa: F401 (the fixture)


def test_attributes_are_withheld_as_the_site_narrows_the_role(env: VaultEnv, site: tuple[Path, Path, bytes]  # noqa: F811
                                                              ) -> None:
    policy, _, private = site
    items = study_bytes(slices=1, size=16)
    env.vault.intake.import_bytes(env.login("tech"), items)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1]))
    policy.write_bytes(managed_policy.sign({"visible_fields": {"technologist": ["patient ID"]}}, private))
    env.vault.close()
    env.vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.sessions.clear()
    tech = env.login("tech")

    with pytest.raises(NotPermitted, match="Open the series"):
        env.vault.reading.attributes(tech, ds.SOPInstanceUID)
    env.vault.reading.open_series(tech, ds.SeriesInstanceUID)
    listed = env.vault.reading.attributes(tech, ds.SOPInstanceUID)
    rows = {row.keyword: row.value for row in listed}
    assert rows["PatientName"] == rows["PatientBirthDate"] == rows["PatientSex"] == WITHHELD
    assert rows["PatientID"] == ds.PatientID and rows["Modality"] == ds.Modality
    reads = env.vault._gate._audit.records(AuditQuery(user="tech", event_type=EventType.INSTANCES_READ))
    (looked,) = [r for r in reads if "attributes" in r.detail]
    assert looked.studies == (ds.StudyInstanceUID,) and looked.detail["attributes"] == len(listed)
