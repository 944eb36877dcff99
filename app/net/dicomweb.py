"""DICOMweb nodes (PS3.18): QIDO-RS search, WADO-RS retrieve and STOW-RS store over HTTPS, the
node's certificate verified against the site's CA, with HTTP basic or bearer-token authentication.

httpx carries the requests. A WADO-RS answer is split into its instances by python-multipart's
streaming parser as it arrives; each instance stays in memory until it goes into the vault in a
batch, as a C-GET's do, never into a plaintext file. Instances are asked for as the PACS holds
them (``transfer-syntax=*``), so compressed ones stay compressed. What goes wrong is said as for
DIMSE, with the same :class:`PeerError` and its ``transient``: an absent node is worth waiting for
(the outbox does), a refusal is not.

The functions at the end take either kind of node, so the vault's services ask one place. httpx is
imported only when a DICOMweb node is asked (it costs the CLI's start a tenth of a second).
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from python_multipart.multipart import MultipartParser, parse_options_header

from app.net import association, query, send
from app.net.association import EchoResult, PeerError, TlsRequired
from app.net.nodes import Node
from app.net.query import BATCH, RemoteStudy, RetrieveReport, remote_study
from app.net.send import Outgoing, SendReport
from app.security.tls import TLS12_CIPHERS
from app.store.limits import DEFAULT_LIMITS
from app.store.records import ImportReport

if TYPE_CHECKING:
    import httpx

Store = Callable[[list[tuple[str, bytes]]], ImportReport]
TIMEOUT, CONNECT_TIMEOUT = 60.0, 10.0  # seconds: for each read or write, for a connection
DICOM_JSON = "application/dicom+json"
INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STUDY_FIELDS = ("PatientBirthDate", "PatientSex", "StudyDescription", "AccessionNumber", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
ECHO_UID = "2.25.0"  # a study no PACS holds: the echo's search carries no patient's data either way
STOW_BATCH = 16  # instances per STOW-RS request: what a broken-off send has to repeat at most
STOW_FAILED = 409  # Conflict: none stored, the answer says why for each (PS3.18 10.5.3)


def _tls(node: Node) -> ssl.SSLContext:
    """The node's certificate must chain to its CA (the site's) and name its host."""
    ctx = ssl.create_default_context(cadata=node.web_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx


def _refused(node: Node, response: httpx.Response) -> PeerError:
    code = response.status_code
    why = {401: "it refused the user name and password, or the token (HTTP 401)",
           403: "it does not allow this account to do that (HTTP 403)",
           404: "it has nothing at that address (HTTP 404): a wrong URL, or a study it does not hold"
           }.get(code)
    if why is None:
        why = (f"the PACS behind it is not answering (HTTP {code})" if code in (502, 503, 504)
               else f"it answered HTTP {code}")
    return PeerError(f"The DICOMweb node '{node.name}' ({node.url}) refused: {why}.",
                     transient=code in (408, 429) or code >= 500)


def _unreachable(node: Node, exc: httpx.RequestError) -> PeerError:
    import httpx

    text = str(exc)
    transient = True
    if isinstance(exc, httpx.TimeoutException):
        why = "it did not answer in time"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:")[-1].split("(")[0].strip()
        why, transient = f"it presented a certificate this workstation does not trust ({detail})", False
    elif "refused" in text.lower():
        why = "nothing is listening there (connection refused)"
    elif isinstance(exc, httpx.ConnectError) and ("SSL" in text or "TLS" in text):
        why, transient = "the secure connection failed (does it speak HTTPS there?)", False
    elif isinstance(exc, httpx.ConnectError):
        why = "could not connect (is the host name right, and the network up?)"
    else:
        why = "the connection broke off"
    return PeerError(f"Could not reach the DICOMweb node '{node.name}' ({node.url}): {why}.",
                     transient=transient)


@contextlib.contextmanager
def _asked(node: Node, method: str, path: str, *, ok: tuple[int, ...] = (),
           **request: Any) -> Iterator[httpx.Response]:
    """The streamed answer to one request (a success, or a status in ``ok``), or a PeerError
    saying plainly why not. A plain node the site requires TLS with is refused before anything
    leaves."""
    import httpx

    if node.tls_required and not node.secure:
        raise TlsRequired(node.name)
    headers = {"Authorization": f"Bearer {node.secret}"} if node.auth == "bearer" else {}
    auth = httpx.BasicAuth(node.user, node.secret) if node.auth == "basic" else None
    try:
        timeout = httpx.Timeout(TIMEOUT, connect=CONNECT_TIMEOUT)
        with httpx.Client(base_url=node.url + "/", verify=_tls(node), auth=auth, headers=headers,
                          timeout=timeout) as client, client.stream(method, path, **request) as response:
            # (a redirect is not followed: the credentials would go with it, wherever it points)
            if (response.is_error or response.is_redirect) and response.status_code not in ok:
                raise _refused(node, response)
            yield response
    except httpx.RequestError as exc:
        raise _unreachable(node, exc) from None


def _json(node: Node, response: httpx.Response) -> list[Dataset]:
    """A DICOM JSON answer (PS3.18 F.2) as datasets; none for an empty answer (204)."""
    body = response.read()
    if not body.strip():
        return []
    try:
        answer = response.json()
        items = answer if isinstance(answer, list) else [answer]
        return [Dataset.from_json(item) for item in items]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PeerError(f"The DICOMweb node '{node.name}' answered with something that is not DICOM JSON.",
                        transient=False) from None


def echo(node: Node) -> EchoResult:
    """An authenticated QIDO-RS search, DICOMweb's C-ECHO: is the node there, does it take our
    credentials, and how long a round trip takes."""
    started = time.perf_counter()
    with _asked(node, "GET", "studies", params={"StudyInstanceUID": ECHO_UID, "limit": "1"},
                headers={"Accept": DICOM_JSON}) as response:
        _json(node, response)
    return EchoResult(node.name, True, round((time.perf_counter() - started) * 1000, 1))


def find_studies(node: Node, *, patient_id: str = "", patient_name: str = "", study_date: str = "",
                 modality: str = "", accession: str = "") -> list[RemoteStudy]:
    """QIDO-RS at study level, with the C-FIND's filters and answers."""
    params = [(key, value) for key, value in (
        ("PatientID", patient_id), ("PatientName", patient_name), ("StudyDate", study_date),
        ("ModalitiesInStudy", modality), ("AccessionNumber", accession)) if value]
    params += [("includefield", name) for name in STUDY_FIELDS]
    with _asked(node, "GET", "studies", params=params, headers={"Accept": DICOM_JSON}) as response:
        return [remote_study(answer) for answer in _json(node, response)]


class _Arrivals:
    """Instances as they arrive, into the vault in batches; the report tallies what it said."""

    def __init__(self, store: Store, label: str,
                 progress: Callable[[int, int | None], None] | None) -> None:
        self.report = RetrieveReport()
        self._store, self._label, self._progress = store, label, progress
        self._pending: list[tuple[str, bytes]] = []
        self._part = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self._part.extend(data[start:end])

    def part_end(self) -> None:
        self.report.received += 1
        self._pending.append((f"{self._label}#{self.report.received}", bytes(self._part)))
        self._part.clear()
        if len(self._pending) >= BATCH:
            self.flush()
        if self._progress is not None:
            self._progress(self.report.received, None)

    def flush(self) -> None:
        if not self._pending:
            return
        result = self._store(self._pending)
        self._pending = []
        report = self.report
        report.imported = (report.imported or 0) + result.imported
        report.duplicates = (report.duplicates or 0) + result.duplicates
        report.refused += [r.reason for r in result.rejected]


def get_study(node: Node, study_uid: str, store: Store,
              progress: Callable[[int, int | None], None] | None = None) -> RetrieveReport:
    """WADO-RS one study; its instances go to ``store`` in batches as they arrive. What arrived
    before the answer broke off is kept."""
    arrivals = _Arrivals(store, node.name, progress)
    try:
        with _asked(node, "GET", f"studies/{study_uid}", headers={"Accept": INSTANCES}) as response:
            kind, options = parse_options_header(response.headers.get("content-type", ""))
            if kind != b"multipart/related" or not options.get(b"boundary"):
                raise PeerError(f"The DICOMweb node '{node.name}' answered the retrieve with something "
                                "other than DICOM instances.", transient=False)
            parser = MultipartParser(options[b"boundary"], {"on_part_data": arrivals.part_data,
                                                            "on_part_end": arrivals.part_end})
            for chunk in response.iter_bytes():
                parser.write(chunk)
            parser.finalize()
    finally:
        arrivals.flush()
    return arrivals.report


def _body(items: Sequence[Outgoing], boundary: bytes) -> Iterable[bytes]:
    """A STOW-RS request body, one instance read from the vault at a time (PS3.18 8.6.1.2)."""
    for item in items:
        yield b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
        yield item.read()
        yield b"\r\n"
    yield b"--" + boundary + b"--\r\n"


def store_instances(node: Node, instances: Sequence[Outgoing], report: SendReport,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """STOW-RS each of ``instances``, in batches; adds to ``report`` as it goes (as a C-STORE
    send does), so a retry knows the rest."""
    total = len(instances)
    for start in range(0, total, STOW_BATCH):
        batch = instances[start:start + STOW_BATCH]
        boundary = secrets.token_hex(16).encode()
        with _asked(node, "POST", "studies", ok=(STOW_FAILED,), content=_body(batch, boundary), headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}',
                "Accept": DICOM_JSON}) as response:
            answers = _json(node, response)
        _tally(batch, answers[0] if answers else Dataset(), report)
        if progress is not None:
            progress(start + len(batch), total)


def _tally(batch: Sequence[Outgoing], answer: Dataset, report: SendReport) -> None:
    """What the node says it stored (with or without a warning) and what it did not, and why."""
    stored = {str(item.get("ReferencedSOPInstanceUID", "")): "WarningReason" in item
              for item in answer.get("ReferencedSOPSequence", [])}
    failed = {str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0) or 0)
              for item in answer.get("FailedSOPSequence", [])}
    for item in batch:
        if item.sop_uid in stored:
            report.sent.append(item.sop_uid)
            report.warnings += stored[item.sop_uid]
        elif item.sop_uid in failed:
            report.failed[item.sop_uid] = f"status 0x{failed[item.sop_uid]:04X}"
        else:
            report.failed[item.sop_uid] = "the node did not say it stored it"



# ---------------------------------------------------------------------------- either kind of node
def echo_node(node: Node, local_ae: str) -> EchoResult:
    """C-ECHO a DIMSE node; the authenticated search for a DICOMweb one."""
    return echo(node) if node.url else association.echo(node, local_ae)


def find_at(node: Node, local_ae: str, **filters: str) -> list[RemoteStudy]:
    """Study-level C-FIND, or QIDO-RS."""
    return find_studies(node, **filters) if node.url else query.find_studies(node, local_ae, **filters)


def retrieve_from(node: Node, local_ae: str, study_uid: str, store: Store,
                  progress: Callable[[int, int | None], None] | None = None, *,
                  max_data: int = DEFAULT_LIMITS.file_bytes) -> RetrieveReport:
    """C-GET, or WADO-RS: either way the instances go to ``store`` from memory (``max_data``: the
    most a C-GET holds of one instance; the store applies the site's limits to both)."""
    if node.url:
        return get_study(node, study_uid, store, progress)
    return query.get_study(node, local_ae, study_uid, store, progress, max_data=max_data)


def send_to(node: Node, local_ae: str, instances: Sequence[Outgoing], report: SendReport,
            progress: Callable[[int, int], None] | None = None) -> None:
    """C-STORE, or STOW-RS, with the same report."""
    if node.url:
        store_instances(node, instances, report, progress)
    else:
        send.send_instances(node, local_ae, instances, report, progress)
