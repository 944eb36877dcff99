"""Regenerate the README's screenshots from a throw-away demo home, in the real window.

    .venv/bin/python docs/screenshots.py [OUT_DIR]     (default: docs/screenshots)

Everything runs on a private X server (Xvfb with Mesa, as the 3D tests do), so VTK draws and
nothing flashes on the user's screen; what is saved is that server's screen, as a reader would
see it. The studies are the demo's synthetic ones (no real patient), and the workstation's
remembered settings go to a temporary folder, not the user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QSplitter, QWidget  # noqa: E402

from app.demo.home import DemoHome, make_demo_home  # noqa: E402
from app.demo.studies import to_bytes  # noqa: E402
from app.imaging.protocols import Match, Protocol, Scope, SeriesRule  # noqa: E402
from app.imaging.tags import WITHHELD  # noqa: E402
from app.security import totp  # noqa: E402
from app.security.sessions import Session  # noqa: E402
from app.ui.image_view import ImageView  # noqa: E402
from app.ui.main_window import MainWindow  # noqa: E402
from app.ui.mpr_window import MprWindow  # noqa: E402
from app.ui.report_view import open_reports  # noqa: E402
from app.ui.theme import apply_dark_theme  # noqa: E402
from app.ui.view_controls import Tool  # noqa: E402
from app.vault import Vault  # noqa: E402
from tests.imaging.reports import _COPIED, ENHANCED, code, document, item, num  # noqa: E402
from tests.peers.xvfb import Xvfb  # noqa: E402

SIZE = (1280, 800)  # the window, as the screen shows it
WIDTH = 1100  # the saved picture's width
NODULE = (0.29, 0.475)  # the demo nodule's centre, as fractions of the image's width and height
NODULE_MM = 14.0


def main(out: Path) -> None:
    server = Xvfb()
    server.start()
    os.environ.update(DISPLAY=server.display, QT_QPA_PLATFORM="xcb", LIBGL_ALWAYS_SOFTWARE="1")
    try:
        with tempfile.TemporaryDirectory(prefix="custodian-shots-") as scratch:
            for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
                QSettings.setPath(QSettings.Format.NativeFormat, scope, scratch)
            app = QApplication(["custodian"])
            app.setApplicationName("Custodian")
            apply_dark_theme(app)
            demo = make_demo_home(Path(scratch) / "home")
            with Vault.open(demo.home, lambda: demo.passphrase) as vault:
                _shoot(vault, demo, out)
    finally:
        server.stop()


def _login(vault: Vault, demo: DemoHome, name: str, step_ahead: int = 0) -> Session:
    """``name``'s session; ``step_ahead`` uses a later code when this step's was used already."""
    user = next(u for u in demo.users if u.name == name)
    at = (int(time.time() // totp.STEP) + step_ahead) * totp.STEP
    return vault.accounts.login(user.name, user.password, totp.current_code(user.totp_secret, at=at))[1]


def _shoot(vault: Vault, demo: DemoHome, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _import_report(vault, demo)
    window = MainWindow(vault, _login(vault, demo, "rad"), layout="1x2", quiet=True)
    window.setGeometry(0, 0, *SIZE)
    window.show()
    splitter = window.sources.parentWidget()
    if isinstance(splitter, QSplitter):  # the study list narrower, for the viewports to be larger
        splitter.setSizes([420, SIZE[0] - 420])
    window.refresh()
    _require(window.open_study(demo.featured), window, "the demo chest CT to open")
    strip = window.reading_aids.strip
    hung = window.grid.visible_viewports()
    _wait(lambda: all(v.view.series is not None for v in hung), 30, "the current study and its prior")
    _wait(lambda: strip.count() > 0 and not strip.item(0).icon().isNull(), 30, "the strip's thumbnails")
    nodule = _measure(window)
    _save(out / "reading.png")

    browser = window.reading_aids.browse_tags()
    _require(browser is not None, window, "the tag browser")
    assert browser is not None
    browser.filter_edit.setText("Patient")
    browser.resize(760, 520)
    browser.move(260, 140)
    _save(out / "tags.png")
    browser.close()

    _key_images(window, out / "key-images.png")
    _protocols(vault, demo, window, out / "protocols.png")

    reports = open_reports(window, vault, demo.featured)
    if reports is not None:
        reports.resize(720, 560)
        reports.move(280, 120)
        _save(out / "report.png")
        reports.close()

    _mpr(window, nodule, out / "mpr.png")
    window.close()


def _key_images(window: MainWindow, path: Path) -> None:
    """The current study's image with the nodule marked as a key image (Ctrl+K: the gold frame) and
    the study's key images listed (Ctrl+Alt+K)."""
    current = window.grid.visible_viewports()[0]
    window.grid.set_active(current)
    _require(window.key_images.toggle() is not None, window, "marking the key image")
    listed = window.key_images.show_list()
    _require(listed is not None, window, "the key images list")
    assert listed is not None
    listed.resize(340, 150)
    listed.move(10, 640)
    _save(path)
    listed.close()


def _protocols(vault: Vault, demo: DemoHome, window: MainWindow, path: Path) -> None:
    """The hanging protocol editor with a site protocol (set by the administrator) and the
    radiologist's own."""
    admin = _login(vault, demo, "admin", step_ahead=1)
    vault.protocols.save_site(admin, Protocol(
        "Chest CT with prior", Scope.SITE, Match(("CT",), "CHEST"), "1x2",
        (SeriesRule(modality="CT", preset="Lung"), SeriesRule(modality="CT", study="prior", preset="Lung"))))
    vault.accounts.logout(admin)
    assert window.session is not None
    vault.protocols.save(window.session, Protocol(
        "Brain MR, axial T1", Scope.USER, Match(("MR",), "", "*brain*"), "1x2",
        (SeriesRule(modality="MR", description="*T1*"), SeriesRule(modality="MR", study="prior")), sync=True))
    editor = window.hanger.edit_protocols()
    _require(editor is not None, window, "the hanging protocol editor")
    assert editor is not None
    editor.list.setCurrentRow(0)  # the site's chest protocol, its viewports in the table
    editor.resize(820, 560)
    editor.move(230, 110)
    _save(path)
    editor.close()


def _import_report(vault: Vault, demo: DemoHome) -> None:
    """A measurement report of the current chest CT, as a PACS would send it, brought in by the
    technologist (who loaded the studies this TOTP step, hence the next code)."""
    tech = _login(vault, demo, "tech", step_ahead=1)
    series = vault.reading.open_series(tech, vault.reading.series(tech, demo.featured)[0].series_uid)
    header = Dataset()
    for row in vault.reading.attributes(tech, series.frame_of(0)[0]):
        if row.depth == 0 and row.keyword in _COPIED and row.value != WITHHELD:
            setattr(header, row.keyword, row.value)
    report = document(header, ENHANCED, "CT chest report", item(
        "CONTAINS", "CONTAINER", "Findings",
        item("CONTAINS", "TEXT", "Finding", TextValue="New solid nodule, right lung; none on the prior."),
        item("CONTAINS", "CONTAINER", "Nodule 1", num("Long axis", f"{NODULE_MM:.0f}", "mm", "millimeter"),
             num("Attenuation", "38", "[hnsf'U]", "Hounsfield unit"),
             item("CONTAINS", "CODE", "Finding site", ConceptCodeSequence=[code("39607008", "Lung", "SCT")])),
        item("CONTAINS", "TEXT", "Impression", TextValue="Indeterminate nodule: follow-up CT in 3 months.")))
    vault.intake.import_bytes(tech, [("demo-report", to_bytes(report))])
    vault.accounts.logout(tech)


def _measure(window: MainWindow) -> np.ndarray:
    """Both studies at the nodule's slice, magnified round it, and a length across the nodule and
    an ellipse round it drawn with the mouse on the current study; the nodule's slice, as values."""
    current, prior = (v.view for v in window.grid.visible_viewports())
    rows, columns = current.frame_values().shape[:2]
    cx, cy = NODULE[0] * columns, NODULE[1] * rows
    index = max(range(min(len(current.series or []), len(prior.series or []))),
                key=lambda i: _new_at(current, prior, i, cx, cy))  # where the current differs most
    for view in (current, prior):
        view.set_index(index)
        _drag(window, view, Tool.ZOOM, view.rect().center(), view.rect().center() - QPoint(0, 90))
        _drag(window, view, Tool.PAN, _on_screen(view, (0.4 * columns, cy)), view.rect().center())
    radius = NODULE_MM / 2 / 350 * columns
    _drag(window, current, Tool.DISTANCE, _on_screen(current, (cx - radius, cy)),
          _on_screen(current, (cx + radius, cy)))
    box = 1.8 * radius  # room round the nodule for the label's figures to be of lung and nodule
    _drag(window, current, Tool.ELLIPSE, _on_screen(current, (cx - box, cy - box)),
          _on_screen(current, (cx + box, cy + box)))
    _wait(lambda: len(current.measurements) >= 2, 5, "the measurements")
    return current.frame_values()


def _new_at(current: ImageView, prior: ImageView, index: int, x: float, y: float) -> float:
    """How much brighter the current study is than the prior round image pixel (x, y)."""
    around = (slice(int(y) - 2, int(y) + 3), slice(int(x) - 2, int(x) + 3))
    current.set_index(index)
    prior.set_index(index)
    return float(current.frame_values()[around].mean() - prior.frame_values()[around].mean())


def _on_screen(view: ImageView, point: tuple[float, float]) -> QPoint:
    return view.to_widget(point).toPoint()


def _drag(window: MainWindow, view: ImageView, tool: Tool, a: QPoint, b: QPoint) -> None:
    """Choose ``tool`` on the tool strip and drag it in ``view`` from ``a`` to ``b``."""
    window.window_actions.tools.choose(tool)
    view.setFocus()
    QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    for k in range(1, 9):
        QTest.mouseMove(view, QPoint(a.x() + (b.x() - a.x()) * k // 8, a.y() + (b.y() - a.y()) * k // 8))
    QTest.mouseRelease(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def _mpr(window: MainWindow, nodule: np.ndarray, path: Path) -> None:
    """The 3D/MPR window (as Ctrl+M opens it) with its cursor on the nodule, once the planes (and,
    if within a minute, the volume rendering) show."""
    window.grid.visible_viewports()[0].view.setFocus()
    mpr = window.open_3d()
    _require(isinstance(mpr, MprWindow), window, "the 3D/MPR window")
    assert isinstance(mpr, MprWindow)
    mpr.setGeometry(0, 0, *SIZE)
    shown: list[bool] = []
    rendered: list[str] = []
    mpr.planes_shown.connect(lambda: shown.append(True))
    mpr.volume_pane.rendered.connect(rendered.append)
    _wait(lambda: bool(shown), 120, "the MPR planes")
    assert mpr.state is not None
    data = mpr.state.volume.data
    step = max(1, nodule.shape[0] // data.shape[1])
    small = nodule[::step, ::step][: data.shape[1], : data.shape[2]].astype(np.float32)
    mpr.state.cursor["axial"] = int(np.argmin([np.abs((each - each.mean()) - (small - small.mean())).mean()
                                               for each in data.astype(np.float32)]))
    mpr.click("axial", NODULE[0] * data.shape[2], NODULE[1] * data.shape[1])
    if _wait(lambda: bool(rendered), 60, ""):
        _turn(mpr.volume_pane, rendered)
    else:
        print("The volume rendering took over 60 s; the picture shows the planes only.", file=sys.stderr)
    _save(path)
    mpr.close()


def _turn(pane: QWidget, rendered: list[str]) -> None:
    """Turn the rendered volume a little with the mouse (seen from the front the ribs overlap) and
    wait for the renderings to settle."""
    centre = pane.rect().center()
    QTest.mousePress(pane, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    QTest.mouseMove(pane, centre + QPoint(pane.width() // 8, pane.height() // 7))
    QTest.mouseRelease(pane, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       centre + QPoint(pane.width() // 8, pane.height() // 7))
    _wait(_newer(rendered), 60, "")
    while _wait(_newer(rendered), 1.0, ""):  # until no newer picture came for a second
        pass


def _newer(rendered: list[str]) -> Callable[[], bool]:
    """Whether a picture came after those in ``rendered`` now."""
    count = len(rendered)
    return lambda: len(rendered) > count


def _require(done: bool, window: MainWindow, what: str) -> None:
    """Stop with what the window reported when ``what`` did not happen."""
    if not done:
        raise SystemExit(f"No screenshot: {what} failed. " + " ".join(window.errors))


def _wait(done: Callable[[], bool], seconds: float, what: str) -> bool:
    """Run the event loop until ``done()``; past ``seconds`` fail naming ``what`` (if named)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            if what:
                raise SystemExit(f"Timed out waiting for {what}.")
            return False
        QApplication.processEvents()
        time.sleep(0.01)
    return True


def _save(path: Path) -> None:
    """The X screen's top-left SIZE, as drawn (VTK included), scaled to WIDTH and stored as a
    palette PNG so each stays small."""
    _wait(lambda: False, 0.6, "")  # let everything paint
    shot = QApplication.primaryScreen().grabWindow(0, 0, 0, *SIZE).toImage()
    shot = shot.convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(shot.constBits(), np.uint8, shot.height() * shot.bytesPerLine())
    rgb = pixels.reshape(shot.height(), shot.bytesPerLine())[:, : shot.width() * 3].reshape(
        shot.height(), shot.width(), 3)
    picture = Image.fromarray(rgb.copy()).resize((WIDTH, round(WIDTH * shot.height() / shot.width())),
                                                 Image.Resampling.LANCZOS)
    picture.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
