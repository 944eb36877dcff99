"""Disclosures: encrypted export media with their disclosure record, a patient's accounting of
disclosures, and the business associate agreements exports to organisations depend on."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from app.cli.credentials import code_or_pin, current_session, open_vault
from app.cli.output import EXIT_OK, Output, progress_bar, table
from app.cli.parsing import Command
from app.errors import CustodianError, UsageError
from app.media.disclosures import Delivery, IdentityCheck, MediaKind, Purpose, RecipientKind


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from app.media import disclosures as d
    from app.media.deid import DeidOptions

    if (args.retain_dates or args.clean_descriptors) and not args.deidentify:
        raise UsageError("--retain-dates and --clean-descriptors are options of --deidentify.")
    request = d.ExportRequest(
        studies=tuple(args.study_uids), recipient_kind=RecipientKind(args.recipient_type),
        recipient=args.recipient, purpose=Purpose(args.purpose),
        identity_check=IdentityCheck(args.identity_check), delivery=Delivery(args.passphrase_delivery),
        media=MediaKind(args.media), out=args.out.resolve(), authorization=args.authorization,
        label=args.label,
        deidentify=DeidOptions(args.retain_dates, args.clean_descriptors) if args.deidentify else None)
    if args.burn is not None and request.media is not MediaKind.ISO:
        raise UsageError("--burn writes a CD image: use it with --media iso.")
    code = code_or_pin("Authenticator code or card PIN (export needs it again): ")
    if not code:
        raise UsageError("Export needs your authenticator code or card PIN (CUSTODIAN_TOTP, "
                         "CUSTODIAN_CARD_PIN or the prompt).")
    with open_vault(args) as vault, progress_bar("Writing media") as update:
        result = vault.disclosure.export(current_session(vault), request, code, update)
        institution = vault.policy.ae_title
    if args.cover_letter:
        try:
            args.cover_letter.write_bytes(d.cover_letter(result, institution))
        except OSError as exc:
            out.note(f"The cover letter could not be written ({exc.strerror}); the passphrase is below.")

    def text() -> str:
        lines = [f"Written {result.out} ({result.instances} instance(s), {result.size / 2**20:.1f} MB), "
                 f"media serial {result.serial}, disclosure #{result.disclosure_id} recorded.",
                 f"SHA-256 {result.sha256}",
                 "", f"Passphrase (shown only now, give it separately from the media):  {result.passphrase}"]
        if result.review:
            lines.append(f"Review before release: {result.review} de-identified image(s) may carry burnt-in "
                         "text (ultrasound, screen captures or marked as such).")
        if result.left_out:
            lines.append(f"Left off the media: {len(result.left_out)} instance(s) that could not be put "
                         "on it:")
            lines += [f"  {uid}: {why}" for uid, why in result.left_out]
        return "\n".join(lines)
    out.emit(result.as_json(), text)
    if args.burn is not None:
        from app.media.writer import burn, burners

        device = args.burn or next(iter(burners()), None)
        if device is None:
            raise CustodianError(f"No CD/DVD writer was found; the image is kept at {result.out} "
                                 "for burning elsewhere.")
        burn(result.out, device)
    return EXIT_OK


def cmd_disclosures(args: argparse.Namespace, out: Output) -> int:
    from app.media.disclosures import Accounting

    with open_vault(args) as vault:
        session = current_session(vault)
        found = vault.disclosure.disclosures(session, args.patient)
        accounting = Accounting(args.patient, found, session.user.name, datetime.now(UTC))
    if args.pdf:
        try:
            args.pdf.write_bytes(accounting.to_pdf())
        except OSError as exc:
            raise UsageError(f"The accounting could not be written to {args.pdf}: {exc.strerror}.") from None
    out.emit([item.as_json() for item in found], lambda: "\n".join(accounting.header_lines()) + (
        "\n" + table(accounting.rows(), list(accounting.COLUMNS)) if found else "") + (
        f"\nWritten to {args.pdf}." if args.pdf else ""))
    return EXIT_OK


def cmd_agreement_add(args: argparse.Namespace, out: Output) -> int:
    from app.media.agreements import Agreement, parse_date

    agreement = Agreement(args.recipient, args.reference, parse_date(args.effective, "effective"),
                          parse_date(args.expires, "expiry"))
    with open_vault(args) as vault:
        vault.disclosure.add_agreement(current_session(vault), agreement)
    out.emit(agreement.as_json(date.today()), f"Agreement with {agreement.recipient} recorded "
             f"({agreement.reference}, {agreement.effective} to {agreement.expires}).")
    return EXIT_OK


def cmd_agreement_revoke(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        vault.disclosure.revoke_agreement(current_session(vault), args.recipient, args.reason)
    out.emit({"recipient": args.recipient, "revoked": True},
             f"Agreement with {args.recipient} revoked: exports to them are refused from now on.")
    return EXIT_OK


def cmd_agreement_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        found = vault.disclosure.agreements(current_session(vault))
    today = date.today()
    rows = [[a.recipient, a.reference, a.effective, a.expires, a.status(today)] for a in found]
    out.emit([a.as_json(today) for a in found], lambda: table(
        rows, ["Business associate", "Agreement", "Effective", "Expires", "Status"])
        if rows else "No business associate agreements are registered.")
    return EXIT_OK



# ---------------------------------------------------------------------------- parsers
def _export_parser(command: Command) -> None:
    p = command.runs(cmd_export)
    p.add_argument("study_uids", nargs="+", metavar="STUDY_UID")
    p.add_argument("--recipient", required=True, help="who receives it (person or organisation)")
    p.add_argument("--recipient-type", required=True, choices=[k.value for k in RecipientKind])
    p.add_argument("--purpose", required=True, choices=[k.value for k in Purpose])
    p.add_argument("--authorization", default="", metavar="REF",
                   help="reference of the signed authorization or legal order")
    p.add_argument("--identity-check", required=True, choices=[k.value for k in IdentityCheck],
                   help="how the requester was identified")
    p.add_argument("--passphrase-delivery", default=Delivery.HANDED_OVER.value,
                   choices=[k.value for k in Delivery])
    p.add_argument("--media", choices=[k.value for k in MediaKind], default=MediaKind.ZIP.value)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--label", default="", help="text for the media label")
    p.add_argument("--burn", nargs="?", const="", metavar="DEVICE",
                   help="burn the CD image with xorriso (default: the first writer found)")
    p.add_argument("--cover-letter", type=Path, metavar="PDF",
                   help="also write the passphrase letter (print it, send it apart, delete the file)")
    p.add_argument("--deidentify", action="store_true",
                   help="PS3.15 Annex E basic profile (required by the site for research and teaching)")
    p.add_argument("--retain-dates", action="store_true", help="shift dates per patient instead of removing")
    p.add_argument("--clean-descriptors", action="store_true", help="keep descriptions that name nobody")


def _disclosures_parser(command: Command) -> None:
    p = command.runs(cmd_disclosures)
    p.add_argument("--patient", required=True, metavar="ID")
    p.add_argument("--pdf", type=Path, metavar="FILE", help="also write it as a PDF to give the patient")


def _agreement_parser(command: Command) -> None:
    agreement = command.group("agreement_command")
    p = agreement.add("add", cmd_agreement_add, "register or renew an agreement (privacy officer)")
    p.add_argument("recipient", metavar="NAME")
    p.add_argument("--reference", required=True)
    p.add_argument("--effective", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="last day in force")
    p = agreement.add("revoke", cmd_agreement_revoke, "revoke an agreement")
    p.add_argument("recipient", metavar="NAME")
    p.add_argument("--reason", required=True)
    agreement.add("list", cmd_agreement_list, "list agreements and whether they are in force")


PARSERS: dict[str, Callable[[Command], object]] = {
    "export": _export_parser,
    "disclosures": _disclosures_parser,
    "agreement": _agreement_parser,
}
