"""``custodian selftest``: is this installation fit to hold and show patient data?

Run after installing, after an update and by support: the cryptography against published
known-answer vectors (a broken or substituted library must not encrypt anyone's images), the
image decoders and VTK on real pixels (and Qt, from the UI package), whether memory could reach the
disk in plaintext (core dumps, unencrypted swap), the vault's index (SQLCipher's page
authentication and SQLite's own check) and key mode, the clock (TOTP and audit times depend on
it), and whether the PACS and the audit repository answer. Nothing here reads patient data, so
it needs no login; a check that cannot be made is reported as skipped with the reason, never as
passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import CustodianError
from app.security import process

if TYPE_CHECKING:
    from app.vault import Vault

PASS, FAIL, SKIP = "pass", "fail", "skip"
CLOCK_SLACK = timedelta(minutes=5)  # TOTP accepts ±30 s; audit times must not run backwards
EARLIEST_YEAR = 2025  # a clock before this was never set
KEY_PROTECTION = {"keyring": "OS keyring", "passphrase": "passphrase-wrapped (no OS keyring)",
                  "keyfile": "sealed with a key file only the service account reads",
                  "pkcs11": "sealed in a PKCS#11 token"}


@dataclass(frozen=True)
class Check:
    group: str
    name: str
    result: str  # PASS, FAIL or SKIP
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _known_answer(group: str, name: str, compute: Callable[[], bytes | str], expected: str) -> Check:
    try:
        got = compute()
    except Exception as exc:  # a missing or broken library is exactly what this finds
        return Check(group, name, FAIL, f"could not run ({type(exc).__name__})")
    got_hex = got.hex() if isinstance(got, bytes) else got
    if got_hex != expected:
        return Check(group, name, FAIL, "wrong answer to the published test vector")
    return Check(group, name, PASS)


def crypto_checks() -> list[Check]:
    """Every primitive the vault, the sessions and the audit trail use, on published vectors."""
    from argon2.low_level import Type, hash_secret_raw
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from app.security import totp

    ed25519 = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    rfc6238 = base64.b32encode(b"12345678901234567890").decode()
    vectors: list[tuple[str, Callable[[], bytes | str], str]] = [
        ("AES-256-GCM (GCM spec test case 14)", lambda: AESGCM(bytes(32)).encrypt(bytes(12), bytes(16), None),
         "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"),
        ("SHA-256 (FIPS 180-4 'abc')", lambda: hashlib.sha256(b"abc").digest(),
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("HMAC-SHA-256 (RFC 4231 case 2)",
         lambda: hmac.new(b"Jefe", b"what do ya want for nothing?", "sha256").digest(),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        ("Ed25519 (RFC 8032 test 1)", lambda: ed25519.sign(b""),
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
         "d25bf5f0595bbe24655141438e7a100b"),
        ("Argon2id (reference implementation vector)",
         lambda: hash_secret_raw(b"password", b"somesalt", 2, 65536, 1, 32, Type.ID),
         "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"),
        # RFC 6238's SHA-1 vector at T=59 is 94287082; six-digit codes are its last six digits.
        ("TOTP (RFC 6238, T=59)", lambda: totp.current_code(rfc6238, 59), "287082"),
    ]
    return [_known_answer("crypto", name, compute, expected) for name, compute, expected in vectors]


def decoder_checks() -> list[Check]:
    """Each compressed transfer syntax decoded from pydicom's own test files, exact against the
    uncompressed original where the compression is lossless."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder
    from pydicom.uid import HTJ2KLossless

    def decoded(name: str) -> np.ndarray:
        return pydicom.dcmread(str(get_testdata_file(name))).pixel_array

    checks = []
    try:
        reference = decoded("MR_small.dcm")
    except Exception as exc:
        why = f"could not read an uncompressed image ({type(exc).__name__})"
        return [Check("decoders", "pydicom", FAIL, why)]
    for label, name in (("JPEG-LS lossless", "MR_small_jpeg_ls_lossless.dcm"),
                        ("JPEG 2000 lossless", "MR_small_jp2klossless.dcm"), ("RLE", "MR_small_RLE.dcm")):
        try:
            same = np.array_equal(decoded(name), reference)
            checks.append(Check("decoders", label, PASS if same else FAIL,
                                "" if same else "decoded pixels differ from the original"))
        except Exception as exc:
            checks.append(Check("decoders", label, FAIL, f"could not decode ({type(exc).__name__})"))
    try:
        rgb = decoded("SC_rgb_jpeg_dcmtk.dcm")
        checks.append(Check("decoders", "JPEG baseline", PASS if rgb.shape == (100, 100, 3) else FAIL))
    except Exception as exc:
        checks.append(Check("decoders", "JPEG baseline", FAIL, f"could not decode ({type(exc).__name__})"))
    available = get_decoder(HTJ2KLossless).is_available
    checks.append(Check("decoders", "HTJ2K", PASS if available else FAIL,
                        "" if available else "no HTJ2K decoder plugin (pylibjpeg-openjpeg) is installed"))
    return checks


def _vtk_check() -> Check:
    try:
        import numpy as np

        from app.imaging.display import Window
        from app.imaging.mpr import Reslicer
        from app.imaging.volume import Volume, reference_slice

        data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
        axes = np.eye(3)
        volume = Volume(data, (2.0, 1.0, 1.0), np.zeros(3), axes[0], axes[1], axes[2], Window(40, 400))
        same = np.allclose(Reslicer(volume).slice("coronal", 2), reference_slice(volume, "coronal", 2))
    except Exception as exc:
        return Check("display", "VTK", FAIL, f"VTK could not reslice ({type(exc).__name__})")
    return Check("display", "VTK", PASS if same else FAIL, "" if same else "VTK's reslice differs from numpy")


def vault_checks(home: Path, open_vault: Callable[[], Vault | None], *, network: bool = True,
                 now: datetime | None = None) -> Iterator[Check]:
    """The index's integrity, the key mode, the clock against the audit trail and (``network``)
    the PACS and audit repository the vault names. ``open_vault`` opens the vault in ``home``
    (None where there is none yet): the caller holds the door, so the self-test, which the vault
    itself uses for its network checks, never imports it."""
    try:
        vault = open_vault()
    except CustodianError as exc:
        yield Check("vault", "vault", FAIL, str(exc))
        return
    if vault is None:
        yield Check("vault", "vault", SKIP, f"no vault in {home} yet")
        return
    with vault:
        health = vault.storage_health()
        yield Check("vault", "key protection", PASS, KEY_PROTECTION.get(health.key_mode, health.key_mode))
        damaged = health.cipher_errors + ([] if health.quick_check == "ok" else [health.quick_check])
        yield Check("vault", "index integrity", FAIL if damaged else PASS,
                    f"{len(damaged)} problem(s): run 'custodian verify' and restore from a backup"
                    if damaged else "SQLCipher page authentication and SQLite check clean, "
                                    f"schema {health.schema}")
        yield clock_check(health.newest_audit, now)
        if damaged:
            yield Check("network", "PACS and audit repository", SKIP, "the index is damaged")
        elif network:
            yield from network_checks(vault)


def clock_check(newest_audit: datetime | None, now: datetime | None = None) -> Check:
    now = now or datetime.now(UTC)
    if now.year < EARLIEST_YEAR:
        return Check("vault", "clock", FAIL, f"the system clock says {now:%Y-%m-%d}: set it")
    if newest_audit is not None and now < newest_audit - CLOCK_SLACK:
        behind = int((newest_audit - now).total_seconds() // 60)
        return Check("vault", "clock", FAIL, f"the clock is {behind} minute(s) behind the audit trail's "
                                             "newest record: authenticator codes will fail; set the "
                                             "system clock")
    return Check("vault", "clock", PASS, f"{now:%Y-%m-%d %H:%M} UTC, not behind the audit trail")


def network_checks(vault: Vault) -> Iterator[Check]:
    """The PACS answers a C-ECHO; the audit repository takes what is queued (a normal sync)."""
    for reach in vault.reachability():
        yield Check("network", reach.name, (PASS if reach.answers else FAIL) if reach.configured else SKIP,
                    reach.detail)


def memory_checks(swap: list[process.Swap] | None = None) -> list[Check]:
    """What the OS could write of decrypted images and keys to disk: a core file, or swap."""
    if process.hardened():
        core = Check("memory", "core dumps", PASS, "off, and other processes cannot read this one's memory")
    else:
        core = Check("memory", "core dumps", FAIL, "a crash could write memory to a core file")
    areas = process.swap_areas() if swap is None else swap
    plain = [a.device for a in areas if not a.encrypted]
    if plain:
        swapped = Check("memory", "swap", FAIL, f"swap on {', '.join(plain)} is not encrypted: decrypted "
                        "images and keys could be written to it; use encrypted swap or none")
    else:
        swapped = Check("memory", "swap", PASS, "encrypted" if areas else "none")
    return [core, swapped]


def run(home: Path, open_vault: Callable[[], Vault | None], *, network: bool = True,
        qt: Callable[[], Check] | None = None) -> list[Check]:
    """Every check; ``qt`` is the UI's own check (the core does not load Qt)."""
    return [*crypto_checks(), *decoder_checks(),
            qt() if qt else Check("display", "Qt", SKIP, "not checked here"), _vtk_check(),
            *memory_checks(), *vault_checks(home, open_vault, network=network)]


def report(checks: list[Check]) -> str:
    marks = {PASS: "ok  ", FAIL: "FAIL", SKIP: "skip"}
    lines = [f"{marks[c.result]}  {c.group:<8} {c.name}" + (f" — {c.detail}" if c.detail else "")
             for c in checks]
    failed = sum(c.result == FAIL for c in checks)
    skipped = sum(c.result == SKIP for c in checks)
    summary = f"{failed} failed" if failed else "all passed"
    lines.append(f"{len(checks)} checks: {summary}" + (f", {skipped} skipped." if skipped else "."))
    return "\n".join(lines)
