"""`custodian audit show --xml` (CONTRACT.md, "Audit messages"): the stored PS3.15 messages, one XML
document per line, newest first, each valid against the standard's schema."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from lxml import etree

from tests.audit.schema import invalid
from tests.conftest import CliUsers, Codes, password_for, write_study


def test_audit_show_xml_prints_the_stored_messages_newest_first(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    write_study(tmp_path / "in", slices=2, size=16)
    assert cli_users.login("tech").returncode == 0
    assert cli("import", str(tmp_path / "in")).returncode == 0
    assert cli_users.login("rad").returncode == 0
    assert cli.json("studies", "--patient", "PID-0001")[0]["patient_id"] == "PID-0001"
    refused = cli("audit", "show", "--xml")
    assert refused.returncode == 3 and refused.stdout == ""  # the radiologist may not read the trail

    assert cli_users.login("admin").returncode == 0
    added = cli.json("user", "add", "officer", "--role", "privacy-officer",
                     extra_env={"CUSTODIAN_PASSWORD": password_for("officer")})
    cli_users.codes["officer"] = Codes.of(added["totp_uri"])
    cli_users.passwords["officer"] = password_for("officer")
    assert cli_users.login("officer").returncode == 0

    listed = cli.json("audit", "show", "--limit", "1000")
    shown = cli("audit", "show", "--xml", "--limit", "1000")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert shown.stdout.endswith("\n") and all(lines)
    # the same records as the listing (which is itself recorded, so the XML has one more at the top)
    assert len(lines) == len(listed) + 1
    assert invalid(lines) == {}
    docs = [etree.fromstring(line) for line in lines]
    times = [datetime.fromisoformat(doc.find("EventIdentification").get("EventDateTime")) for doc in docs]
    assert times[1:] == [datetime.fromisoformat(r["at"]) for r in listed]  # record by record
    assert times == sorted(times, reverse=True) and times[0] > times[-1]
    assert docs[0].find("EventIdentification/EventID").get("csd-code") == "110101"  # that listing

    # filters apply as in the listing; the patient is named in the messages about them
    reads = cli("audit", "show", "--xml", "--type", "query-local", "--patient", "PID-0001")
    assert reads.returncode == 0 and reads.stdout
    for line in reads.stdout.splitlines():
        doc = etree.fromstring(line)
        assert doc.find("EventIdentification/EventID").get("csd-code") == "110112"
        (patient,) = [o for o in doc.iter("ParticipantObjectIdentification")
                      if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"]
        assert (patient.get("ParticipantObjectID"), patient.findtext("ParticipantObjectName")) == \
            ("PID-0001", "Testperson^Quentin")
    as_json = cli.json("audit", "show", "--xml", "--type", "query-local", "--patient", "PID-0001")
    assert as_json == reads.stdout.splitlines()
    nothing = cli("audit", "show", "--xml", "--patient", "NO-SUCH-PATIENT")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    # the plain listing is as it was: no messages in it
    assert "message" not in json.dumps(cli.json("audit", "show", "--limit", "5")[0])
