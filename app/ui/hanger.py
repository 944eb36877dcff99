"""Hanging a study in the viewports: by the hanging protocol that fits it, else the built-in way
(its series in order, then the most relevant prior's in the viewports left over).

The window owns the lists and the viewports; this decides what goes where and says in the status
bar which protocol hung the study. The protocols themselves (matching, placing) are Qt-free
(:mod:`app.imaging.protocols`); the editor is :class:`~app.ui.protocol_editor.ProtocolEditor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction

from app.imaging.hanging import layout_for, relevant_prior
from app.imaging.protocols import Protocol, Scope, chosen, facts, placements
from app.security.roles import Action, Role, permits
from app.store.records import SeriesSummary, StudySummary
from app.ui.protocol_editor import ProtocolEditor
from app.ui.report_view import image_series
from app.ui.viewport_grid import Viewport
from app.vault import Vault

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

Hung = list[tuple[Viewport, SeriesSummary, str]]  # viewport, series, window preset ("" the series' own)


class Hanger(QObject):
    def __init__(self, window: MainWindow, vault: Vault) -> None:
        super().__init__(window)
        self._window, self._vault = window, vault
        self.protocol: Protocol | None = None  # the protocol that hung the study being read, if one did
        self.edit = QAction("Hanging &protocols…", window,
                            toolTip="Which layout, series, window presets and synchronisation a study "
                                    "opens with, by its modality, body part, description and priors")
        self.edit.triggered.connect(self.edit_protocols)

    def fit_role(self, role: Role) -> None:
        self.edit.setVisible(permits(role, Action.VIEW_IMAGES) or permits(role, Action.SITE_POLICY))

    def edit_protocols(self) -> ProtocolEditor | None:
        session = self._window.session
        if session is None:
            return None
        editor = ProtocolEditor(self._vault, session, self._window)
        editor.show()
        return editor

    def open_study(self, study_uid: str, *, by_protocol: bool = True) -> bool:
        """Select the study and hang it: by the protocol that fits it (``by_protocol``), else its
        series in order into the visible viewports and the most relevant prior's into those left."""
        window = self._window
        if not window.browser.select_study(study_uid):
            window.show_error("This study is not in the study list.")
            return False
        window.list_series(study_uid)  # already done by the selection unless that failed before
        if window.listed_study != study_uid:
            return False  # listing its series failed and was reported
        study = window.studies[study_uid]
        self.protocol = self._protocol(study) if by_protocol else None
        hung = self._by_protocol(self.protocol, study) if self.protocol else []
        if not hung:  # no protocol fits, or none of its rules found a series: the built-in way
            self.protocol, hung = None, self._built_in(study)
        viewports = window.grid.visible_viewports()
        for viewport, series, preset in hung:
            if viewport.series_uid == series.series_uid:
                continue  # hung already (a layout change): keep its slice and window
            shown = window.load_series(series.series_uid, viewport, series)
            if not shown and (study.restricted or window.locked):
                return False  # access refused (no break-glass), or locked meanwhile: hang nothing more
            if shown and preset and viewport.view.window is not None:
                viewport.view.apply_preset(preset)
        for viewport in viewports:
            if all(viewport is not v for v, _, _ in hung):
                viewport.clear()
        window.grid.set_active(viewports[0])
        viewports[0].view.setFocus()
        window.browser.select_series(viewports[0].series_uid)
        if self.protocol is not None:
            whose = "the site's" if self.protocol.scope == Scope.SITE else "your"
            window.show_status(f"Hung by {whose} hanging protocol '{self.protocol.name}'.")
        return True

    def _protocol(self, study: StudySummary) -> Protocol | None:
        """The protocol that fits the study best; None: none does (or the reader has none)."""
        window = self._window
        if window.session is None or not permits(window.session.user.role, Action.VIEW_IMAGES):
            return None
        protocols = window.ask(self._vault.protocols.protocols, window.session, report=window.show_status)
        if not protocols:
            return None
        return chosen(protocols, facts(study, window.listed_series, window.studies.values()))

    def _by_protocol(self, protocol: Protocol, study: StudySummary) -> Hung:
        """The protocol's layout and synchronisation, and what it places in each viewport."""
        window = self._window
        self.set_layout(protocol.layout, hang=False)
        window.sync_action.setChecked(protocol.sync)
        wants_prior = any(rule.study == "prior" for rule in protocol.viewports)
        placed = placements(protocol, image_series(window.listed_series),
                            self._prior_series(study) if wants_prior else [])
        return [(viewport, place.series, place.preset)
                for viewport, place in zip(window.grid.visible_viewports(), placed, strict=False)
                if place is not None]

    def _built_in(self, study: StudySummary) -> Hung:
        viewports = self._window.grid.visible_viewports()
        hung = list(zip(viewports, image_series(self._window.listed_series), strict=False))
        spare = viewports[len(hung):]
        if spare:  # (a report opens on a click)
            hung += list(zip(spare, self._prior_series(study), strict=False))
        return [(viewport, series, "") for viewport, series in hung]

    def _prior_series(self, study: StudySummary) -> list[SeriesSummary]:
        """The image series of the study's most relevant prior (none without one)."""
        window = self._window
        prior = relevant_prior(study, window.studies.values())
        if prior is None:
            return []
        return image_series(window.ask(self._vault.reading.series, window.session, prior.study_uid) or [])

    def set_layout(self, name: str, *, hang: bool = True) -> None:
        """Change the layout; with ``hang`` the study being read (the first viewport's) is hung
        again the built-in way, so the viewports added get its other series or its prior."""
        window = self._window
        reading = window.grid.visible_viewports()[0].study_uid if hang else None
        window.grid.set_layout(name)
        window.layout_actions[name].setChecked(True)
        if reading is not None:
            window.open_study(reading, by_protocol=False)

    def hang_per_series(self) -> bool:
        """Switch to the layout with a viewport for each series of the selected study and open it."""
        window = self._window
        study_uid = window.browser.current_study_uid()
        if study_uid is None:
            window.show_error("Select a study first: each of its series gets a viewport.")
            return False
        window.list_series(study_uid)
        if window.listed_study != study_uid:
            return False
        count = len(window.listed_series)
        self.set_layout(layout_for(count), hang=False)
        opened = window.open_study(study_uid, by_protocol=False)
        shown = len(window.grid.visible_viewports())
        if opened and count > shown:
            window.show_status(f"The first {shown} of {count} series are shown; drag others onto a viewport.")
        return opened
