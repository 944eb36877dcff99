"""Enhanced multi-frame images placed frame by frame: an Enhanced CT whose frames are written out
of spatial order reads, synchronises and stacks in 3D exactly like the same slices sent one by one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.demo.studies import Patient, ct_study, to_bytes
from app.imaging.volume import build_volume
from app.store.ingest import parse
from tests.conftest import VaultEnv
from tests.imaging.frames import encoded, enhanced_from

ORDER = [3, 0, 5, 1, 4, 2]  # as an interleaved acquisition might write them


@pytest.fixture
def both(env: VaultEnv) -> tuple:
    """The same six slices as single-frame instances and as one enhanced image, opened from the vault."""
    slices = ct_study(Patient("ENH1", "Frames^Fiona"), slices=len(ORDER), size=24)
    enhanced = enhanced_from(slices, ORDER)
    items = [(f"s{i}", to_bytes(ds)) for i, ds in enumerate(slices)] + [("enhanced", encoded(enhanced))]
    report = env.vault.intake.import_bytes(env.login("tech"), items)
    assert report.imported == len(items) and not report.rejected
    rad = env.login("rad")
    return (env.vault.reading.open_series(rad, slices[0].SeriesInstanceUID),
            env.vault.reading.open_series(rad, enhanced.SeriesInstanceUID), slices, enhanced)


def test_geometry_comes_from_the_functional_groups(both: tuple) -> None:
    _, _, slices, enhanced = both
    parsed = parse(encoded(enhanced))
    assert parsed.frames == len(ORDER) and parsed.needs_header
    assert parsed.orientation == "[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]"
    assert parsed.pixel_spacing is not None and parsed.position is not None
    positions = np.array(json.loads(parsed.frame_positions))
    assert np.allclose(positions, [slices[k].ImagePositionPatient for k in ORDER])


def test_frames_are_ordered_by_position_and_read_like_the_slices(both: tuple) -> None:
    single, multi, _, _ = both
    assert len(multi) == len(single) == len(ORDER)
    for i in range(len(single)):
        assert np.array_equal(multi.values(i), single.values(i))  # HU through the shared rescale
        assert np.allclose(multi.plane(i).origin, single.plane(i).origin)
        assert multi.matching_index(single.plane(i)) == i  # synchronised scrolling finds it
    assert multi.windows(0) == single.windows(0)
    assert np.array_equal(multi.volume(), single.volume())


def test_an_enhanced_image_builds_the_same_volume(both: tuple) -> None:
    single, multi, _, _ = both
    expected, volume = build_volume(single), build_volume(multi)
    assert volume.data.dtype == np.int16 and np.array_equal(volume.data, expected.data)
    assert volume.spacing == pytest.approx(expected.spacing)
    assert np.allclose(volume.origin, expected.origin) and np.allclose(volume.normal, expected.normal)
