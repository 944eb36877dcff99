"""The self-test's Qt check, here because only the UI package loads Qt."""

from __future__ import annotations

from pathlib import Path

from app.selftest import FAIL, PASS, Check


def qt_check() -> Check:
    """Qt draws text on an image offscreen: its platform plugin and fonts are there."""
    try:
        from PySide6.QtCore import QLibraryInfo, Qt
        from PySide6.QtGui import QGuiApplication, QImage, QPainter

        plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
        # held in a name: the application must outlive the drawing below
        _app = QGuiApplication.instance() or QGuiApplication(["custodian", "-platform", "offscreen"])
        image = QImage(120, 30, QImage.Format.Format_Grayscale8)
        image.fill(0)
        painter = QPainter(image)
        painter.setPen(Qt.GlobalColor.white)
        painter.drawText(image.rect(), "Custodian")
        painter.end()
        lit = sum(image.pixelColor(x, y).value() > 128 for x in range(120) for y in range(30))
    except Exception as exc:
        return Check("display", "Qt", FAIL, f"Qt could not start ({type(exc).__name__})")
    found = len(list(plugins.glob("*"))) if plugins.is_dir() else 0
    if not lit:
        return Check("display", "Qt", FAIL, "Qt drew no text: fonts or the platform plugin are missing")
    platform = QGuiApplication.platformName()  # (static)
    return Check("display", "Qt", PASS, f"platform {platform}, {found} platform plugin(s)")
