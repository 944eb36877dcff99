"""What a command gives back: an exit code, and its answer as text for a person or as one JSON
document for a script (then nothing else goes to stdout; notes and progress go to stderr)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator

EXIT_OK, EXIT_FAILED, EXIT_PARTLY = 0, 1, 5  # (2: a usage error, argparse's own)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: object, text: str | Callable[[], str]) -> None:
        if self.as_json:
            print(json.dumps(data, indent=1, default=str))
        else:
            print(text() if callable(text) else text)

    @staticmethod
    def note(message: str) -> None:
        print(message, file=sys.stderr)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when a person is watching; nothing in scripts."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)

