"""The service's socket in one process: every offered method answers as the embedded vault does,
values come back as their declared types, errors keep their sentence and exit code, and a request
that does not fit what a method declares is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyotp
import pytest
import uvicorn
from pydicom.data import get_testdata_file
from PySide6.QtGui import QImage

from app.audit.dicom_xml import HOSTNAME
from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.audit.syslog import checkpoint_message, event_message
from app.errors import AuthenticationFailed, NotAuthenticated, NotPermitted, UsageError
from app.media.outside import Reconcile, Survey
from app.net.nodes import Node
from app.net.watch import PacsStatus
from app.security import totp
from app.security.roles import Role
from app.security.sessions import Session
from app.security.tls import TlsIdentity
from app.service.client import Channel, RemoteVault, UnixConnection
from app.service.codec import Malformed, decode, encode
from app.service.daemon import listen
from app.service.methods import METHODS
from app.service.parts import form
from app.service.server import Admission, PeerProtocol, application
from app.store.records import ImportReport, StudySummary
from app.vault import Vault
from tests.conftest import REPO, VaultEnv, study_bytes, write_study

PACS_DOWN = PacsStatus("pacs", False, 2, "nothing is listening there")


@pytest.fixture
def served(env: VaultEnv, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run" / "custodian.sock"
    sock = listen(path, None)
    server = uvicorn.Server(uvicorn.Config(application(env.vault, Admission(None), locked=lambda: None,
                                                       pacs=lambda: PACS_DOWN),
                                           http=PeerProtocol, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield path
    server.should_exit = True
    thread.join(10)


def _client(path: Path, env: VaultEnv, name: str) -> tuple[RemoteVault, Session]:
    remote = RemoteVault(path)
    account = env.accounts[name]
    _, session = remote.accounts.login(account.name, account.password, account.codes.next())
    return remote, session


def test_the_socket_is_for_the_service_alone_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file left by a service that died
    sock = listen(path, None)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        sock.close()


def test_a_client_reads_what_its_role_may_and_is_refused_the_rest(served: Path, env: VaultEnv,
                                                                  tmp_path: Path) -> None:
    tech, tech_session = _client(served, env, "tech")
    paths = write_study(tmp_path / "in", slices=3)
    report = tech.intake.import_paths(tech_session, [*paths, tmp_path / "missing.dcm"])
    assert isinstance(report, ImportReport) and report.imported == 3
    assert [r.path for r in report.rejected] == [str(tmp_path / "missing.dcm")]
    rad, rad_session = _client(served, env, "rad")
    studies = rad.reading.studies(rad_session)
    embedded = env.vault.reading.studies(env.login("rad"))
    assert studies == embedded and isinstance(studies[0], StudySummary)
    assert rad.accounts.whoami(rad_session).user.role is Role.RADIOLOGIST
    with pytest.raises(NotPermitted) as refused:
        rad.admin.list_users(rad_session)
    assert refused.value.exit_code == 3 and "radiologist" in str(refused.value).lower()
    with pytest.raises(UsageError, match="not available through the workstation service"):
        rad.cache.evict()  # a duty: the service's own work
    rad.accounts.logout(rad_session)
    with pytest.raises(NotAuthenticated):
        rad.reading.studies(rad_session)


def test_a_wrong_code_and_an_unknown_token_are_plain_refusals(served: Path, env: VaultEnv) -> None:
    remote = RemoteVault(served)
    with pytest.raises(AuthenticationFailed) as failed:
        remote.accounts.login("rad", env.accounts["rad"].password, "000000")
    assert failed.value.exit_code == 3
    with pytest.raises(NotAuthenticated):
        remote.accounts.resume("not-a-token")


def test_a_session_is_bound_to_the_os_account_that_logged_in(served: Path, env: VaultEnv) -> None:
    token, _ = env.vault.accounts.login("rad", env.accounts["rad"].password, env.accounts["rad"].codes.next(),
                                        peer_uid=4242)
    remote = RemoteVault(served)  # connects as this test's own account, not 4242
    with pytest.raises(NotAuthenticated, match="another OS account"):
        remote.accounts.resume(token)


@pytest.mark.parametrize("body", [
    {"token": None, "args": {"name": 5, "password": "x", "code": "1"}},  # a number for a name
    # claims to be another OS account:
    {"token": None, "args": {"name": "rad", "password": "x", "code": "1", "peer_uid": 0}},
    {"token": None, "args": {"name": "rad", "password": "x", "code": "1", "extra": 1}},
    {"token": None, "args": ["rad", "x", "1"]},
])
def test_requests_that_do_not_fit_the_method_are_refused(served: Path, body: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Channel(served).request("POST", "/v1/call/accounts/login", body)


def test_unknown_methods_and_duties_are_not_offered(served: Path) -> None:
    channel = Channel(served)
    for service, method in (("cache", "evict"), ("outbox", "flush_waiting"), ("trail", "forwarder"),
                            ("accounts", "save_token"), ("intake", "import_paths"), ("nothing", "here")):
        assert (service, method) not in METHODS
        with pytest.raises(UsageError, match="does not offer"):
            channel.request("POST", f"/v1/call/{service}/{method}", {"token": None, "args": {}})


def test_values_cross_as_their_declared_types() -> None:
    report = ImportReport(imported=2, studies={"1.2"}, warnings=["w"])
    back = decode(json.loads(json.dumps(encode(report))), ImportReport)
    assert back == report
    with pytest.raises(Malformed):
        decode({"imported": "two"}, ImportReport)
    with pytest.raises(Malformed):
        decode({"imported": 1, "smuggled": 1}, ImportReport)
    assert decode(encode(Role.ADMIN), Role) is Role.ADMIN
    item = study_bytes()[0]
    assert decode(json.loads(json.dumps(encode(item))), tuple[str, bytes]) == item
    node = Node("pacs", "PACS", "pacs.example", 11112, TlsIdentity("CA", "CERT", "PRIVATE KEY"))
    assert encode(node)["tls"]["key_pem"] == ""  # what the service answers never carries a key
    assert encode(node, secrets=True)["tls"]["key_pem"] == "PRIVATE KEY"  # what a client sends does


def logged_in_client(served: Path, env: VaultEnv, tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI client of ``served`` as 'rad', logged in by `custodian login`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    client = {**clean, "CUSTODIAN_SOCKET": str(served), "XDG_STATE_HOME": str(tmp_path / "state")}
    rad = env.accounts["rad"]
    login = subprocess.run([sys.executable, "-m", "app", "login"], capture_output=True, text=True, cwd=REPO,
                           env={**client, "CUSTODIAN_USER": "rad", "CUSTODIAN_PASSWORD": rad.password,
                                "CUSTODIAN_TOTP": rad.codes.next()}, timeout=60)
    assert login.returncode == 0, login.stderr
    return client


def test_the_workstation_window_reads_through_the_socket(served: Path, env: VaultEnv, tmp_path: Path) -> None:
    """The GUI as a client: it logs in and shows the study's pixels, which the service decrypts
    only after the audited open of the series."""
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=3, size=64))
    study = env.vault.reading.studies(env.login("rad"))[0].study_uid
    client = logged_in_client(served, env, tmp_path)
    shot = tmp_path / "screen.png"
    result = subprocess.run([sys.executable, "-m", "app", "gui", "--open", study, "--screenshot", str(shot)],
                            capture_output=True, text=True, cwd=REPO, env=client, timeout=120)
    assert result.returncode == 0, result.stderr
    image = QImage(str(shot)).convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    viewport = rows[100:700, 700 * 3:1200 * 3]  # inside the single viewport, right of the study list
    assert len(np.unique(viewport)) >= 3, "air, water and bone of the phantom"
    env.add("po", Role.PRIVACY_OFFICER)
    trail = env.vault.trail.show(env.login("po"), AuditQuery(user="rad", event_type=EventType.INSTANCES_READ))
    assert any(study in r.studies and r.detail.get("series") for r in trail)  # the service's audited open


def test_a_client_shows_the_services_pacs_check_and_a_gone_service_as_no_pacs(served: Path) -> None:
    """The downtime banner in client mode: the service watches the PACS, the window asks it."""
    remote = RemoteVault(served)
    assert remote.watch_pacs() == PACS_DOWN
    gone = RemoteVault(served.parent / "nothing.sock").watch_pacs()
    assert gone.node is None and "No workstation service answers" in str(gone.error)


def test_an_enrolment_comes_back_only_as_the_service_issued_it(served: Path, env: VaultEnv) -> None:
    remote, session = _client(served, env, "rad")
    issued = remote.accounts.begin_reenrolment(session)
    forged = dataclasses.replace(issued, totp_secret=pyotp.random_base32())
    with pytest.raises(NotPermitted, match="not issued to this OS account"):
        remote.accounts.finish_reenrolment(session, forged, totp.current_code(forged.totp_secret))
    remote.accounts.finish_reenrolment(session, issued, totp.current_code(issued.totp_secret))
    with pytest.raises(NotPermitted):  # once only
        remote.accounts.finish_reenrolment(session, issued, totp.current_code(issued.totp_secret))


def test_the_lock_screen_unlocks_a_session_idle_past_its_limit(served: Path, env: VaultEnv) -> None:
    remote, session = _client(served, env, "rad")
    with env.vault._core.transaction() as conn:  # an hour without activity
        conn.execute("UPDATE sessions SET last_seen = last_seen - 3600 WHERE token_hash = ?",
                     (session.token_hash,))
    with pytest.raises(NotAuthenticated, match="inactivity"):
        remote.reading.studies(session)
    account = env.accounts["rad"]
    code = account.codes.next()
    with pytest.raises(AuthenticationFailed):
        remote.accounts.unlock(session, "wrong password", code)
    remote.accounts.unlock(session, account.password, code)  # a wrong password spent no code
    assert remote.reading.studies(session) == []
    remote.accounts.logout(session)
    with pytest.raises(NotAuthenticated):  # an ended session is not unlocked
        remote.accounts.unlock(session, account.password, account.codes.next())


def test_outside_media_are_read_by_the_client_and_reconciled_by_the_service(served: Path, env: VaultEnv,
                                                                            tmp_path: Path) -> None:
    """pydicom's DICOMDIR file-set with a broken file in it, surveyed and imported through the
    socket: the survey is audited in the service, the outside patient filed under the issuer."""
    media = tmp_path / "cdrom"
    shutil.copytree(Path(get_testdata_file("DICOMDIR")).parent, media)
    (media / "BROKEN").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00broken")
    remote, tech = _client(served, env, "tech")
    found = remote.intake.survey_media(tech, media)
    assert isinstance(found, Survey) and sum(s.instances for s in found.studies) >= 30
    report = remote.intake.import_media(tech, media, None, Reconcile(outside_issuer="Outside Clinic"))
    assert report.imported == sum(s.instances for s in found.studies)
    assert [r.path.endswith("BROKEN") for r in report.rejected] == [True]
    issuers = {s.patient_id for s in env.vault.reading.studies(env.login("rad"))}
    assert issuers == {s.patient_id for s in found.studies}
    env.add("po", Role.PRIVACY_OFFICER)
    trail = env.vault.trail.show(env.login("po"), AuditQuery(user="tech"))
    assert any(r.detail.get("outside_media") == "cdrom" for r in trail)


def test_a_backup_is_made_by_the_service_and_fetched_once_by_the_administrator(
        served: Path, env: VaultEnv, tmp_path: Path) -> None:
    """The administrator's OS account cannot read the vault: the service seals the backup in its
    own folder, and it arrives at the name asked for, restorable, with nothing left behind."""
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    passphrase = "a backup passphrase long enough"
    remote, rad = _client(served, env, "rad")
    with pytest.raises(NotPermitted):
        remote.admin.backup(rad, tmp_path / "by-rad.backup", passphrase)
    assert not (tmp_path / "by-rad.backup").exists()
    remote, admin = _client(served, env, "admin")
    out = tmp_path / "site.backup"
    made = remote.admin.backup(admin, out, passphrase)
    assert made.path == out and made.instances == 2
    assert made.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert list((env.home / "outgoing").iterdir()) == []  # fetched once, gone from the spool
    with pytest.raises(UsageError, match="already exists"):
        remote.admin.backup(admin, out, passphrase)
    restored = Vault.restore(out, tmp_path / "restored", passphrase, vault_passphrase="restored passphrase",
                             use_keyring=False)
    restored.close()
    env.add("po", Role.PRIVACY_OFFICER)
    trail = env.vault.trail.show(env.login("po"), AuditQuery(event_type=EventType.BACKUP))
    assert [r.detail["file"] for r in trail] == ["site.backup"]


def test_the_repositorys_file_is_streamed_to_the_service_for_reconciliation(
        served: Path, env: VaultEnv, tmp_path: Path) -> None:
    """The client reads the repository's copy (its OS account may, the service's may not) and the
    service compares it, line by line, with the chain: a record altered there is named."""
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=2, size=16))
    log = env.vault._gate._audit
    entries = log.entries()
    lines = [event_message(e, HOSTNAME).decode() for e in entries]
    lines.append(checkpoint_message(log.sign_head(entries[-1]), HOSTNAME, log.key_id).decode())
    altered = next(i for i, line in enumerate(lines) if '"tech"' in line)
    lines[altered] = lines[altered].replace('"tech"', '"mallory"')
    central = tmp_path / "central.log"
    central.write_text("\n".join(lines) + "\n")
    remote, admin = _client(served, env, "admin")
    result = remote.trail.reconcile(admin, central)
    embedded = env.vault.trail.reconcile(env.login("admin"), central)
    assert result == dataclasses.replace(embedded, pending=result.pending)  # (the first was recorded since)
    assert result.received == len(entries) and result.checkpoints == 1 and result.bad_checkpoints == []
    assert result.altered == [entries[altered].seq]
    remote, rad = _client(served, env, "rad")
    with pytest.raises(NotPermitted):
        remote.trail.reconcile(rad, central)
    with pytest.raises(UsageError, match="Could not read the repository's file"):
        remote.trail.reconcile(admin, tmp_path / "absent.log")


def test_files_travel_as_parts_only_where_a_method_takes_files(served: Path, env: VaultEnv) -> None:
    remote, tech = _client(served, env, "tech")
    token = remote.token_of(tech)
    items = study_bytes(slices=2, size=16)
    channel = Channel(served)
    with pytest.raises(UsageError, match="takes none"):  # files for an argument of another type
        channel.request("POST", "/v1/call/reading/studies", {"token": token, "args": {}},
                        ("patient_id", items))
    body, kind = form({"token": token, "args": {}}, "items", items)
    names = json.dumps([label for label, _ in items]).encode()
    assert names in body
    connection = UnixConnection(served)  # one name for two files
    connection.request("POST", "/v1/call/intake/import_bytes", body=body.replace(names, b'["one"]'),
                       headers={"Content-Type": kind})
    refused = json.loads(connection.getresponse().read())
    assert refused["exit_code"] == 2 and "do not match" in refused["message"]
    report = channel.request("POST", "/v1/call/intake/import_bytes", {"token": token, "args": {}},
                             ("items", items))
    assert report["imported"] == 2 and body.count(items[0][1]) == 1  # the bytes as they are


def test_the_service_refuses_a_vault_whose_key_a_person_holds(env: VaultEnv, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    refused = subprocess.run([sys.executable, "-m", "app", "--home", str(env.home), "service", "--socket",
                              str(tmp_path / "s.sock")], capture_output=True, text=True, cwd=REPO, env=clean,
                             timeout=60)
    assert refused.returncode == 2 and "held by a person" in refused.stderr
    assert not (tmp_path / "s.sock").exists()


def test_a_volume_crosses_in_one_answer_value_for_value(served: Path, env: VaultEnv) -> None:
    """Building a volume through the socket asks once for every native image's pixels (not a
    request per image); the volume is the embedded one, value for value; and the answer holds only
    what the session opened."""
    from app.imaging.volume import build_volume

    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=6, size=64))
    env.vault.intake.import_paths(env.login("tech"), [Path(get_testdata_file("JPEG2000.dcm"))])
    rad, session = _client(served, env, "rad")
    study = next(s for s in rad.reading.studies(session) if s.instances == 6)
    series = rad.reading.series(session, study.study_uid)[0].series_uid
    embedded = env.vault.reading.open_series(env.login("rad"), series)
    fetch, alone = rad.reading.frame_data, []

    def one_by_one(*args: object) -> bytes:
        alone.append(args)
        return fetch(*args)
    rad.reading.frame_data = one_by_one  # type: ignore[method-assign]
    images = rad.reading.open_series(session, series)
    assert np.array_equal(images.volume(), embedded.volume())
    assert alone == []  # (a 3D view then decodes the middle slice alone for its window)
    ours, theirs = build_volume(images), build_volume(embedded)
    assert np.array_equal(ours.data, theirs.data) and ours.data.dtype == theirs.data.dtype
    token = rad.token_of(session)
    with pytest.raises(UsageError, match="stored without compression"):
        rad.channel.read_into("/v1/pixels", {"token": token, "series_uid": series,
                                             "sop_uids": [images.instances[0].sop_uid, "1.2.3.4"]},
                              memoryview(bytearray(64)))
    other = next(s for s in env.vault.reading.studies(env.login("rad")) if s.study_uid != study.study_uid)
    other_series = env.vault.reading.series(env.login("rad"), other.study_uid)[0].series_uid
    with pytest.raises(NotPermitted, match="Open the series"):
        rad.channel.read_into("/v1/pixels", {"token": token, "series_uid": other_series, "sop_uids": []},
                              memoryview(bytearray(64)))
