"""The studies in the vault: bringing them in (files, folders, outside media), listing them,
checking them, and destroying one for good (crypto-shredding)."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from pathlib import Path

from app.cli.credentials import current_session, interactive, open_vault
from app.cli.output import EXIT_FAILED, EXIT_OK, EXIT_PARTLY, Output, progress_bar, table
from app.cli.parsing import Command
from app.errors import UsageError
from app.store.records import ImportReport


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, progress_bar("Importing") as update:
        report = vault.intake.import_paths(current_session(vault), [Path(p) for p in args.paths], update)
    return _import_result(report, out)


def _import_result(report: ImportReport, out: Output) -> int:
    def text() -> str:
        lines = [f"Imported {report.imported} instance(s) into {len(report.studies)} study(ies); "
                 f"{report.duplicates} already cached; {len(report.rejected)} rejected."]
        lines += [f"  rejected {r.path}: {r.reason}" for r in report.rejected[:50]]
        if len(report.rejected) > 50:
            lines.append(f"  … and {len(report.rejected) - 50} more (see --json)")
        lines += [f"  warning: {w}" for w in report.warnings]
        return "\n".join(lines)
    out.emit(report.as_dict(), text)
    if report.rejected:
        return EXIT_PARTLY if report.imported or report.duplicates else EXIT_FAILED
    return EXIT_OK


def cmd_import_media(args: argparse.Namespace, out: Output) -> int:
    from app.media.outside import Reconcile

    path = Path(args.path)
    passphrase = os.environ.get("CUSTODIAN_MEDIA_PASSPHRASE") or None
    if passphrase is None and path.suffix.lower() in (".zip", ".iso") and interactive():
        passphrase = getpass.getpass("Media passphrase (Enter if it has none): ") or None
    with open_vault(args) as vault:
        session = current_session(vault)
        if args.preview:
            found = vault.intake.survey_media(session, path, passphrase)
            rows = [[s.patient_name, s.patient_id + (f" ({s.issuer})" if s.issuer else ""), s.study_date,
                     ",".join(sorted(s.modalities)), s.description, str(s.instances)] for s in found.studies]
            out.emit({"studies": [s.as_json() for s in found.studies], "other_files": found.unreadable},
                     lambda: table(rows, ["Patient", "ID", "Date", "Mod", "Description", "Img"])
                     if rows else "No DICOM studies found on this media.")
            return EXIT_OK
        if not (args.local_id or args.outside_issuer):
            raise UsageError("Say who the patient is here: --local-id ID (the same patient is known under "
                             "this ID) or --outside-issuer NAME (keep the outside ID, marked as theirs). "
                             "Use --preview to see the media first.")
        reconcile = Reconcile(args.local_id or "", args.outside_issuer or "")
        with progress_bar("Importing") as update:
            report = vault.intake.import_media(session, path, passphrase, reconcile, update)
    return _import_result(report, out)


def cmd_studies(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        studies = vault.reading.studies(current_session(vault), args.patient)
    hidden = "—"  # a field this role may not see, or a restricted patient
    rows = [[("! " if s.identity_conflict else "") + (s.patient_name or hidden),
             hidden if s.patient_id is None else s.patient_id or "(none)", s.study_date,
             ",".join(s.modalities), s.description, str(s.series), str(s.instances), s.study_uid]
            for s in studies]
    conflicts = any(s.identity_conflict for s in studies)
    out.emit([s.as_dict() for s in studies], lambda: table(
        rows, ["Patient", "ID", "Date", "Mod", "Description", "Ser", "Img", "Study UID"])
        + ("\n! another patient record has this Patient ID with a different name or birth date: "
           "check, then 'custodian patient reconcile' if they are one person." if conflicts else "")
        if rows else "No studies in the cache.")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault, progress_bar("Verifying") as update:
        report = vault.admin.verify(current_session(vault), update)

    def text() -> str:
        lines = [f"Checked {report.instances} instance(s): {report.ok} intact, "
                 f"{len(report.damaged)} problem(s)."]
        lines += [f"  {d.sop_instance_uid or d.study_uid}: {d.reason}" for d in report.damaged]
        return "\n".join(lines)
    out.emit(report.as_dict(), text)
    return 4 if report.damaged else EXIT_OK


def cmd_shred(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        count = vault.admin.shred(current_session(vault), args.study_uid, args.reason)
    out.emit({"study_uid": args.study_uid, "instances": count},
             f"Study shredded: its key is destroyed and {count} instance(s) removed.")
    return EXIT_OK



# ---------------------------------------------------------------------------- parsers
def _import_parser(command: Command) -> None:
    p = command.runs(cmd_import)
    p.add_argument("paths", nargs="+", metavar="PATH")


def _import_media_parser(command: Command) -> None:
    p = command.runs(cmd_import_media)
    p.add_argument("path", metavar="PATH", help="a folder or mounted media, a DICOMDIR, an .iso or a .zip")
    p.add_argument("--preview", action="store_true", help="list the studies on it and stop")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--local-id", metavar="ID", help="the patient's ID here (the outside ID is kept "
                       "as another ID)")
    group.add_argument("--outside-issuer", metavar="NAME", help="keep the outside ID, qualified by "
                       "the institution that issued it")


def _studies_parser(command: Command) -> None:
    p = command.runs(cmd_studies)
    p.add_argument("--patient", metavar="ID")


def _shred_parser(command: Command) -> None:
    p = command.runs(cmd_shred)
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--reason", required=True)


PARSERS: dict[str, Callable[[Command], object]] = {
    "import": _import_parser,
    "import-media": _import_media_parser,
    "studies": _studies_parser,
    "verify": lambda command: command.runs(cmd_verify),
    "shred": _shred_parser,
}
