"""The vault: the composition root that opens the store and puts the gate and services around it.

UI, CLI, demo and selftest reach patient data only through the services here
(``vault.reading.studies(session)``), each of which passes the gate (:mod:`app.vault.gate`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from app.audit.events import AuditEvent, EventType, Outcome
from app.errors import CustodianError, UsageError, VaultExists
from app.store.books import MetaBook, StudyBook
from app.store.core import StorageHealth, StoreCore
from app.store.patients import REDERIVE_KEY, Demographics, rederive
from app.vault.gate import EMERGENCY_ALERT, Gate

if TYPE_CHECKING:
    from app.net.watch import PacsStatus
    from app.security.accounts import Enrolment
    from app.security.keys import PassphraseSource
    from app.security.policy import SitePolicy
    from app.security.sealing import Sealer
    from app.vault.accounts import AccountService
    from app.vault.admin import AdminService
    from app.vault.cache import CacheService
    from app.vault.disclosure import DisclosureService
    from app.vault.intake import IntakeService
    from app.vault.key_images import KeyImageService
    from app.vault.nodes import NodeService
    from app.vault.outbox import OutboxService
    from app.vault.pacs import PacsService
    from app.vault.protocols import ProtocolService
    from app.vault.reading import ReadingService
    from app.vault.states import StatesService
    from app.vault.trail import TrailService

T = TypeVar("T")
_BUILDING = threading.RLock()  # (reentrant: building the PACS service builds the intake, cache, outbox)


class built_once(cached_property[T]):
    """A service of the vault, built on its first use and once only, whichever thread asks first
    (the workstation service answers on several; Python 3.12 took the lock out of cached_property)."""

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> T | Self:
        with _BUILDING:
            return super().__get__(instance, owner)


@dataclass(frozen=True)
class Reach:
    """Whether a peer the workstation depends on answers."""

    name: str  # "PACS" or "audit repository"
    configured: bool
    answers: bool
    detail: str


class Vault:
    embedded = True  # this process opened the store and does the station's own work (service: False)

    def __init__(self, core: StoreCore) -> None:
        self._core = core
        self._gate = Gate(core)
        self.home = core.home
        self.notices: list[str] = []  # what opening did that the person opening should know
        self._rederive_patients()

    # ------------------------------------------------------------------ the services
    # Each is built (and its module, with what it imports, loaded) when first used, so a command
    # that only lists studies does not load networking, media or DICOM (issue 24).
    @built_once
    def accounts(self) -> AccountService:
        from app.vault.accounts import AccountService

        return AccountService(self._gate)

    @built_once
    def reading(self) -> ReadingService:
        from app.vault.reading import ReadingService

        return ReadingService(self._gate, self.accounts)

    @built_once
    def intake(self) -> IntakeService:
        from app.vault.intake import IntakeService

        return IntakeService(self._gate)

    @built_once
    def nodes(self) -> NodeService:
        from app.vault.nodes import NodeService

        return NodeService(self._gate)

    @built_once
    def cache(self) -> CacheService:
        from app.vault.cache import CacheService

        return CacheService(self._gate, self.intake)

    @built_once
    def outbox(self) -> OutboxService:
        from app.vault.outbox import OutboxService

        return OutboxService(self._gate)

    @built_once
    def pacs(self) -> PacsService:
        from app.vault.pacs import PacsService

        return PacsService(self._gate, self.intake, self.cache, self.outbox)

    @built_once
    def disclosure(self) -> DisclosureService:
        from app.vault.disclosure import DisclosureService

        return DisclosureService(self._gate, self.accounts)

    @built_once
    def trail(self) -> TrailService:
        from app.vault.trail import TrailService

        return TrailService(self._gate)

    @built_once
    def admin(self) -> AdminService:
        from app.vault.admin import AdminService

        return AdminService(self._gate)

    @built_once
    def protocols(self) -> ProtocolService:
        """Hanging protocols, the site's and each reader's."""
        from app.vault.protocols import ProtocolService

        return ProtocolService(self._gate)

    @built_once
    def key_images(self) -> KeyImageService:
        """Key images marked while reading, and the key object documents made of them."""
        from app.vault.key_images import KeyImageService

        return KeyImageService(self._gate)

    @built_once
    def states(self) -> StatesService:
        """Presentation states: a reader's saved as GSPS in the study, and those that apply to a series."""
        from app.vault.states import StatesService

        return StatesService(self._gate)

    # ------------------------------------------------------------------ creation and opening
    @staticmethod
    def exists(home: Path) -> bool:
        return StoreCore.exists(home)

    @classmethod
    def create(cls, home: Path, *, admin: str, password: str, passphrase: str | None,
               use_keyring: bool | None = None, sealer: Sealer | None = None) -> tuple[Vault, Enrolment]:
        """A new vault; with a ``sealer`` (a service vault: PKCS#11 token or key file) its master
        key is sealed by it, and ``passphrase`` and ``use_keyring`` are not used."""
        if cls.exists(home):
            raise VaultExists(f"A vault already exists in {home}; it was left untouched.")
        from app.security import passwords

        passwords.check_rules(password, admin)
        core = StoreCore.create(home, passphrase=passphrase, use_keyring=use_keyring, sealer=sealer)
        vault = cls(core)
        enrolment = vault._gate.first_admin(admin, password)
        core.finish_creation()  # the vault exists from this moment
        return vault, enrolment

    @classmethod
    def open(cls, home: Path, passphrase_source: PassphraseSource,
             renames: Mapping[str, str] | None = None) -> Vault:
        """``renames`` (old user name -> new): made as the vault is upgraded to user names without
        case, which refuses names differing only in case; whoever can open the vault may make them
        (`custodian user rename` before the upgrade), and each is recorded in the trail."""
        vault = cls(StoreCore.open(home, passphrase_source, renames))
        for old, new in (renames or {}).items():
            vault._gate.note(AuditEvent(EventType.USER_CHANGE, detail={"renamed": old, "to": new,
                                                                       "before_upgrade": True}))
        return vault

    @classmethod
    def restore(cls, source: Path, home: Path, passphrase: str, *, vault_passphrase: str | None,
                use_keyring: bool | None = None, sealer: Sealer | None = None) -> Vault:
        """A backup made by ``admin.backup``, opened into ``home`` (which must hold no vault), its
        master keys protected on this machine, its index checked; recorded in its audit trail."""
        from app.store.contingency import restore_into

        restored = restore_into(source, home, passphrase, vault_passphrase=vault_passphrase,
                                use_keyring=use_keyring, sealer=sealer)
        vault = cls(restored.core)
        vault._gate.note(AuditEvent(EventType.RESTORE, detail={
            "backup": source.name, "sha256": restored.sha256, "made": restored.made,
            "instances": restored.instances,
            **({"checkpoint_key": "renewed"} if restored.checkpoint_key_renewed else {})}))
        return vault

    def close(self) -> None:
        if "cache" in self.__dict__:  # (built on first use: nothing to close otherwise)
            self.cache.close()
        self._core.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the station as a whole
    @property
    def policy(self) -> SitePolicy:
        return self._gate.policy

    @property
    def managed_settings(self) -> frozenset[str]:
        """The site policy settings the managed (signed) policy sets; nobody here may change them."""
        return frozenset(self._gate.rules.settings)

    @property
    def key_mode(self) -> str:
        return self._core.key_mode

    def storage_health(self) -> StorageHealth:
        """What the self-test reports of the index; no patient data is read, so no session."""
        return self._core.health()

    @property
    def read_only(self) -> bool:
        return self._gate.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._gate.read_only = value

    def watch_pacs(self) -> PacsStatus:
        """Whether the site's PACS answers; the sends that waited for it go out (the outbox's
        duty). A client of the service reads the service's last check instead."""
        return self.outbox.watch()

    def reachability(self) -> list[Reach]:
        """The PACS answers a C-ECHO; the audit repository takes what is queued (a normal sync)."""
        from app.net.association import echo
        from app.vault.nodes import site_pacs

        found = []
        node = site_pacs(self._gate.opening())
        if node is None:
            found.append(Reach("PACS", False, False, "no PACS node is set"))
        else:
            try:
                found.append(Reach("PACS", True, True,
                                   f"{node.name} answered in {echo(node, self.policy.ae_title).ms:.0f} ms"))
            except CustodianError as exc:
                found.append(Reach("PACS", True, False, str(exc)))
        forwarder = self.trail.forwarder()
        if not forwarder.status().configured:
            found.append(Reach("audit repository", False, False, "no audit repository is set"))
        else:
            try:
                found.append(Reach("audit repository", True, True,
                                   f"reachable; {forwarder.drain().sent} queued event(s) sent"))
            except CustodianError as exc:
                found.append(Reach("audit repository", True, False, str(exc)))
        return found

    def enter_emergency_mode(self) -> None:
        """Emergency-mode operation (HIPAA 164.308(a)(7)(ii)(C)): with the PACS and the audit
        repository both down, the cache is read-only — reading (and the audit trail, which queues)
        go on; nothing is imported, sent, exported, shredded or reconfigured until a normal start.
        Refused while either answers: then there is no emergency."""
        reach = self.reachability()
        up = [r.name for r in reach if r.answers]
        if up:
            answering = f"The {' and the '.join(up)} answer{'s' if len(up) == 1 else ''}"
            raise UsageError(f"{answering}: start normally. Emergency mode is for when the PACS and the "
                             "audit repository are both down.")
        self._gate.read_only = True
        self._gate.note(AuditEvent(EventType.SECURITY_ALERT, Outcome.MINOR_FAILURE, detail={
            "alert": EMERGENCY_ALERT, **{r.name: r.detail for r in reach}}))

    def security_alert(self, alert: str, **detail: object) -> None:
        """A Security Alert the workstation itself raises (not a user's action)."""
        self._gate.note(AuditEvent(EventType.SECURITY_ALERT, Outcome.SERIOUS_FAILURE,
                                   detail={"alert": alert, **detail}))

    # ------------------------------------------------------------------ an older vault
    def _rederive_patients(self) -> None:
        """A vault from before patient records: studies that shared a record with another
        patient's demographics get their own (once; each split is in the audit trail)."""
        core = self._core
        with core.reading() as conn:
            if MetaBook(conn).get(REDERIVE_KEY) is None:
                return
        with core.write_lock(), core.transaction() as conn:
            splits = rederive(conn, self._own_demographics)
            for split in splits:
                self._gate.note(AuditEvent(
                    EventType.PATIENT_RECORD, Outcome.MINOR_FAILURE, studies=(split.study_uid,),
                    patients=(split.reference, split.was),
                    detail={"why": "the study shared a patient record with another patient's name or birth "
                                   "date (or had no Patient ID); it now has a record of its own"}))
        if splits:
            self.notices.append(
                f"{len(splits)} stud{'y' if len(splits) == 1 else 'ies'} had been filed under another "
                "patient's record (no Patient ID, or another name or birth date under the same ID) and now "
                "have records of their own; the audit trail lists them (type patient-record).")

    def _own_demographics(self, study_uid: str) -> Demographics | None:
        """What a stored study's first instance says of its patient (None if it cannot be read)."""
        from app.store.blobs import BlobDamaged
        from app.store.importer import demographics
        from app.store.ingest import DicomDirectory, Rejected, parse

        with self._core.reading() as conn:
            first = StudyBook(conn).first_instance(study_uid)
        if first is None:
            return None
        try:
            return demographics(parse(self._core.plaintext(first.sop_uid, study_uid, first.blob)))
        except (BlobDamaged, OSError, Rejected, DicomDirectory):
            return None
