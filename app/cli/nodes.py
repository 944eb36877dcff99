"""The central PACS: its nodes, query and retrieve, sending and the outbox that waits while a node
is down, the local cache of what it holds, and this workstation's storage SCP."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from app.cli.credentials import current_session, open_vault, secret
from app.cli.output import EXIT_OK, EXIT_PARTLY, Output, progress_bar, table
from app.cli.parsing import Command
from app.errors import UsageError
from app.net.nodes import Node
from app.security.tls import TlsIdentity


def _tls_identity(args: argparse.Namespace) -> TlsIdentity | None:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if not any(files):
        return None
    if not all(files):
        raise UsageError("TLS needs all three of --tls-ca, --tls-cert and --tls-key.")
    return TlsIdentity.from_files(*files)


def _web_node(args: argparse.Namespace) -> Node:
    """A DICOMweb node; its password or token from CUSTODIAN_NODE_SECRET, or a prompt."""
    if any((args.aet, args.host, args.port, args.tls_cert, args.tls_key, args.addresses, args.server_name,
            args.peer_name)):
        raise UsageError("A DICOMweb node takes --dicomweb URL, --tls-ca and --basic USER or --bearer; "
                         "the other options are for DIMSE nodes.")
    auth = "basic" if args.basic else "bearer" if args.bearer else ""
    given = secret("CUSTODIAN_NODE_SECRET", "Password: " if args.basic else "Token: ") if auth else ""
    if auth and not given:
        raise UsageError("Give the node's password or token in CUSTODIAN_NODE_SECRET (or at the prompt).")
    try:
        ca = args.tls_ca.read_text() if args.tls_ca else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Could not read the CA file: {exc}.") from None
    return Node.web(args.name, args.dicomweb, web_ca=ca, auth=auth, user=args.basic or "", secret=given or "")


def _shown(node: Node) -> dict[str, object]:
    return {"node": node.name, "aet": node.ae_title, "host": node.host, "port": node.port,
            "tls": node.secure, "from": list(node.senders), "peer_name": node.certificate_name,
            **({"url": node.url, "auth": node.auth or None} if node.url else {})}


def cmd_node_add(args: argparse.Namespace, out: Output) -> int:
    if args.dicomweb:
        node = _web_node(args)
    elif args.basic or args.bearer:
        raise UsageError("--basic and --bearer are for a DICOMweb node (--dicomweb URL).")
    elif not (args.aet and args.host and args.port):
        raise UsageError("A PACS node needs --aet, --host and --port (a DICOMweb node: --dicomweb URL).")
    else:
        node = Node(args.name, args.aet, args.host, args.port, _tls_identity(args), args.server_name or "",
                    tuple(args.addresses or ()), args.peer_name or "")
    with open_vault(args) as vault:
        vault.nodes.add(current_session(vault), node)
    out.emit(_shown(node), f"PACS node '{node.name}' set: {node.describe()}.")
    return EXIT_OK


def cmd_node_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        nodes = vault.nodes.list(current_session(vault))
    out.emit([_shown(n) for n in nodes],
             lambda: table([[n.name, n.ae_title or "DICOMweb", n.url or f"{n.host}:{n.port}",
                             "" if n.url else ", ".join(n.senders),
                             "HTTPS" if n.url and n.secure else f"yes, as {n.certificate_name}" if n.tls
                             else "no"] for n in nodes],
                           ["Node", "AE title", "Address", "Sends from", "TLS"])
             if nodes else "No PACS nodes are set ('custodian node add' adds one).")
    return EXIT_OK


def cmd_node_remove(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.nodes.remove(current_session(vault), args.name)
    out.emit({"node": args.name, "removed": True}, f"PACS node '{args.name}' removed.")
    return EXIT_OK


def cmd_node_echo(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.nodes.echo(current_session(vault), args.name)
    out.emit({"node": result.node, "ok": result.ok, "ms": result.ms},
             f"PACS node '{result.node}' answered in {result.ms:.0f} ms.")
    return EXIT_OK


def cmd_query(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        found = vault.pacs.query(current_session(vault), args.node, patient_id=args.patient or "",
                            patient_name=args.name or "", study_date=args.date or "",
                            modality=args.modality or "", accession=args.accession or "")
    out.emit([asdict(s) for s in found], lambda: table(
        [[s.study_date, s.patient_id or "—", s.patient_name or "—", s.modalities, s.description,
          str(s.instances if s.instances is not None else "?"), s.study_uid] for s in found],
        ["Date", "Patient ID", "Name", "Modalities", "Description", "Images", "Study UID"])
        if found else "No studies match.")
    return EXIT_OK


def cmd_retrieve(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, progress_bar("Retrieving") as progress:
        report = vault.pacs.retrieve(current_session(vault), args.node, args.study_uid,
                                (lambda done, total: progress(done, total or 0)) if progress else None,
                                move=args.move)
    out.emit(asdict(report), report.summary())
    return EXIT_PARTLY if report.refused or report.failed_at_pacs else EXIT_OK


def cmd_send(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, progress_bar("Sending") as progress:
        result = vault.outbox.send(current_session(vault), args.node, args.study_uid, progress)
    report = result.report
    data = {"node": args.node, "study_uid": args.study_uid, "sent": len(report.sent),
            "warnings": report.warnings, "failed": [{"sop_instance_uid": k, "reason": v}
                                                    for k, v in report.failed.items()],
            "queued": result.queued}
    if result.queued:
        out.emit(data, f"The PACS node '{args.node}' cannot be reached now ({result.error}). The send "
                       "waits in the outbox and goes out when it is back.")
        return EXIT_PARTLY
    out.emit(data, f"Sent {len(report.sent)} instance(s) to '{args.node}'"
             + (f"; {len(report.failed)} refused: " + "; ".join(sorted(set(report.failed.values())))
                if report.failed else "") + ".")
    return EXIT_PARTLY if report.failed else EXIT_OK


def cmd_outbox(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        waiting = vault.outbox.waiting(session)
        sent = vault.outbox.flush(session) if args.flush else 0
        waiting = vault.outbox.waiting(session) if args.flush else waiting
    out.emit({"sent": sent, "waiting": waiting}, lambda: (f"{sent} waiting send(s) went out.\n" if args.flush
                                                          else "") + (table(
        [[str(w["id"]), str(w["node"]), str(w["study_uid"]), str(w["requested_by"]), str(w["attempts"]),
          str(w["last_error"])] for w in waiting], ["#", "Node", "Study UID", "By", "Tries", "Last error"])
        if waiting else "Nothing is waiting to be sent."))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        session = current_session(vault)
        if args.pin or args.unpin:
            vault.cache.pin_study(session, args.pin or args.unpin, pinned=bool(args.pin))
        evicted = vault.cache.evict_to_budget(session) if args.evict else []
        usage = vault.cache.usage(session)
    budget = f"budget {usage['budget_mb']} MB" if usage["budget_mb"] else "no budget set"
    out.emit({**usage, "evicted": evicted},
             f"Cache: {usage['studies']} studies, {int(usage['bytes']) / 1e6:.1f} MB ({budget}); "
             f"{usage['pinned']} pinned" + (f"; {len(evicted)} evicted." if evicted else "."))
    return EXIT_OK


def cmd_scp_tls(args: argparse.Namespace, out: Output) -> int:
    identity = None if args.off else _tls_identity(args)
    if identity is None and not args.off:
        raise UsageError("Give --tls-ca, --tls-cert and --tls-key, or --off.")
    with open_vault(args) as vault:
        vault.nodes.set_scp_tls(current_session(vault), identity)
    out.emit({"tls": identity is not None, "certificate": identity.subject() if identity else None},
             f"The storage SCP now requires TLS as {identity.subject()}; senders need a certificate from "
             "the given CA." if identity else "The storage SCP now accepts plain connections.")
    return EXIT_OK


def cmd_scp(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        scp = vault.pacs.storage_scp(port=args.port, host=args.host)
        scp.start()
        out.note(f"Storage SCP listening as {vault.policy.ae_title} on {scp.host} port {scp.port}; "
                 "Ctrl+C stops it.")
        for notice in scp.notices(vault.policy.require_tls):
            out.note(notice)
        try:
            while True:
                time.sleep(3600)
        finally:
            scp.stop()



# ---------------------------------------------------------------------------- parsers
def _node_parser(command: Command) -> None:
    node = command.group("node_command")
    p = node.add("add", cmd_node_add, "add or change a PACS node (admin)")
    p.add_argument("name")
    p.add_argument("--aet", help="the node's AE title")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--dicomweb", metavar="URL",
                   help="a DICOMweb node instead: its base URL (QIDO-RS, WADO-RS, STOW-RS)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--basic", metavar="USER", help="DICOMweb: HTTP basic authentication as USER "
                                                      "(the password from CUSTODIAN_NODE_SECRET or a prompt)")
    auth.add_argument("--bearer", action="store_true",
                      help="DICOMweb: a bearer token (from CUSTODIAN_NODE_SECRET or a prompt)")
    p.add_argument("--tls-ca", type=Path, help="PEM CA file the node's certificate must chain to")
    p.add_argument("--tls-cert", type=Path, help="this workstation's PEM certificate")
    p.add_argument("--tls-key", type=Path, help="this workstation's PEM private key")
    p.add_argument("--server-name", help="the name in the node's certificate, if not HOST")
    p.add_argument("--from", dest="addresses", action="append", metavar="ADDRESS",
                   help="an address (or host name) the node sends from, if not HOST's; repeat for several")
    p.add_argument("--peer-name", metavar="NAME",
                   help="the name (or subject) its certificate must carry when it sends to us over TLS, "
                        "if not the server name or HOST")
    node.add("list", cmd_node_list, "list the PACS nodes")
    p = node.add("remove", cmd_node_remove, "remove a PACS node (admin)")
    p.add_argument("name")
    p = node.add("echo", cmd_node_echo, "C-ECHO a PACS node (a DICOMweb node: an authenticated search)")
    p.add_argument("name")


def _query_parser(command: Command) -> None:
    p = command.runs(cmd_query)
    p.add_argument("node")
    p.add_argument("--patient", metavar="ID", help="Patient ID (wildcards * and ? allowed)")
    p.add_argument("--name", help="patient name, DICOM style: FAMILY^GIVEN, wildcards allowed")
    p.add_argument("--date", help="study date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    p.add_argument("--modality")
    p.add_argument("--accession")


def _retrieve_parser(command: Command) -> None:
    p = command.runs(cmd_retrieve)
    p.add_argument("node")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--move", action="store_true",
                   help="C-MOVE to this workstation's storage SCP instead (the PACS must know it)")


def _send_parser(command: Command) -> None:
    p = command.runs(cmd_send)
    p.add_argument("node")
    p.add_argument("study_uid", metavar="STUDY_UID")


def _outbox_parser(command: Command) -> None:
    p = command.runs(cmd_outbox)
    p.add_argument("--flush", action="store_true", help="try them now")


def _cache_parser(command: Command) -> None:
    p = command.runs(cmd_cache)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--pin", metavar="STUDY_UID", help="keep this study whatever the budget")
    group.add_argument("--unpin", metavar="STUDY_UID")
    p.add_argument("--evict", action="store_true",
                   help="drop least recently used studies the PACS holds until the budget is met")


def _scp_tls_parser(command: Command) -> None:
    p = command.runs(cmd_scp_tls)
    p.add_argument("--tls-ca", type=Path, help="PEM CA file senders' certificates must chain to")
    p.add_argument("--tls-cert", type=Path, help="the SCP's PEM certificate")
    p.add_argument("--tls-key", type=Path, help="the SCP's PEM private key")
    p.add_argument("--off", action="store_true", help="plain connections again")


def _scp_parser(command: Command) -> None:
    p = command.runs(cmd_scp)
    p.add_argument("--port", type=int, help="instead of the site policy's scp_port")
    p.add_argument("--host", help="the IP address to listen on, instead of the site policy's scp_address "
                                  "(0.0.0.0: every interface)")


PARSERS: dict[str, Callable[[Command], object]] = {
    "node": _node_parser,
    "query": _query_parser,
    "retrieve": _retrieve_parser,
    "send": _send_parser,
    "outbox": _outbox_parser,
    "cache": _cache_parser,
    "scp-tls": _scp_tls_parser,
    "scp": _scp_parser,
}
