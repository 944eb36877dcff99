"""A reader's hanging protocol, made in the editor, hangs the study it fits: its layout, the series
it names in the viewports it names, with their window presets, and the status bar says so."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtWidgets import QComboBox, QSpinBox, QTableWidgetItem, QWidget

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.display import CT_PRESETS
from app.ui.main_window import MainWindow
from app.ui.viewport_grid import Viewport
from tests.ui.conftest import Importer, Reader

PATIENT = Patient("P-HANG", "Hang^Helen")


def centre(grab: Callable[[QWidget], np.ndarray], viewport: Viewport) -> int:
    """The grey level painted at the image's centre (the phantom's water)."""
    rect = viewport.view.image_rect()
    return int(grab(viewport.view)[rect.center().y(), rect.center().x()].mean())


def test_a_fitting_protocol_hangs_its_layout_series_and_presets(
        open_window: Callable[..., MainWindow], reader: Reader, importer: Importer,
        grab_pixels: Callable[[QWidget], np.ndarray]) -> None:
    axial = ct_study(PATIENT, slices=2, size=32, description="CT THORAX HANGTEST")
    lung = ct_study(PATIENT, slices=2, size=32, description="CT THORAX HANGTEST",
                    study_uid=axial[0].StudyInstanceUID)
    for ds in lung:
        ds.SeriesDescription, ds.SeriesNumber = "Lung 1 mm", 2
    prior = ct_study(PATIENT, slices=2, size=32, date="20250101", description="CT THORAX HANGTEST")
    assert importer([(f"hang{i}", to_bytes(ds)) for i, ds in enumerate(axial + lung + prior)]).imported == 6
    window = open_window(reader.session)
    editor = window.hanger.edit_protocols()
    assert editor is not None
    editor.name.setText(" ")
    assert not editor.save() and "needs a name" in editor.error_label.text()
    editor.name.setText("Thorax with prior")
    editor.modalities.setText("CT")
    editor.description.setText("hangtest")
    editor.min_priors.setValue(1)
    editor.layout_box.setCurrentText("1x2")
    editor.sync.setChecked(False)
    editor.table.setItem(0, 2, QTableWidgetItem("lung"))
    for row, column, text in ((0, 4, "Lung"), (1, 0, "prior")):
        combo = editor.table.cellWidget(row, column)
        assert isinstance(combo, QComboBox)
        combo.setCurrentText(text)
    nth = editor.table.cellWidget(1, 3)
    assert isinstance(nth, QSpinBox)
    nth.setValue(1)  # the prior's first series
    assert editor.save(), editor.error_label.text()
    assert [editor.list.item(i).text() for i in range(editor.list.count())] == ["Thorax with prior (mine)"]
    editor.close()

    assert window.open_study(axial[0].StudyInstanceUID)

    assert window.grid.layout_name == "1x2" and window.layout_actions["1x2"].isChecked()
    left, right = window.grid.visible_viewports()
    assert left.series_uid == lung[0].SeriesInstanceUID  # the series it names, not the first
    assert right.series_uid == prior[0].SeriesInstanceUID
    assert left.view.window == CT_PRESETS["Lung"] and not window.sync_action.isChecked()
    assert centre(grab_pixels, left) > 200 > 140 > centre(grab_pixels, right)  # water: lung window, own
    assert "Hung by your hanging protocol 'Thorax with prior'" in window.statusBar().currentMessage()
    assert window.errors == []

    window.set_layout("2x2")  # the reader's own choice of layout hangs the built-in way
    assert [v.series_uid for v in window.grid.visible_viewports()] == [
        axial[0].SeriesInstanceUID, lung[0].SeriesInstanceUID, prior[0].SeriesInstanceUID, None]
