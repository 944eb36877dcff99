"""Hanging protocols as definitions: which one fits a study, what it places where, and bad
definitions refused with a plain reason."""

from __future__ import annotations

import pytest

from app.errors import UsageError
from app.imaging.protocols import (
    Match,
    Protocol,
    Scope,
    SeriesRule,
    chosen,
    facts,
    from_dict,
    from_list,
    placements,
    to_dict,
)
from app.store.records import SeriesSummary, StudySummary


def study(uid: str, date: str, description: str = "CT CHEST", *mods: str) -> StudySummary:
    return StudySummary(uid, 7, "P1", "X^Y", date, list(mods or ["CT"]), description, 1, 1)


def series(uid: str, description: str, modality: str = "CT", body_part: str = "CHEST") -> SeriesSummary:
    return SeriesSummary(uid, "c", modality, 1, description, 10, body_part)


CURRENT = study("c", "20260315", "CT CHEST W CONTRAST")
PRIORS = [study("p1", "20250101"), study("p2", "20240101"), study("mr", "20230101", "MR HEAD", "MR")]
SERIES = [series("s1", "Axial 2.5 mm"), series("s2", "Lung 1 mm"), series("s3", "Coronal MPR")]


def named(name: str, scope: Scope = Scope.SITE, **match: object) -> Protocol:
    return Protocol(name, scope, Match(**match))  # type: ignore[arg-type]


def test_the_most_specific_fitting_protocol_hangs_and_priors_count() -> None:
    seen = facts(CURRENT, SERIES, [CURRENT, *PRIORS])
    assert seen.priors == 3 and seen.body_parts == {"CHEST"} and seen.modalities == {"CT"}
    protocols = [named("any CT", modalities=("ct",)),
                 named("chest CT", modalities=("CT",), body_part="chest"),
                 named("chest CT with contrast", modalities=("CT",), body_part="CHEST",
                       description="*contrast"),
                 named("MR", modalities=("MR",), body_part="CHEST", description="contrast", min_priors=1),
                 named("first chest CT", modalities=("CT",), body_part="CHEST", description="W CONTRAST",
                       max_priors=0)]
    assert chosen(protocols, seen).name == "chest CT with contrast"
    alone = facts(CURRENT, SERIES, [CURRENT])  # no priors: the one for a first study is more specific
    assert alone.priors == 0 and chosen(protocols, alone).name == "first chest CT"
    assert chosen(protocols[3:4], seen) is None  # none fits: the built-in hanging stays
    restricted = facts(study("r", "20260315"), SERIES, PRIORS)
    assert restricted.priors == 3
    hidden = StudySummary("v", 7, None, None, "20260315", ["CT"], "", 1, 1, restricted=True)
    assert facts(hidden, SERIES, PRIORS).priors == 0  # a restricted patient's priors are never hung


def test_a_users_protocol_wins_over_the_sites_as_specific() -> None:
    seen = facts(CURRENT, SERIES, [CURRENT])
    site = named("b site", Scope.SITE, modalities=("CT",))
    own = named("z mine", Scope.USER, modalities=("CT",))
    assert chosen([site, own], seen) is own
    broader_own = named("a mine", Scope.USER)
    assert chosen([site, broader_own], seen) is site  # the more specific still wins


def test_placements_follow_the_rules_in_the_layouts_order() -> None:
    protocol = Protocol("chest", layout="2x2", viewports=(
        SeriesRule(description="lung", preset="Lung"), SeriesRule(study="prior"),
        SeriesRule(description="*mpr*", nth=2), SeriesRule(modality="ct", nth=3)))
    prior = [series("q1", "Axial 5 mm")]
    placed = placements(protocol, SERIES, prior)
    assert [p.series.series_uid if p else None for p in placed] == ["s2", "q1", None, "s3"]
    assert placed[0] is not None and placed[0].preset == "Lung"
    assert placements(protocol, SERIES, [])[1] is None  # no prior: that viewport stays empty


@pytest.mark.parametrize(("change", "reason"), [
    ({"layout": "4x4"}, "layout must be one of"),
    ({"viewports": [{}, {}, {}]}, "places 3 series but the 1x2 layout has 2"),
    ({"viewports": [{"study": "older"}]}, "current study, the prior or none"),
    ({"viewports": [{"preset": "Sunset"}]}, "window preset must be one of"),
    ({"viewports": [{"nth": 0}]}, "1 to 20"),
    ({"match": {"min_priors": 3, "max_priors": 1}}, "fewest priors"),
    ({"match": {"colour": "red"}}, "fields this version does not know: colour"),
    ({"name": ""}, "needs a name"),
    ({"sync": "yes"}, "sync is true or false"),
])
def test_a_bad_definition_is_refused_with_a_plain_reason(change: dict, reason: str) -> None:
    good = to_dict(Protocol("chest", layout="1x2", viewports=(SeriesRule(),)))
    assert from_dict(good) == Protocol("chest", layout="1x2", viewports=(SeriesRule(),))
    with pytest.raises(UsageError, match=reason):
        from_dict({**good, **change})


def test_a_shared_list_is_the_sites_and_names_are_unique() -> None:
    mine = to_dict(Protocol("chest", Scope.USER))
    (shared,) = from_list([{**mine, "match": {"modalities": "ct, mr"}}], managed=True)
    assert shared.scope == Scope.SITE and shared.managed and shared.match.modalities == ("CT", "MR")
    with pytest.raises(UsageError, match="same name"):
        from_list([mine, {**mine, "name": "CHEST"}])
