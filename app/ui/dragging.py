"""Dragging a series from the series list onto a viewport.

The drag carries only the series UID, under a type of our own and no text form, so no other
application (an editor, a chat window) accepts the drop.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData

SERIES_MIME = "application/x-custodian-series"


def series_mime(series_uid: str) -> QMimeData:
    data = QMimeData()
    data.setData(SERIES_MIME, series_uid.encode("ascii"))
    return data


def dragged_series(data: QMimeData | None) -> str | None:
    """The series UID a drag carries, or None for anything else."""
    if data is None or not data.hasFormat(SERIES_MIME):
        return None
    return bytes(data.data(SERIES_MIME).data()).decode("ascii", "replace") or None
