"""Custodian beside the peers that do the same job, in the same run: Orthanc (started here as the
tests start it) receiving over C-STORE and uploading through its REST API, and DCMTK's getscu
retrieving from Orthanc, beside a WADO-RS retrieve from Orthanc's DICOMweb plugin behind nginx.

Each side starts from fresh storage on every run (a new vault, a new Orthanc); the figure is the
median of the runs, its ratio the peer's time over ours (>= 1.0: we are faster).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom

from bench.figures import Figure

ORTHANC = "Orthanc 1.10 (Debian build, default storage: plain files + SQLite index)"


def available() -> bool:
    return all(shutil.which(tool) for tool in ("Orthanc", "storescu", "getscu"))


@contextlib.contextmanager
def orthanc(folder: Path, **known: tuple[str, int]) -> Iterator[object]:
    """A fresh Orthanc in ``folder`` accepting ``known`` modalities; removed afterwards."""
    from tests.peers.orthanc import Orthanc

    shutil.rmtree(folder, ignore_errors=True)
    pacs = Orthanc(folder, known={"modality": ("STORESCU", 104), "getscu": ("GETSCU", 104), **known})
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()
        shutil.rmtree(folder, ignore_errors=True)


def send_at_once(port: int, called: str, groups: list[list[Path]]) -> float:
    """Seconds for one DCMTK storescu per group, all started at once, to send everything."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    senders = [subprocess.Popen([shutil.which("storescu") or "storescu", "-aet", "STORESCU", "-aec", called,
                                 "127.0.0.1", str(port), *map(str, files)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env) for files in groups]
    failed = [s.communicate()[1][-300:] for s in senders if s.wait(600) != 0]
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"storescu failed: {failed[0]!r}")
    return elapsed


def receive_ours(home: Path, groups: list[list[Path]]) -> float:
    """Seconds for the storage SCP of a fresh vault in ``home``, run in this process as
    ``custodian scp`` runs it, to receive ``groups`` (one sender each, at once)."""
    from app.net.nodes import Node
    from bench.run import Workstation

    station = Workstation(home)
    station.vault.nodes.add(station.admin, Node("modality", "STORESCU", "127.0.0.1", 104))
    scp = station.vault.pacs.storage_scp(port=0, host="127.0.0.1")
    scp.start()
    try:
        return send_at_once(scp.port, "CUSTODIAN", groups)
    finally:
        scp.stop()
        station.vault.close()


def _receive_orthanc(folder: Path, groups: list[list[Path]]) -> float:
    from tests.peers.orthanc import AET

    with orthanc(folder) as pacs:
        return send_at_once(pacs.port, AET, groups)  # type: ignore[attr-defined]


def _medians(runs: int, ours: Callable[[int], float], peer: Callable[[int], float]) -> tuple[float, float]:
    """Median seconds of each side, the runs interleaved (ours, peer, ours...) so load drifts alike."""
    mine, theirs = [], []
    for i in range(runs):
        mine.append(ours(i))
        theirs.append(peer(i))
    return statistics.median(mine), statistics.median(theirs)


def _figure(label: str, ours: float, peer: str, peer_s: float, target: float | None) -> Figure:
    ratio = peer_s / ours
    return Figure(label, round(ours, 3), "s", peer, round(peer_s, 3), round(ratio, 2),
                  f">= {target}" if target else "informational", ratio >= target if target else None)


def bench_receive(work: Path, series: list[list[Path]], runs: int) -> list[Figure]:
    """C-STORE from DCMTK storescu: one sender with the whole CT, then four senders at once, each
    with a study of its own (as four modalities), into our SCP and into Orthanc's."""
    figures = []
    one = series[0]
    four = f"receive 4 studies of {len(series[1])} slices over C-STORE, 4 senders at once (aggregate)"
    alone = f"receive a {len(one)}-slice CT over C-STORE, 1 sender"
    for groups, label in (([one], alone), (series[1:], four)):
        def ours(i: int, g: list[list[Path]] = groups) -> float:
            home = work / "peer-rcv-home"
            shutil.rmtree(home, ignore_errors=True)  # see run.py's FRESH_MEMORY
            return receive_ours(home, g)

        ours_s, peer_s = _medians(runs, ours,
                                  lambda i, g=groups: _receive_orthanc(work / "peer-rcv-orthanc", g))
        figures.append(_figure(f"{label}, each answered once durable in the journal, indexed behind", ours_s,
                               f"{ORTHANC} receiving the same from storescu", peer_s, 1.0))
    shutil.rmtree(work / "peer-rcv-home", ignore_errors=True)
    plain_s = statistics.median(_receive_plain(work / f"peer-plain{i}", one) for i in range(runs))
    # informational: the most a receiver built on pynetdicom reaches, against the same Orthanc runs
    return [*figures, _figure(f"{alone} by a minimal pynetdicom SCP (plain files, no fsync, no index)",
                              plain_s, f"{ORTHANC} (its median above)", figures[0].peer_value, None)]


def _receive_plain(folder: Path, files: list[Path]) -> float:
    """The ceiling of any receiver built on pynetdicom: its minimal SCP, each data set to a file."""
    from bench.run import plain_pynetdicom_scp

    server, port = plain_pynetdicom_scp(folder)
    try:
        return send_at_once(port, "PLAINSCP", [files])
    finally:
        server.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(folder, ignore_errors=True)


def rest_upload(http_port: int, files: list[Path]) -> float:
    """Seconds to POST every file to Orthanc's /instances on one keep-alive HTTP connection."""
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    start = time.perf_counter()
    for path in files:
        connection.request("POST", "/instances", body=path.read_bytes(),
                           headers={"Content-Type": "application/dicom"})
        reply = connection.getresponse()
        answer = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"Orthanc refused an upload: {reply.status} {answer[:200]!r}")
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def _cli_env(home: Path, secret: str, password: str) -> dict[str, str]:
    """The environment of a technologist logged in to ``home`` from the command line."""
    from app.security import totp
    from bench.startup import custodian

    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}
    env["CUSTODIAN_PASSPHRASE"] = "bench passphrase"
    later = time.time() + totp.STEP  # the next step: a code is never taken twice
    who = {"CUSTODIAN_USER": "tech", "CUSTODIAN_PASSWORD": password,
           "CUSTODIAN_TOTP": totp.current_code(secret, at=later)}
    login = subprocess.run([*custodian(), "--home", str(home), "login"], capture_output=True, text=True,
                           env={**env, **who}, stdin=subprocess.DEVNULL)
    if login.returncode != 0:
        raise RuntimeError(f"custodian login failed: {login.stderr.strip()}")
    return env


def _import_ours(home: Path, folder: Path) -> float:
    """Seconds for ``custodian import FOLDER``, the whole process, into a fresh vault."""
    from bench.run import Workstation
    from bench.startup import custodian

    shutil.rmtree(home, ignore_errors=True)
    station = Workstation(home)
    station.vault.close()
    env = _cli_env(home, station.secrets["tech"], station.password)
    start = time.perf_counter()
    subprocess.run([*custodian(), "--home", str(home), "import", str(folder)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def _upload_orthanc(folder: Path, files: list[Path]) -> float:
    with orthanc(folder) as pacs:
        return rest_upload(pacs.http_port, files)  # type: ignore[attr-defined]


def bench_import(work: Path, ct: Path, runs: int) -> list[Figure]:
    files = sorted(ct.glob("*.dcm"))
    for f in files:  # the page cache warm for both sides alike
        f.read_bytes()
    ours_s, peer_s = _medians(runs, lambda i: _import_ours(work / "peer-import-home", ct),
                              lambda i: _upload_orthanc(work / "peer-import-orthanc", files))
    shutil.rmtree(work / "peer-import-home", ignore_errors=True)
    return [_figure(f"import a {len(files)}-slice CT (custodian import, whole process)", ours_s,
                    f"{ORTHANC}: REST upload, POST /instances on one keep-alive connection", peer_s, 1.5)]


def getscu(port: int, aec: str, study_uid: str, out: Path) -> float:
    """Seconds for DCMTK getscu to fetch a study into ``out`` as plain files (no fsync)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(["getscu", "-S", "-aet", "GETSCU", "-aec", aec, "-od", str(out),
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                    "127.0.0.1", str(port)], check=True, capture_output=True,
                   env={**os.environ, "TCP_NODELAY": "1"})
    return time.perf_counter() - start


def bench_wado(work: Path, ct: Path, runs: int) -> list[Figure]:
    """WADO-RS from Orthanc's DICOMweb plugin behind nginx (TLS, basic auth), as sites deploy it,
    into the vault, beside getscu fetching the same study from the same Orthanc by C-GET."""
    from app.net.nodes import Node
    from bench.run import Workstation
    from tests.peers.dicomweb import PASSWORD, USER, DicomWebPacs
    from tests.peers.dicomweb import available as web_available
    from tests.peers.orthanc import AET
    from tests.peers.pki import Site

    if not web_available():
        print("Orthanc's DICOMweb plugin or nginx not installed: no WADO-RS figure", file=sys.stderr)
        return []
    files = sorted(ct.glob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    site = Site(work / "wado-site", "localhost")
    pacs = DicomWebPacs(work / "wado-pacs", site)
    config = json.loads(pacs.orthanc.config.read_text())
    config["DicomModalities"] = {"getscu": ["GETSCU", "127.0.0.1", 104]}
    pacs.orthanc.config.write_text(json.dumps(config))
    pacs.start()
    try:
        rest_upload(pacs.orthanc.http_port, files)

        def ours(i: int) -> float:
            home = work / "wado-home"
            shutil.rmtree(home, ignore_errors=True)
            station = Workstation(home)
            station.vault.nodes.add(station.admin, Node.web("web", pacs.url("basic"),
                                                            web_ca=site.ca.cert.read_text(), auth="basic",
                                                            user=USER, secret=PASSWORD))
            start = time.perf_counter()
            report = station.vault.pacs.retrieve(station.rad, "web", study_uid)
            elapsed = time.perf_counter() - start
            station.vault.close()
            assert report.received == len(files), report
            return elapsed

        ours_s, peer_s = _medians(runs, ours, lambda i: getscu(pacs.orthanc.port, AET, study_uid,
                                                                 work / "wado-getscu"))
    finally:
        pacs.stop()
    shutil.rmtree(work / "wado-home", ignore_errors=True)
    return [_figure(f"retrieve a {len(files)}-slice CT by WADO-RS from Orthanc's DICOMweb plugin behind "
                    "nginx (TLS, basic auth) into the vault", ours_s,
                    "DCMTK getscu of the same study from the same Orthanc by C-GET, plain files (no fsync)",
                    peer_s, None)]


def bench_peers(work: Path, slices: int, runs: int) -> list[Figure]:
    """Receive, import and WADO-RS retrieve beside the peers (C-GET is in run.py's retrieve group)."""
    if not available():
        print("Orthanc or DCMTK not installed: the peer figures are skipped", file=sys.stderr)
        return []
    from bench.run import make_series

    one = make_series(work / "peer-ct", slices)
    four = [make_series(work / f"peer-ct{k}", max(slices // 4, 1)) for k in range(4)]
    return [*bench_receive(work, [one, *four], runs), *bench_import(work, work / "peer-ct", runs),
            *bench_wado(work, work / "peer-ct", runs)]
