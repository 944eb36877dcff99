"""Sending instances to a PACS node (C-STORE as SCU), with a status checked for every instance.

Instances are read from the vault one at a time (decrypted in memory only) and sent in their
stored transfer syntax; an uncompressed one may also go as Explicit or Implicit VR Little Endian
if the node prefers. A broken association raises a PeerError after reporting what was already
sent, so the caller can retry just the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import uid_to_sop_class

from app.net.association import PeerError, application_entity, associated
from app.net.nodes import Node

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
WARNINGS = (0xB000, 0xB006, 0xB007)  # stored, with coercion or elements discarded


@dataclass(frozen=True)
class Outgoing:
    sop_uid: str
    sop_class: str
    transfer_syntax: str
    read: Callable[[], bytes]


@dataclass
class SendReport:
    sent: list[str] = field(default_factory=list)  # SOP Instance UIDs the node stored
    warnings: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> why


def send_instances(node: Node, local_ae: str, instances: Sequence[Outgoing], report: SendReport,
                   progress: Callable[[int, int], None] | None = None) -> None:
    """C-STORE each of ``instances``; adds to ``report`` as it goes, so a retry knows the rest."""
    ae = application_entity(local_ae)
    pairs = sorted({(i.sop_class, i.transfer_syntax) for i in instances})
    if len({c for c, _ in pairs}) > MAX_CONTEXTS:
        raise PeerError("The study holds more kinds of objects than one association can carry.")
    for sop_class, syntax in pairs:
        offered = [syntax, *[s for s in UNCOMPRESSED if s != syntax]] if syntax in UNCOMPRESSED else [syntax]
        ae.add_requested_context(uid_to_sop_class(sop_class), offered)
    total = len(instances)
    with associated(node, ae) as assoc:
        for done, item in enumerate(instances, 1):
            dataset = dcmread(DicomBytesIO(item.read()))
            try:
                status = assoc.send_c_store(dataset)
            except ValueError:  # no accepted presentation context for this class and encoding
                report.failed[item.sop_uid] = "the node does not accept this kind of object in its encoding"
                continue
            if not status:  # no answer: the association broke off
                raise PeerError(f"The PACS node '{node.name}' stopped answering after "
                                f"{len(report.sent)} of {total} instance(s).")
            code = int(status.Status)
            if code == 0x0000 or code in WARNINGS:
                report.sent.append(item.sop_uid)
                report.warnings += code in WARNINGS
            else:
                comment = str(status.get("ErrorComment", "")).strip()
                report.failed[item.sop_uid] = f"status 0x{code:04X}" + (f": {comment}" if comment else "")
            if progress is not None:
                progress(done, total)
