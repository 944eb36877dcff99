"""Hanging protocols as definitions: what a study is (modality, body part, description, how many
priors the patient has) decides the layout, which series goes in which viewport, each viewport's
window preset and whether scrolling is synchronised.

A protocol is a plain record that checks itself when it is made, so a bad definition is refused
with a plain reason wherever it comes from (the editor, the vault, a signed file). Of the
protocols that fit a study the most specific hangs it, a user's own before the site's when they
are as specific; when none fits, the built-in hanging (:mod:`app.imaging.hanging`) stays.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from app.errors import UsageError
from app.imaging.display import CT_PRESETS
from app.imaging.hanging import LAYOUTS, priors
from app.store.records import SeriesSummary, StudySummary

NAME_MAX = 64
NTH_MAX = 20
PRIORS_MAX = 100
# The study opened, its relevant prior (hanging.relevant_prior), or none: the viewport stays empty.
STUDIES = ("current", "prior", "none")
GLOB = "*?["


class Scope(StrEnum):
    SITE = "site"
    USER = "user"


def fits_pattern(pattern: str, text: str) -> bool:
    """A case-insensitive substring, or a glob when the pattern has ``*``, ``?`` or ``[``; empty fits all."""
    if not pattern:
        return True
    if any(c in pattern for c in GLOB):
        return fnmatch.fnmatchcase(text.casefold(), pattern.casefold())
    return pattern.casefold() in text.casefold()


@dataclass(frozen=True)
class SeriesRule:
    """Which series one viewport shows: the ``nth`` of the chosen study's image series that fit
    the modality and description (empty: any), in the series list's order; and its window preset."""

    modality: str = ""
    description: str = ""
    study: str = "current"
    nth: int = 1
    preset: str = ""  # a CT preset's name (app.imaging.display.CT_PRESETS); empty: the series' own window

    def fits(self, series: SeriesSummary) -> bool:
        return ((not self.modality or series.modality.upper() == self.modality)
                and fits_pattern(self.description, series.description))


@dataclass(frozen=True)
class Match:
    """What a study must be for the protocol to hang it (empty: anything)."""

    modalities: tuple[str, ...] = ()  # any one of them among the study's
    body_part: str = ""  # any of its series' Body Part Examined, as a pattern
    description: str = ""  # its study description, as a pattern
    min_priors: int = 0
    max_priors: int | None = None

    @property
    def specificity(self) -> int:
        """How many conditions it sets: the more, the more specific."""
        return sum((bool(self.modalities), bool(self.body_part), bool(self.description),
                    self.min_priors > 0, self.max_priors is not None))


@dataclass(frozen=True)
class StudyFacts:
    """What protocols are matched on, of one study."""

    modalities: frozenset[str]
    body_parts: frozenset[str]
    description: str
    priors: int


@dataclass(frozen=True)
class Protocol:
    name: str
    scope: Scope = Scope.USER
    match: Match = field(default_factory=Match)
    layout: str = "1x1"
    viewports: tuple[SeriesRule, ...] = ()  # in the layout's order, row by row; fewer leaves the rest empty
    sync: bool = True
    managed: bool = False  # set by the signed site policy: nobody at the workstation changes it

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", " ".join(str(self.name).split()))
        if not 0 < len(self.name) <= NAME_MAX:
            raise UsageError(f"A hanging protocol needs a name of 1 to {NAME_MAX} characters.")
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "match", _checked_match(self.name, self.match))
        object.__setattr__(self, "viewports", tuple(_checked_rule(self.name, r) for r in self.viewports))
        if self.layout not in LAYOUTS:
            self._refuse(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        rows, cols = LAYOUTS[self.layout]
        if len(self.viewports) > rows * cols:
            self._refuse(f"it places {len(self.viewports)} series but the {self.layout} layout has "
                         f"{rows * cols} viewports")
        if not isinstance(self.sync, bool) or not isinstance(self.managed, bool):
            self._refuse("sync is true or false")

    def _refuse(self, why: str) -> None:
        raise UsageError(f"Hanging protocol '{self.name}': {why}.")


def _refused(name: str, why: str) -> UsageError:
    return UsageError(f"Hanging protocol '{name}': {why}.")


def _checked_match(name: str, match: Match) -> Match:
    given: Iterable[object] = match.modalities  # ("CT, MR" too: a list typed as text)
    words = given.replace(",", " ").split() if isinstance(given, str) else given
    modalities = tuple(sorted({str(m).strip().upper() for m in words} - {""}))
    counts = [match.min_priors, match.max_priors if match.max_priors is not None else 0]
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= PRIORS_MAX for n in counts):
        raise _refused(name, f"the numbers of priors must be whole numbers from 0 to {PRIORS_MAX}")
    if match.max_priors is not None and match.min_priors > match.max_priors:
        raise _refused(name, "the fewest priors must not be more than the most priors")
    if not isinstance(match.body_part, str) or not isinstance(match.description, str):
        raise _refused(name, "body part and description are text patterns")
    return Match(modalities, match.body_part.strip(), match.description.strip(), match.min_priors,
                 match.max_priors)


def _checked_rule(name: str, rule: SeriesRule) -> SeriesRule:
    if rule.study not in STUDIES:
        raise _refused(name, f"a viewport shows the current study, the prior or none, not {rule.study!r}")
    if not isinstance(rule.nth, int) or isinstance(rule.nth, bool) or not 1 <= rule.nth <= NTH_MAX:
        raise _refused(name, f"a viewport's series number among those that fit is 1 to {NTH_MAX}")
    if rule.preset and rule.preset not in CT_PRESETS:
        raise _refused(name, f"window preset must be one of {', '.join(CT_PRESETS)}, not {rule.preset!r}")
    if not isinstance(rule.modality, str) or not isinstance(rule.description, str):
        raise _refused(name, "a viewport's modality and description are text")
    return SeriesRule(rule.modality.strip().upper(), rule.description.strip(), rule.study, rule.nth,
                      rule.preset)


# ---------------------------------------------------------------------- plain serialisation
def to_dict(protocol: Protocol) -> dict[str, Any]:
    """The definition as JSON-ready values (``managed`` is where it came from, not part of it)."""
    plain = asdict(protocol)
    del plain["managed"]
    plain["scope"] = protocol.scope.value
    plain["match"]["modalities"] = list(protocol.match.modalities)
    plain["viewports"] = list(plain["viewports"])
    return plain


def _known(name: str, what: str, given: object, record: type) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise _refused(name, f"{what} must be an object")
    unknown = set(given) - {f.name for f in fields(record)}
    if unknown:
        raise _refused(name, f"{what} has fields this version does not know: {', '.join(sorted(unknown))}")
    return given


def from_dict(given: object, *, site: bool = False, managed: bool = False) -> Protocol:
    """A protocol from its JSON values (``site``: as the site's whatever it says); UsageError with a
    plain reason when it is not a good one."""
    name = str(given.get("name", "")) if isinstance(given, dict) else ""
    plain = dict(_known(name, "the protocol", given, Protocol))
    plain.pop("managed", None)
    if site:
        plain["scope"] = Scope.SITE.value
    try:
        match = _known(name, "match", plain.pop("match", {}), Match)
        rules = plain.pop("viewports", [])
        if not isinstance(rules, list):
            raise _refused(name, "viewports must be a list")
        modalities = match.get("modalities", ())
        match = {**match, "modalities": modalities if isinstance(modalities, str) else tuple(modalities)}
        viewports = tuple(SeriesRule(**_known(name, "a viewport", r, SeriesRule)) for r in rules)
        return Protocol(**plain, match=Match(**match), viewports=viewports, managed=managed and site)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise _refused(name, "a field has a value of the wrong kind") from None


def from_list(given: object, *, managed: bool = False) -> tuple[Protocol, ...]:
    """The site's protocols from a JSON list (the site policy's, a shared file's); names must be unique."""
    if not isinstance(given, list):
        raise UsageError("Hanging protocols must be a list of protocols.")
    made = tuple(from_dict(each, site=True, managed=managed) for each in given)
    names = [p.name.casefold() for p in made]
    if len(set(names)) < len(names):
        raise UsageError("Hanging protocols: two protocols have the same name.")
    return made


def dumps(protocol: Protocol) -> str:
    return json.dumps(to_dict(protocol), sort_keys=True)


def loads(text: str) -> Protocol:
    return from_dict(json.loads(text))


# ---------------------------------------------------------------------- matching and placing
def facts(current: StudySummary, series: Iterable[SeriesSummary], studies: Iterable[StudySummary]
          ) -> StudyFacts:
    """The current study as protocols see it; ``priors`` counts the earlier studies that
    :func:`~app.imaging.hanging.relevant_prior` chooses from."""
    listed = list(series)
    return StudyFacts(frozenset(m.upper() for m in [*current.modalities, *(s.modality for s in listed)]),
                      frozenset(s.body_part.upper() for s in listed if s.body_part), current.description,
                      len(priors(current, studies)))


def fits(match: Match, study: StudyFacts) -> bool:
    return ((not match.modalities or bool(set(match.modalities) & study.modalities))
            and (not match.body_part or any(fits_pattern(match.body_part, b) for b in study.body_parts))
            and fits_pattern(match.description, study.description)
            and match.min_priors <= study.priors
            and (match.max_priors is None or study.priors <= match.max_priors))


def chosen(protocols: Iterable[Protocol], study: StudyFacts) -> Protocol | None:
    """The most specific protocol that fits; a user's before the site's, then by name. None: the
    built-in hanging."""
    return min((p for p in protocols if fits(p.match, study)),
               key=lambda p: (-p.match.specificity, p.scope != Scope.USER, p.name.casefold()), default=None)


@dataclass(frozen=True)
class Placement:
    series: SeriesSummary
    preset: str  # empty: the series' own window


def placements(protocol: Protocol, current: Sequence[SeriesSummary],
               prior: Sequence[SeriesSummary]) -> list[Placement | None]:
    """What each viewport of the protocol shows (None: no series fits its rule, it stays empty)."""
    placed: list[Placement | None] = []
    for rule in protocol.viewports:
        found = [s for s in {"current": current, "prior": prior}.get(rule.study, []) if rule.fits(s)]
        placed.append(Placement(found[rule.nth - 1], rule.preset) if len(found) >= rule.nth else None)
    return placed
