"""Key images: a reader's marks on a study's images, and the Key Object Selection document that
takes them to the PACS."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict

from app.cli.credentials import current_session, open_vault
from app.cli.output import EXIT_FAILED, EXIT_OK, EXIT_PARTLY, Output
from app.cli.parsing import Command


def cmd_key_images_list(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        marked = vault.key_images.of_study(current_session(vault), args.study_uid)
    out.emit([asdict(k) for k in marked], lambda: "\n".join(
        f"{k.series_uid}  {k.sop_uid}" + (f"  frame {k.frame + 1}" if k.frame else "") for k in marked)
        or "You have marked no key images in this study.")
    return EXIT_OK


def cmd_key_images_mark(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        changed = vault.key_images.mark(current_session(vault), args.sop_uid, args.frame - 1, not args.unmark)
    out.emit({"changed": changed is not None}, ("Unmarked." if args.unmark else "Marked as a key image.")
             if changed is not None else "Nothing changed.")
    return EXIT_OK


def cmd_key_images_send(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        result = vault.key_images.send(current_session(vault), args.study_uid, args.node)
    if result.queued:
        text = (f"The key image document ({result.images} image(s)) is stored in the study; the PACS node "
                f"'{result.node}' cannot be reached now, so the study waits in the outbox.")
    elif result.sent:
        text = f"Sent the key image document ({result.images} image(s)) to '{result.node}'."
    else:
        text = f"'{result.node}' did not take the key image document: {result.error}."
    out.emit(asdict(result), text)
    return EXIT_OK if result.sent else EXIT_PARTLY if result.queued else EXIT_FAILED


def _key_images_parser(command: Command) -> None:
    group = command.group("key_images_command")
    p = group.add("list", cmd_key_images_list, "your key images of a study")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p = group.add("mark", cmd_key_images_mark, "mark an image (or, with --unmark, take the mark away)")
    p.add_argument("sop_uid", metavar="SOP_INSTANCE_UID")
    p.add_argument("--frame", type=int, default=1, help="the frame of a multi-frame image (from 1)")
    p.add_argument("--unmark", action="store_true")
    p = group.add("send", cmd_key_images_send, "send your key images of a study to the PACS as a Key Object "
                  "Selection document, stored in the study too")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--node", help="the PACS node (default: the site's PACS)")


PARSERS: dict[str, Callable[[Command], object]] = {"key-images": _key_images_parser}
