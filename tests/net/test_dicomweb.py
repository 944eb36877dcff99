"""DICOMweb nodes against Orthanc's DICOMweb plugin behind nginx, as sites deploy it (TLS from the
site's CA; HTTP basic or a bearer token): the echo and its refusals, QIDO-RS search, WADO-RS
retrieve into the vault with the stored syntax kept, STOW-RS send through the outbox across an
outage, audit messages naming the URL as the network access point, and a presentation state and key
images that come back by WADO-RS as they went by STOW-RS."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from lxml import etree
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.demo.studies import Patient
from app.errors import NotPermitted, UsageError
from app.imaging.display import Window
from app.imaging.measure import Kind, Measurement
from app.net.association import PeerError
from app.net.nodes import Node
from app.security.roles import Role
from tests.audit.schema import invalid
from tests.conftest import CliUsers, VaultEnv, make_env, study_bytes
from tests.peers.dicomweb import PASSWORD, TOKEN, USER, DicomWebPacs, available
from tests.peers.pki import Authority, Site
from tests.service.test_rpc import _client, served  # noqa: F401  (the service on a socket)

COMPRESSED = ("MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm")  # JPEG-LS, JPEG 2000 (pydicom's data)


@dataclass
class Web:
    pacs: DicomWebPacs
    site: Site
    ct_uid: str  # a generated CT study of PID-WEB, three slices
    accession: str
    held: dict[str, dict[str, bytes]]  # study UID -> SOP Instance UID -> bytes as Orthanc holds them


def _upload(pacs: DicomWebPacs, data: bytes) -> None:
    """Through Orthanc's own REST API (loopback): it keeps the file as it is."""
    request = urllib.request.Request(f"http://127.0.0.1:{pacs.orthanc.http_port}/instances", data=data,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["Status"] == "Success"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    if not available():
        pytest.skip("Orthanc's DICOMweb plugin and nginx are not installed (installer/setup.sh does)")
    folder = tmp_path_factory.mktemp("dicomweb")
    site = Site(folder, "pacs.example")
    pacs = DicomWebPacs(folder / "pacs", site)
    pacs.start()
    held: dict[str, dict[str, bytes]] = {}
    items = [data for _, data in study_bytes(Patient("PID-WEB", "Web^Wendy"), slices=3, size=32)]
    for data in items + [Path(get_testdata_file(name)).read_bytes() for name in COMPRESSED]:
        ds = pydicom.dcmread(DicomBytesIO(data))
        held.setdefault(str(ds.StudyInstanceUID), {})[str(ds.SOPInstanceUID)] = data
        _upload(pacs, data)
    first = pydicom.dcmread(DicomBytesIO(items[0]))
    yield Web(pacs, site, str(first.StudyInstanceUID), str(first.AccessionNumber), held)
    pacs.stop()


def _node(web: Web, name: str = "web", *, bearer: bool = False, secret: str = "",
          ca: Path | None = None) -> Node:
    return Node.web(name, web.pacs.url("token" if bearer else "basic"),
                    web_ca=(ca or web.site.ca.cert).read_text(), auth="bearer" if bearer else "basic",
                    user="" if bearer else USER, secret=secret or (TOKEN if bearer else PASSWORD))


@pytest.mark.parametrize(("url", "options", "why"), [
    ("ftp://pacs/dicom-web", {}, "not a DICOMweb base URL"),
    ("https://pacs/dicom-web?x=1", {}, "not a DICOMweb base URL"),
    ("http://pacs/dicom-web", {"auth": "bearer", "secret": "t"}, "only sent over HTTPS"),
    ("https://pacs/dicom-web", {"auth": "basic", "secret": "p"}, "HTTP basic \\(and a user\\)"),
    ("https://pacs/dicom-web", {"web_ca": "not a certificate"}, "no PEM certificate"),
])
def test_a_dicomweb_node_that_could_never_work_is_refused(url: str, options: dict[str, str],
                                                          why: str) -> None:
    with pytest.raises(UsageError, match=why):
        Node.web("web", url, **options)


@pytest.fixture
def web_env(env: VaultEnv, web: Web) -> VaultEnv:
    env.vault.nodes.add(env.login("admin"), _node(web))
    return env


def test_echo_answers_and_says_plainly_why_not(web_env: VaultEnv, web: Web, tmp_path: Path) -> None:
    env, admin, tech = web_env, web_env.login("admin"), web_env.login("tech")
    with pytest.raises(NotPermitted):
        env.vault.nodes.add(tech, _node(web, "mine"))
    env.vault.admin.set_policy(admin, "require_tls", "on")  # HTTPS is TLS; plain HTTP is refused
    with pytest.raises(UsageError, match="needs an https:// URL"):
        env.vault.nodes.add(admin, Node.web("plain", "http://pacs.example/dicom-web"))
    with pytest.raises(UsageError, match="needs its password or token"):
        env.vault.nodes.add(admin, Node.web("nosecret", "https://pacs.example/dicom-web", auth="bearer"))
    env.vault.nodes.add(admin, _node(web, "token", bearer=True))
    assert env.vault.nodes.echo(tech, "web").ok and env.vault.nodes.echo(tech, "token").ok
    env.vault.nodes.add(admin, _node(web, "wrong", secret="not the password"))
    env.vault.nodes.add(admin, _node(web, "badtoken", bearer=True, secret="not the token"))
    env.vault.nodes.add(admin, _node(web, "stranger", ca=Authority(tmp_path / "other", "Other CA").cert))
    env.vault.nodes.add(admin, replace(_node(web, "lost"), url=web.pacs.url().replace("dicom-web", "no")))
    for name, why in (("lost", "has nothing at that address \\(HTTP 404\\)"),
                      ("wrong", "refused the user name and password, or the token \\(HTTP 401\\)"),
                      ("badtoken", "refused the user name and password, or the token"),
                      ("stranger", "presented a certificate this workstation does not trust")):
        with pytest.raises(PeerError, match=why) as caught:
            env.vault.nodes.echo(tech, name)
        assert not caught.value.transient and PASSWORD not in str(caught.value)
    failed = env.vault._gate._audit.records(AuditQuery(event_type=EventType.NODE_ECHO))
    assert [e.detail["node"] for e in failed if "why" in e.detail] == ["stranger", "badtoken", "wrong",
                                                                       "lost"]


def test_qido_finds_studies_by_patient_date_modality_and_accession(web_env: VaultEnv, web: Web) -> None:
    rad = web_env.login("rad")
    (found,) = web_env.vault.pacs.query(rad, "web", patient_id="PID-WEB")
    assert (found.study_uid, found.patient_name, found.study_date, found.modalities, found.series,
            found.instances) == (web.ct_uid, "Web^Wendy", "20260315", "CT", 1, 3)
    assert [s.study_uid for s in web_env.vault.pacs.query(rad, "web", study_date="20260301-20260331")] == \
        [web.ct_uid]
    assert [s.study_uid for s in web_env.vault.pacs.query(rad, "web", accession=web.accession)] == \
        [web.ct_uid]
    (mr,) = web_env.vault.pacs.query(rad, "web", modality="MR")
    assert mr.study_uid in web.held and mr.modalities == "MR"
    assert web_env.vault.pacs.query(rad, "web", patient_id="NO-SUCH-ID") == []
    (event, *_) = web_env.vault._gate._audit.records(AuditQuery(event_type=EventType.QUERY_PACS))
    assert event.user == "rad" and event.detail["node"] == "web"


def test_wado_rs_brings_each_study_into_the_vault_as_the_pacs_holds_it(web_env: VaultEnv, web: Web) -> None:
    rad, steps = web_env.login("rad"), list[tuple[int, int | None]]()
    for study_uid, files in web.held.items():
        steps.clear()
        report = web_env.vault.pacs.retrieve(rad, "web", study_uid, lambda d, t: steps.append((d, t)))
        assert (report.received, report.imported, report.refused) == (len(files), len(files), [])
        assert steps[-1] == (len(files), None)
        for sop_uid, data in files.items():
            kept = pydicom.dcmread(DicomBytesIO(web_env.vault.reading.read_instance(rad, sop_uid)))
            sent = pydicom.dcmread(DicomBytesIO(data))
            assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
            assert kept == sent  # value for value, pixel data as compressed
    again = web_env.vault.pacs.retrieve(rad, "web", web.ct_uid)
    assert (again.imported, again.duplicates) == (0, 3)
    (event, *_) = web_env.vault._gate._audit.records(AuditQuery(event_type=EventType.RETRIEVE))
    assert event.user == "rad" and event.detail == {"node": "web", "received": 3, "refused": 0,
                                                    "failed_at_pacs": 0}
    assert web_env.vault.admin.verify(web_env.login("tech")).ok


def _held_at_pacs(web: Web, study_uid: str) -> dict[str, bytes]:
    """The instances Orthanc holds of one study, by SOP Instance UID."""
    rest = web.pacs.orthanc.rest
    found: dict[str, bytes] = {}
    for study in rest("/studies?expand"):
        if study["MainDicomTags"]["StudyInstanceUID"] == study_uid:
            for instance in rest(f"/studies/{study['ID']}/instances"):
                url = f"http://127.0.0.1:{web.pacs.orthanc.http_port}/instances/{instance['ID']}/file"
                with urllib.request.urlopen(url, timeout=10) as reply:
                    data = reply.read()
                found[str(pydicom.dcmread(DicomBytesIO(data)).SOPInstanceUID)] = data
    return found


def _imported(env: VaultEnv, patient: Patient) -> str:
    items = study_bytes(patient, slices=3, size=32)
    env.vault.intake.import_bytes(env.login("tech"), items)
    return str(pydicom.dcmread(DicomBytesIO(items[0][1])).StudyInstanceUID)


def test_stow_rs_sends_and_waits_out_an_outage(web_env: VaultEnv, web: Web) -> None:
    env, tech = web_env, web_env.login("tech")
    study = _imported(env, Patient("PID-STOW", "Stowed^Stella"))
    steps: list[tuple[int, int]] = []
    result = env.vault.outbox.send(tech, "web", study, lambda d, t: steps.append((d, t)))
    assert not result.queued and len(result.report.sent) == 3 and result.report.failed == {}
    assert steps[-1] == (3, 3)
    at_pacs = _held_at_pacs(web, study)
    assert sorted(at_pacs) == sorted(result.report.sent)
    for sop_uid, data in at_pacs.items():
        assert pydicom.dcmread(DicomBytesIO(data)) == \
            pydicom.dcmread(DicomBytesIO(env.vault.reading.read_instance(env.login("rad"), sop_uid)))

    later = _imported(env, Patient("PID-LATER", "Later^Lou"))
    web.pacs.stop_proxy()
    try:
        queued = env.vault.outbox.send(tech, "web", later)
        assert queued.queued and "connection refused" in (queued.error or "")
        assert env.vault.outbox.flush(tech) == 0  # still away: it keeps waiting
    finally:
        web.pacs.start_proxy()
    assert env.vault.outbox.flush(tech) == 1 and env.vault.outbox.waiting(tech) == []
    assert len(_held_at_pacs(web, later)) == 3


def test_audit_messages_name_the_url_as_network_access_point(web_env: VaultEnv, web: Web) -> None:
    env = web_env
    env.vault.pacs.query(env.login("rad"), "web", patient_id="PID-WEB")
    env.vault.pacs.retrieve(env.login("rad"), "web", web.ct_uid)
    env.vault.outbox.send(env.login("tech"), "web", web.ct_uid)
    messages = [message for _, message in env.vault._gate._audit.messages(30)]
    assert invalid(messages) == {}
    url, seen = web.pacs.url("basic"), set()
    for doc in map(etree.fromstring, messages):
        event_id = doc.find("EventIdentification/EventID").get("csd-code")
        peers = [p for p in doc.iter("ActiveParticipant") if p.get("NetworkAccessPointID") == url]
        if event_id in ("110112", "110104"):  # Query; DICOM Instances Transferred (twice: in and out)
            (peer,) = peers
            assert peer.get("NetworkAccessPointTypeCode") == "5" and peer.get("UserID") == url
            seen.add((event_id, doc.find("EventIdentification").get("EventActionCode")))
    assert seen == {("110112", "E"), ("110104", "C"), ("110104", "R")}


def test_cli_dicomweb_node(cli_users: CliUsers, web: Web) -> None:
    cli, url = cli_users.cli, web.pacs.url("basic")
    missing = cli("node", "add", "web", "--dicomweb", url, "--tls-ca", str(web.site.ca.cert), "--basic", USER)
    assert missing.returncode == 2 and "CUSTODIAN_NODE_SECRET" in missing.stderr
    added = cli.json("node", "add", "web", "--dicomweb", url, "--tls-ca", str(web.site.ca.cert),
                     "--basic", USER, extra_env={"CUSTODIAN_NODE_SECRET": PASSWORD})
    assert (added["url"], added["auth"], added["tls"]) == (url, "basic", True)
    assert PASSWORD not in json.dumps(cli.json("node", "list"))
    assert not [f for f in cli.home.rglob("*") if f.is_file() and PASSWORD.encode() in f.read_bytes()]
    cli_users.login("tech")
    assert cli("node", "add", "mine", "--dicomweb", url).returncode == 3
    echoed = cli.json("node", "echo", "web")
    assert echoed["node"] == "web" and echoed["ok"] is True
    assert [s["study_uid"] for s in cli.json("query", "web", "--patient", "PID-WEB")] == [web.ct_uid]
    retrieved = cli.json("retrieve", "web", web.ct_uid)
    assert (retrieved["received"], retrieved["imported"]) == (3, 3)


def test_through_the_service_the_secret_goes_in_and_never_comes_back(
        served: Path,  # noqa: F811  (the fixture imported above)
        env: VaultEnv, web: Web) -> None:
    remote, admin = _client(served, env, "admin")
    remote.nodes.add(admin, _node(web))
    (listed,) = remote.nodes.list(admin)
    assert (listed.url, listed.auth, listed.user, listed.secret) == (web.pacs.url(), "basic", USER, "")
    remote, tech = _client(served, env, "tech")
    assert remote.nodes.echo(tech, "web").ok  # the service holds the password and uses it


def test_a_presentation_state_and_key_images_go_by_stow_rs_and_come_back_by_wado_rs(
        web_env: VaultEnv, web: Web, tmp_path: Path) -> None:
    """Sent with their study to the DICOMweb PACS, retrieved into another workstation: the same state
    and the same key images, value for value."""
    env, rad, tech = web_env, web_env.login("rad"), web_env.login("tech")
    study = _imported(env, Patient("PID-PR-WEB", "State^Sam"))
    (series,) = [s.series_uid for s in env.vault.reading.series(rad, study)]
    first, _, third = (info.sop_uid for info in env.vault.reading.open_series(rad, series).instances)
    env.vault.reading.save_measurement(rad, Measurement(Kind.DISTANCE, first, 0, ((2.0, 3.0), (20.0, 25.0))))
    saved = env.vault.states.save_state(rad, series, Window(40, 400), 90, True)
    for uid in (first, third):
        env.vault.key_images.mark(rad, uid)
    kos = env.vault.key_images.send(rad, study, "web")
    assert (kos.sent, kos.images, kos.node) == (True, 2, "web")
    sent = env.vault.outbox.send(tech, "web", study).report
    assert len(sent.sent) == 5 and sent.failed == {}  # three images, the state and the document

    other = make_env(tmp_path / "other")
    try:
        other.add("rad", Role.RADIOLOGIST)
        other.vault.nodes.add(other.login("admin"), _node(web))
        there = other.login("rad")
        assert other.vault.pacs.retrieve(there, "web", study).imported == 5
        assert other.vault.states.states(there, series) == [saved]
        assert other.vault.states.state(there, series, saved.sop_uid) == \
            env.vault.states.state(rad, series, saved.sop_uid)
        (key_series,) = [s for s in other.vault.reading.series(there, study) if s.modality == "KO"]
        shown = other.vault.reading.open_series(there, key_series.series_uid)
        assert sorted(info.sop_uid for info in shown.instances) == sorted((first, third))
        for sop_uid in (saved.sop_uid, kos.sop_uid):
            assert pydicom.dcmread(DicomBytesIO(other.vault.reading.read_instance(there, sop_uid))) == \
                pydicom.dcmread(DicomBytesIO(env.vault.reading.read_instance(rad, sop_uid)))
    finally:
        other.vault.close()
