"""A client learns the service's methods from the service (app.service.offer): every type a method
declares is written as text and read back as the same type; a type from elsewhere, or text that is
not a type, is refused rather than imported or evaluated."""

from __future__ import annotations

import pytest

from app.service.methods import METHODS, OFFERED
from app.service.offer import Unreadable, describe, resolve
from app.store.records import StudySummary


def test_every_offered_type_reads_back_as_itself() -> None:
    hints = {hint for method in METHODS.values() for hint in (method.returns, *(h for _, h in method.params))}
    assert len(OFFERED) == len(METHODS)
    for hint in hints:
        assert describe(resolve(describe(hint))) == describe(hint)
    assert resolve("list[app.store.records.StudySummary] | None") == list[StudySummary] | None


@pytest.mark.parametrize("text", ["os.system", "subprocess.Popen", "app.service.offer.resolve",
                                  "list[str", "str]", "__import__('os')", "list[str] str", ""])
def test_a_type_from_elsewhere_or_not_a_type_is_refused(text: str) -> None:
    with pytest.raises(Unreadable):
        resolve(text)
