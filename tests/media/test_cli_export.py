"""`custodian export`, `disclosures` and `agreement` as a film librarian and a privacy officer use
them, including an export killed while it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.demo.studies import Patient
from tests.conftest import REPO, CliUsers, Codes, password_for, write_study

PATIENT = Patient("PID-2024", "Nowak^Piotr")


@pytest.fixture
def library(cli_users: CliUsers, tmp_path: Path) -> CliUsers:
    """The CLI home with one CT (imported by the technologist), a librarian (lib, logged in) and a
    privacy officer (po)."""
    cli = cli_users.cli
    for name, role in (("lib", "librarian"), ("po", "privacy-officer")):
        password = password_for(name)
        added = cli.json("user", "add", name, "--role", role, extra_env={"CUSTODIAN_PASSWORD": password})
        cli_users.codes[name] = Codes.of(added["totp_uri"])
        cli_users.passwords[name] = password
    assert cli_users.login("tech").returncode == 0
    write_study(tmp_path / "incoming", PATIENT, slices=80, size=512)
    assert cli.json("import", str(tmp_path / "incoming"))["imported"] == 80
    assert cli_users.login("lib").returncode == 0
    return cli_users


def _study_uid(users: CliUsers) -> str:
    return users.cli.json("studies")[0]["study_uid"]


def _export_args(study_uid: str, out: Path, *extra: str) -> list[str]:
    return ["export", study_uid, "--recipient", "Piotr Nowak", "--recipient-type", "patient",
            "--purpose", "patient-request", "--identity-check", "photo-id", "--out", str(out), *extra]


def test_export_prints_the_passphrase_once_and_the_accounting_lists_it(library: CliUsers,
                                                                       tmp_path: Path) -> None:
    cli = library.cli
    study_uid = _study_uid(library)
    out = tmp_path / "usb" / "nowak.zip"
    out.parent.mkdir()
    letter = tmp_path / "letter.pdf"
    result = cli("--json", *_export_args(study_uid, out, "--passphrase-delivery", "cover-letter",
                                         "--cover-letter", str(letter)),
                 extra_env={"CUSTODIAN_TOTP": library.codes["lib"].next()})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"out", "sha256", "disclosure_id", "instances", "passphrase"}
    assert data["instances"] == 80 and Path(data["out"]) == out
    assert letter.read_bytes().startswith(b"%PDF")
    tested = subprocess.run(["7z", "t", f"-p{data['passphrase']}", str(out)], capture_output=True,
                            timeout=120)
    assert tested.returncode == 0

    assert cli("--json", *_export_args(study_uid, out)).returncode == 2  # no code given: usage error
    assert library.login("po").returncode == 0
    report = tmp_path / "accounting.pdf"
    listed = cli.json("disclosures", "--patient", PATIENT.patient_id, "--pdf", str(report))
    assert [d["serial"] for d in listed] == [data["serial"]] and listed[0]["recipient"] == "Piotr Nowak"
    assert listed[0]["passphrase_delivery"] == "cover-letter" and "passphrase" not in listed[0]
    assert report.read_bytes().startswith(b"%PDF")

    added = cli("agreement", "add", "CloudRead Ltd", "--reference", "BAA-1", "--effective", "2026-01-01",
                "--expires", "2026-02-30")
    assert added.returncode == 2 and "YYYY-MM-DD" in added.stderr
    assert cli("agreement", "add", "CloudRead Ltd", "--reference", "BAA-1", "--effective", "2020-01-01",
               "--expires", "2021-12-31").returncode == 0
    assert cli.json("agreement", "list")[0]["status"] == "expired"


def test_a_refused_business_associate_export_exits_3_and_writes_nothing(library: CliUsers,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "ba.zip"
    result = library.cli("export", _study_uid(library), "--recipient", "CloudRead Ltd",
                         "--recipient-type", "business-associate", "--purpose", "operations",
                         "--identity-check", "provider-directory", "--out", str(out),
                         extra_env={"CUSTODIAN_TOTP": "000000"})
    assert result.returncode == 3 and "no business associate agreement" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_an_export_killed_while_writing_leaves_no_media_and_no_disclosure(library: CliUsers,
                                                                          tmp_path: Path) -> None:
    cli = library.cli
    study_uid = _study_uid(library)
    folder = tmp_path / "usb"
    folder.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--home", str(cli.home), *_export_args(study_uid, folder / "x.zip")],
        cwd=REPO, env={**cli.env, "CUSTODIAN_TOTP": library.codes["lib"].next()},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    writing = False
    while not writing and process.poll() is None and time.monotonic() < deadline:
        # the unnamed media file shows in the process's descriptors as "<folder>/#NNN (deleted)"
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(folder)) and os.stat(fd).st_size > 1_000_000:
                writing = True
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert writing, "the export finished before it could be interrupted"
    assert list(folder.iterdir()) == []
    assert library.login("po").returncode == 0
    assert cli.json("disclosures", "--patient", PATIENT.patient_id) == []
    assert library.login("lib").returncode == 0
    again = cli("--json", *_export_args(study_uid, folder / "x.iso", "--media", "iso", "--burn"),
                extra_env={"CUSTODIAN_TOTP": library.codes["lib"].next()})
    assert again.returncode == 1 and "No CD/DVD writer was found" in again.stderr, again.stderr
    assert json.loads(again.stdout)["out"] == str(folder / "x.iso") and (folder / "x.iso").exists()


def test_wrong_codes_lock_the_librarian_out_of_the_live_session_too(library: CliUsers,
                                                                     tmp_path: Path) -> None:
    """The review's finding: wrong step-up codes locked the account for new logins, but the same
    live session then exported with a correct code."""
    cli, study_uid = library.cli, _study_uid(library)
    out = tmp_path / "media.zip"
    answers = [cli(*_export_args(study_uid, out), extra_env={"CUSTODIAN_TOTP": "000000"}) for _ in range(5)]
    assert [a.returncode for a in answers] == [3] * 5
    assert all("The authenticator code is not correct." in a.stderr for a in answers[:4])
    locked = "This account is locked after repeated failed codes: the session has ended; log in again after"
    assert locked in answers[4].stderr

    right = library.codes["lib"].next()
    again = cli(*_export_args(study_uid, out), extra_env={"CUSTODIAN_TOTP": right})
    assert again.returncode == 3 and locked in again.stderr and not out.exists()
    listed = cli("studies")
    assert listed.returncode == 3 and locked in listed.stderr
    login = cli("login", extra_env={"CUSTODIAN_USER": "lib", "CUSTODIAN_PASSWORD": library.passwords["lib"],
                                    "CUSTODIAN_TOTP": right})
    assert login.returncode == 3 and "Login failed" in login.stderr

    assert library.login("po").returncode == 0
    events = cli.json("audit", "show", "--user", "lib", "--limit", "40")
    failures = [e for e in events if e["type"] == "login" and e["detail"].get("step_up") and e["outcome"]]
    alerts = [e["detail"]["alert"] for e in events if e["type"] == "security-alert"]
    assert len(failures) == 5 and alerts == ["account locked after repeated step-up failures"]
    assert cli.json("disclosures", "--patient", PATIENT.patient_id) == []
