"""The demo home's studies look like anatomy: a chest CT with distinct tissues where a body has
them, and a brain MR; the tests' own phantoms (ct_study's default) are left as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.demo.anatomy import brain_mr, chest_ct
from app.demo.home import make_demo_home
from app.security import totp
from app.vault import Vault

HU_BANDS = {"air": (-2000, -950), "lung": (-950, -600), "fat": (-150, -50), "soft tissue": (0, 100),
            "bone": (300, 4000)}


def bands(hu: np.ndarray) -> dict[str, float]:
    """The share of the slice in each tissue's HU band."""
    return {name: float(((hu >= lo) & (hu < hi)).mean()) for name, (lo, hi) in HU_BANDS.items()}


def test_the_chest_ct_has_air_lung_fat_soft_tissue_and_bone_in_their_places() -> None:
    size, slices = 128, 40
    hu = chest_ct(slices)(size, slices // 2).astype(float) - 1024
    shares = bands(hu)
    assert all(share > 0.005 for share in shares.values()), shares
    half = size // 2
    lung = hu < -600
    assert lung[:, :half].mean() > 0.06 and lung[:, half:].mean() > 0.06, "a lung on each side"
    spine = hu[int(size * 0.62):int(size * 0.70), half - 3:half + 3]
    assert (spine > 300).any(), "the spine, behind, in the midline"
    assert (hu[:4, :4] < -950).all(), "air around the body"
    lowest = chest_ct(slices)(size, slices - 1).astype(float) - 1024
    right_side = (slice(half - 20, half + 20), slice(half - 45, half - 25))  # the patient's right lung base
    assert np.median(hu[right_side]) < -600 < 0 < np.median(lowest[right_side]), "the liver below the lung"
    assert np.array_equal(chest_ct(slices)(size, 3), chest_ct(slices)(size, 3)), "the same pixels each time"


def test_a_nodule_is_in_the_current_chest_ct_and_not_in_its_prior() -> None:
    size, slices = 256, 60  # 350 mm across: 0.73 pixels a millimetre
    at = round(0.45 * (slices - 1))
    current, prior = (chest_ct(slices, nodule_mm=nodule)(size, at).astype(float) - 1024 for nodule in (14, 0))
    new = (current > -200) & (prior < -600)  # soft tissue where the prior has lung
    assert 0.6 * np.pi * (7 * size / 350) ** 2 < new.sum() < 1.4 * np.pi * (7 * size / 350) ** 2
    far = chest_ct(slices, nodule_mm=14)(size, at + 6).astype(float) - 1024  # 15 mm away
    assert np.array_equal(far, chest_ct(slices)(size, at + 6).astype(float) - 1024)


def test_the_brain_mr_has_scalp_skull_grey_and_white_matter_and_ventricles() -> None:
    size, slices = 128, 24
    signal = brain_mr(slices)(size, 9).astype(float)
    classes = {"scalp": signal > 820, "skull": (signal > 0) & (signal < 120),
               "csf": (signal > 150) & (signal < 260), "grey": (signal > 460) & (signal < 600),
               "white": (signal > 660) & (signal < 780)}
    assert all(mask.mean() > 0.005 for mask in classes.values()), {k: m.mean() for k, m in classes.items()}
    centre = signal[size // 2 - 8:size // 2 + 8, size // 2 - 10:size // 2 + 10]
    assert (centre < 260).sum() > 10, "the lateral ventricles, dark by the midline"


def test_the_demo_home_holds_the_anatomical_chest_ct(tmp_path: Path) -> None:
    demo = make_demo_home(tmp_path / "home")
    rad = next(u for u in demo.users if u.name == "rad")
    with Vault.open(demo.home, lambda: demo.passphrase) as vault:
        session = vault.accounts.login(rad.name, rad.password, totp.current_code(rad.totp_secret))[1]
        [series] = vault.reading.series(session, demo.featured)
        images = vault.reading.open_series(session, series.series_uid)
        hu = images.values(len(images) // 2)
    assert sum(share > 0.005 for share in bands(hu).values()) >= 4, bands(hu)
