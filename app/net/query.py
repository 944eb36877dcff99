"""Query/retrieve with the PACS: C-FIND at study level, C-GET straight into the vault.

C-GET brings the instances back on the same association, so retrieving needs no listening port
and no plaintext file: each instance arrives in memory and goes into the vault in batches, under
the same rules as an import. A retrieve reports what arrived, what was new, what was already here,
what the vault refused and what the PACS could not send.

C-GET must propose a storage context for every SOP class and transfer syntax it may be sent, and
an association holds at most 128 contexts; a PACS accepts one transfer syntax per context, so each
compressed syntax needs a context of its own for the PACS to send its data as it holds it rather
than decompressed (or not at all). The study's own SOP classes (SOP Classes in Study, from a C-FIND)
get every syntax; the common classes fill the room left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue

from app.net import commands
from app.net.association import PeerError, application_entity, associated, named_sop_class
from app.net.inbound import UNRECOGNISED, Message, Messages
from app.net.nodes import Node
from app.net.part10 import data_set, part10
from app.net.requestor import Proposal
from app.net.requestor import associated as get_associated
from app.net.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, STORAGE, UNCOMPRESSED, tallying
from app.store.limits import DEFAULT_LIMITS
from app.store.records import ImportReport

FIND_MODEL = str(named_sop_class("StudyRootQueryRetrieveInformationModelFind"))
MAX_ANSWER = 1 << 20  # bytes of one C-FIND match: far more than an identifier holds
GET_MODEL = str(named_sop_class("StudyRootQueryRetrieveInformationModelGet"))
StudyRootQueryRetrieveInformationModelMove = named_sop_class(
    "StudyRootQueryRetrieveInformationModelMove")

PENDING = (0xFF00, 0xFF01)
MAX_CONTEXTS = 128  # presentation contexts in one association (PS3.8 9.3.2.2: odd IDs 1-255)
# For each SOP class, in order of need: the uncompressed syntaxes together on one context (the PACS
# picks one, and can always decompress to it), then each compressed syntax on its own context, the
# ones archives hold most often first (the common classes may not have room for all).
GET_SYNTAXES: tuple[tuple[str, ...], ...] = (UNCOMPRESSED, *((ts,) for ts in (
    uid.JPEG2000Lossless, uid.JPEG2000, uid.JPEGLosslessSV1, uid.JPEGBaseline8Bit, uid.RLELossless,
    uid.JPEGLSLossless, uid.DeflatedExplicitVRLittleEndian, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless,
    uid.JPEGLossless, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K)))
# The image and document types a reading room retrieves, for a PACS that does not say which classes
# a study holds; C-GET asks for each as a role.
RETRIEVED_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1",  # CT, enhanced CT
    "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1",  # MR, enhanced MR
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",  # CR, digital X-ray
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1",  # mammography
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1",  # ultrasound, multi-frame US
    "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128",  # NM, PET
    "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.2",  # XA, RF
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.11",  # secondary capture, basic SR
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.104.1",  # comprehensive SR, PDF
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.66",  # presentation state, raw data
    "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.59",  # segmentation, key objects
)
BATCH = 32


@dataclass(frozen=True)
class RemoteStudy:
    """A study the PACS has; demographics the reader's role may not see are None (as locally)."""

    study_uid: str
    patient_id: str | None
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    study_date: str
    description: str
    modalities: str
    accession: str | None
    series: int | None
    instances: int | None


def _modalities(value: object) -> str:
    """CS, possibly multi-valued: one string either way, values joined with a backslash."""
    if value is None:
        return ""
    return "\\".join(map(str, value)) if isinstance(value, MultiValue | list | tuple) else str(value)


def _number(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def find_studies(node: Node, local_ae: str, *, patient_id: str = "", patient_name: str = "",
                 study_date: str = "", modality: str = "", accession: str = "") -> list[RemoteStudy]:
    """Study-level C-FIND; empty filters match everything (the PACS may cap the answer)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.PatientName = patient_name
    query.StudyDate = study_date
    query.ModalitiesInStudy = modality
    query.AccessionNumber = accession
    for keyword in ("StudyInstanceUID", "PatientBirthDate", "PatientSex", "StudyDescription",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"):
        setattr(query, keyword, "")
    with _finding(node, local_ae) as assoc:
        return [remote_study(answer) for answer in _answers(assoc, node, query)]


def remote_study(answer: Dataset) -> RemoteStudy:
    """A study-level match, from a C-FIND or a QIDO-RS answer."""
    return RemoteStudy(
        str(answer.get("StudyInstanceUID", "")), str(answer.get("PatientID", "")),
        str(answer.get("PatientName", "")), str(answer.get("PatientBirthDate", "")),
        str(answer.get("PatientSex", "")), str(answer.get("StudyDate", "")),
        str(answer.get("StudyDescription", "")), _modalities(answer.get("ModalitiesInStudy")),
        str(answer.get("AccessionNumber", "")), _number(answer.get("NumberOfStudyRelatedSeries")),
        _number(answer.get("NumberOfStudyRelatedInstances")))


@contextlib.contextmanager
def _finding(node: Node, local_ae: str) -> Iterator[Messages]:
    """An association for study-root C-FINDs."""
    proposals = [Proposal(FIND_MODEL, UNCOMPRESSED)]
    with get_associated(node, local_ae, proposals, max_data=MAX_ANSWER) as messages:
        yield messages


def _answers(messages: Messages, node: Node, query: Dataset) -> Iterator[Dataset]:
    """The matches of one C-FIND; a refusal or a broken answer is a plain PeerError."""
    ((context, (_, syntax)),) = messages.contexts.items()
    _ask(messages, context, commands.C_FIND_RQ, query)
    for message, on in messages:
        command = message.command
        if command.field != commands.C_FIND_RSP:
            if not command.field & commands.RESPONSE:
                messages.answer(command, on, UNRECOGNISED)
            continue
        status = command.number(commands.STATUS)
        if status in PENDING and message.data is not None:
            yield decoded(message.data, syntax)
        elif status == 0x0000:
            return
        elif status not in PENDING:
            raise PeerError(f"The PACS node '{node.name}' refused the query (status 0x{status or 0:04X}).")
    raise PeerError(f"The PACS node '{node.name}' stopped answering the query.")


def body_parts(node: Node, local_ae: str, study_uids: list[str]) -> dict[str, set[str]]:
    """The body parts examined in each study (series-level C-FIND, one association for all): what
    makes a prior relevant beside its modality."""
    found: dict[str, set[str]] = {}
    with _finding(node, local_ae) as assoc:
        for uid in study_uids:
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID = uid
            query.SeriesInstanceUID = ""
            query.BodyPartExamined = ""
            found[uid] = {str(answer.get("BodyPartExamined", "") or "").strip().upper()
                          for answer in _answers(assoc, node, query)} - {""}
    return found


@dataclass
class RetrieveReport:
    received: int = 0
    # None: a C-MOVE whose instances a storage SCP of another process (the GUI's) stored
    imported: int | None = 0
    duplicates: int | None = 0
    refused: list[str] = field(default_factory=list)  # reasons the vault gave
    failed_at_pacs: int = 0  # sub-operations the PACS reported as failed
    by_move: bool = False  # sent to our storage SCP, which counted what it stored

    def summary(self) -> str:
        counts = (f": {self.imported} new, {self.duplicates} already here" if self.imported is not None
                  else ", stored by the receiver already running on this workstation")
        refused = f", {len(self.refused)} refused by the vault" if self.refused else ""
        failed = f"; the PACS could not send {self.failed_at_pacs}" if self.failed_at_pacs else ""
        return f"Retrieved {self.received} image(s){counts}{refused}{failed}."


def study_classes(node: Node, local_ae: str, study_uid: str) -> list[str]:
    """The SOP classes the PACS says a study holds; [] when it does not say (or refuses to)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.SOPClassesInStudy = ""
    try:
        with _finding(node, local_ae) as assoc:
            try:
                answers = list(_answers(assoc, node, query))
            except PeerError:
                return []
    except PeerError as exc:
        if exc.transient:  # not there: the C-GET would not get through either
            raise
        return []  # it does not take C-FIND from us: the common classes will do
    found = [str(c) for answer in answers for c in _values(answer.get("SOPClassesInStudy"))]
    # Only classes the vault files (and takes on a C-GET's association).
    return [c for c in dict.fromkeys(found) if c in STORAGE]


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def storage_contexts(classes: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The storage contexts a C-GET proposes: the study's classes with every syntax first (nine fit:
    14 contexts each), then the common classes, syntax by syntax, in the room left."""
    common = [c for c in RETRIEVED_CLASSES if c not in classes]
    wanted = [(c, syntaxes) for group in (classes, common) for syntaxes in GET_SYNTAXES for c in group]
    return wanted[:MAX_CONTEXTS - 1]  # one is the C-GET's own


def get_study(node: Node, local_ae: str, study_uid: str,
              store: Callable[[list[tuple[str, bytes]]], ImportReport],
              progress: Callable[[int, int | None], None] | None = None, *,
              max_data: int = DEFAULT_LIMITS.file_bytes) -> RetrieveReport:
    """C-GET one study; instances go to ``store`` in batches as they arrive. One larger than
    ``max_data`` bytes (the site's one-file limit) is read and dropped, and refused."""
    proposals = [Proposal(GET_MODEL, UNCOMPRESSED), *(
        Proposal(sop_class, syntaxes, as_scp=True)
        for sop_class, syntaxes in storage_contexts(study_classes(node, local_ae, study_uid)))]
    report = RetrieveReport()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with _Batches(store, report) as batches, \
            get_associated(node, local_ae, proposals, max_data=max_data) as messages:
        context = next((c for c, (abstract, _) in messages.contexts.items() if abstract == GET_MODEL), None)
        if context is None:
            raise PeerError(f"The PACS node '{node.name}' does not offer C-GET.", transient=False)
        _ask(messages, context, commands.C_GET_RQ, query)
        for message, on in messages:
            command = message.command
            if command.field == commands.C_STORE_RQ:
                messages.answer(command, on, _arrived(node, message, batches, report))
            elif command.field == commands.C_GET_RSP:
                remaining = command.number(commands.REMAINING)
                if progress is not None:
                    progress(report.received, None if remaining is None else report.received + remaining)
                if (status := command.number(commands.STATUS)) not in PENDING:
                    report.failed_at_pacs = command.number(commands.FAILED) or 0
                    if status not in (0x0000, 0xB000):
                        raise PeerError(f"The PACS node '{node.name}' could not send the study "
                                        f"(status 0x{status or 0:04X}); {report.received} instance(s) "
                                        "arrived and were kept.")
                    return report
            elif not command.field & commands.RESPONSE:
                messages.answer(command, on, UNRECOGNISED)
    raise PeerError(f"The PACS node '{node.name}' stopped answering during the retrieve.")


def _arrived(node: Node, message: Message, batches: _Batches, report: RetrieveReport) -> int:
    """The status for one instance a C-GET brought: kept for the next batch, or refused."""
    abstract, syntax = message.context
    if message.data is None:
        return OUT_OF_RESOURCES
    try:
        batches.add(f"{node.name}#{report.received + 1}", part10(
            abstract, message.command.text(commands.AFFECTED_SOP_INSTANCE), syntax, message.data))
    except Exception:  # a malformed sub-operation is refused, never fatal
        return CANNOT_UNDERSTAND
    report.received += 1
    return 0x0000


def _ask(messages: Messages, context: int, field: int, query: Dataset) -> None:
    """Send a C-FIND or C-GET request with its identifier, on the context of its model."""
    model, syntax = messages.contexts[context]
    messages.send(context, commands.write({
        commands.COMMAND_FIELD: field, commands.AFFECTED_SOP_CLASS: model, commands.MESSAGE_ID: 1,
        commands.PRIORITY: 0, commands.DATA_SET_TYPE: 1}), command=True)
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax != uid.ExplicitVRBigEndian
    buffer.is_implicit_VR = syntax == uid.ImplicitVRLittleEndian
    write_dataset(buffer, query)
    messages.send(context, buffer.getvalue(), command=False)


def decoded(data: bytes, syntax: str) -> Dataset:
    """A query's answer, read from the transfer syntax of its context."""
    try:
        return data_set(data, syntax)
    except Exception as exc:  # (pydicom raises what it meets)
        raise PeerError("The PACS sent an answer that could not be read.", transient=False) from exc


class _Batches:
    """What a C-GET received, stored a batch at a time on a thread of its own while the PACS sends
    the next batch (it waited for each store before): at most one batch being stored, one filling.
    Leaving the context stores what is left, also when the retrieve failed, and waits for it. A batch
    that could not be stored (its instances were acknowledged already) refuses every later one and
    fails the retrieve when it ends, so the loss is never reported as a success."""

    def __init__(self, store: Callable[[list[tuple[str, bytes]]], ImportReport],
                 report: RetrieveReport) -> None:
        self._store = store
        self._report = report
        self._pending: list[tuple[str, bytes]] = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="c-get-store")
        self._storing: Future[ImportReport] | None = None
        self._failed: Exception | None = None

    def add(self, label: str, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self._pending.append((label, data))
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._wait()
        if self._pending:
            batch, self._pending = self._pending, []
            self._storing = self._thread.submit(self._store, batch)

    def _wait(self) -> None:
        storing, self._storing = self._storing, None
        if storing is not None:
            try:
                result, report = storing.result(), self._report
            except Exception as exc:  # (raised on the thread: kept for the end of the retrieve)
                self._failed = self._failed or exc
                return
            report.imported = (report.imported or 0) + result.imported
            report.duplicates = (report.duplicates or 0) + result.duplicates
            report.refused += [r.reason for r in result.rejected]

    def __enter__(self) -> _Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._flush()
            self._wait()
        finally:
            self._thread.shutdown()
        if self._failed is not None:
            raise self._failed


def move_study(node: Node, local_ae: str, study_uid: str,
               progress: Callable[[int, int | None], None] | None = None) -> RetrieveReport:
    """C-MOVE one study to this workstation's own storage SCP (which must be listening, and known
    to the PACS under our AE title); the SCP stores what arrives. Returns the PACS's counts, and
    what the SCP stored of them when it runs in this process."""
    ae = application_entity(local_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    report = RetrieveReport(by_move=True)
    with tallying(local_ae, node.ae_title) as (message_id, tally), associated(node, ae) as assoc:
        for status, _ in assoc.send_c_move(query, local_ae, StudyRootQueryRetrieveInformationModelMove,
                                           msg_id=message_id):
            if not status:
                raise PeerError(f"The PACS node '{node.name}' stopped answering during the retrieve.")
            completed = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0)
            remaining = getattr(status, "NumberOfRemainingSuboperations", None)
            if progress is not None:
                progress(completed, None if remaining is None else completed + int(remaining))
            if status.Status in PENDING:
                continue
            report.received = completed + int(getattr(status, "NumberOfWarningSuboperations", 0) or 0)
            report.failed_at_pacs = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
            if status.Status == 0xA801:
                raise PeerError(f"The PACS node '{node.name}' does not know where to send to "
                                f"'{local_ae}' (move destination unknown): it needs this workstation's "
                                "AE title, address and port.", transient=False)
            if status.Status not in (0x0000, 0xB000):
                raise PeerError(f"The PACS node '{node.name}' could not send the study "
                                f"(status 0x{status.Status:04X}).")
    if tally.arrived or not report.received:
        report.imported, report.duplicates, report.refused = tally.imported, tally.duplicates, tally.refused
    else:  # another process's storage SCP (the GUI's) stored them: its counts are not known here
        report.imported = report.duplicates = None
    return report
