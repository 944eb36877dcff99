"""Administration: users, the site policy, keys, backup, integrity, shredding, restriction."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from app.audit.events import AuditEvent, EventType, Outcome
from app.audit.log import fingerprint
from app.errors import CustodianError, UsageError
from app.security.accounts import Enrolment, User
from app.security.directory import DirectoryBook, DirectoryConfig, DirectoryUnavailable, mapping_text
from app.security.policy import SitePolicy
from app.security.roles import Action, Role
from app.security.sealing import KeyFileSealer, Sealer
from app.store.blobs import BlobDamaged
from app.store.books import StoredInstance, StudyBook
from app.store.contingency import BackupResult, write_backup
from app.store.importer import Progress
from app.store.records import Damage, VerifyReport
from app.store.workers import IO_THREADS
from app.vault.gate import Access, Service, gated


@dataclass(frozen=True)
class DirectoryCheck:
    """Whether the directory in use answers Custodian's service account over verified TLS."""

    url: str
    answers: bool
    ms: float | None
    detail: str


@dataclass(frozen=True)
class KeyMove:
    """Where the master key went: the key modes before and after, and the new checkpoint key."""

    source: str
    target: str
    checkpoint_key: str  # its fingerprint
    checkpoints: int  # stored checkpoints signed again with it


class AdminService(Service):
    @gated(Action.MANAGE_USERS)
    def add_user(self, door: Access, name: str, role: Role, password: str, full_name: str = "") -> Enrolment:
        with door.store.transaction():
            enrolment = door.accounts.add(name, role, password, full_name)
            door.record(AuditEvent(EventType.USER_CHANGE, user=door.actor, detail={"added": name,
                                                                                   "role": role.value}))
        return enrolment

    @gated(Action.MANAGE_USERS)
    def disable_user(self, door: Access, name: str) -> None:
        with door.store.transaction():
            user = door.accounts.disable(name)
            door.sessions.end_user(user.id)
            door.record(AuditEvent(EventType.USER_CHANGE, user=door.actor, detail={"disabled": user.name}))

    @gated(Action.MANAGE_USERS)
    def rename_user(self, door: Access, name: str, new_name: str) -> User:
        """A user's new name (two that differ only in case, a misspelt one); the account, its
        sessions and grants stay the same, and the trail links the two names."""
        with door.store.transaction():
            user, old = door.accounts.rename(name, new_name)
            door.record(AuditEvent(EventType.USER_CHANGE, user=door.actor, detail={"renamed": old,
                                                                                   "to": user.name}))
        return user

    @gated(Action.MANAGE_USERS)
    def list_users(self, door: Access) -> list[User]:
        with door.store.reading():
            return door.accounts.list()

    @gated(Action.SITE_POLICY)
    def set_policy(self, door: Access, name: str, value: str) -> SitePolicy:
        managed = door.rules.settings
        if name in managed:
            raise UsageError(f"'{name}' is set by the site's managed policy ({managed[name]}); it "
                             "cannot be changed at the workstation.")
        with door.store.transaction() as conn:
            local = SitePolicy.load(conn).with_setting(name, value)
            local.save(conn)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={"setting": name,
                                                                                     "value": value}))
        return door.set_policy(local)

    @gated(Action.SITE_POLICY)
    def set_directory(self, door: Access, config: DirectoryConfig, secret: str,
                      radius_secret: str = "") -> DirectoryCheck:
        """The site's directory, its service account's secret and the MFA server's shared secret
        (kept in the vault), and whether the directory answers with them now. Where the managed
        policy sets a directory, that one is used, with these secrets."""
        if not secret:
            raise UsageError("The directory's service account needs its secret (CUSTODIAN_DIRECTORY_SECRET "
                             "or the prompt).")
        if config.radius and not radius_secret:
            raise UsageError("The MFA server needs the shared secret it has for this station "
                             "(CUSTODIAN_RADIUS_SECRET or the prompt).")
        with door.store.transaction() as conn:
            DirectoryBook(conn).save(config, secret, radius_secret)
            door.record(AuditEvent(EventType.POLICY_CHANGE, user=door.actor, detail={
                "directory": config.url, "base": config.base, "roles": mapping_text(config.roles),
                "second_factor": config.second_factor, "radius": config.radius,
                "managed": door.rules.directory is not None}))
        directory = door.directory()
        assert directory is not None  # (just saved)
        try:
            return DirectoryCheck(directory.config.url, True, directory.probe(), "answers")
        except DirectoryUnavailable as exc:
            return DirectoryCheck(directory.config.url, False, None, str(exc))

    @gated(Action.ROTATE_KEYS)
    def rotate_keys(self, door: Access, passphrase: str | None = None) -> int:
        """New index key (the index re-encrypted under it) and new master key, which re-wraps it
        and every data key; no image is re-encrypted."""
        if door.store.key_mode == "passphrase" and not passphrase:
            raise UsageError("Key rotation needs the vault passphrase.")
        with door.store.rotation(passphrase) as count:
            door.record(AuditEvent(EventType.KEY_ROTATION, user=door.actor,
                                   detail={"data_keys": count, "index_key": "renewed"}))
        return count

    @gated(Action.ROTATE_KEYS)
    def change_passphrase(self, door: Access, passphrase: str) -> None:
        """A new vault passphrase (passphrase mode): the master keys re-wrapped under it."""
        if not passphrase.strip():
            raise UsageError("Choose a new passphrase (CUSTODIAN_NEW_PASSPHRASE, or at the prompt).")
        door.store.change_passphrase(passphrase)
        door.record(AuditEvent(EventType.KEY_ROTATION, user=door.actor, detail={"passphrase": "changed"}))

    @gated(Action.ROTATE_KEYS)
    def move_master_key(self, door: Access, sealer: Sealer | None = None) -> KeyMove:
        """Seal every master key under a PKCS#11 token (``sealer``) or back under a key file
        (None), with a new audit checkpoint key where the master now lives (the stored checkpoints
        signed again with it, the chain verified first); what protected the master before is
        destroyed. Masters are not renewed: ``rotate_keys`` afterwards retires any old copy."""
        before = door.audit.signing_key
        move = None
        try:
            with door.store.master_move(sealer or KeyFileSealer()) as move:
                door.record(AuditEvent(EventType.KEY_ROTATION, user=door.actor, detail={
                    "master_key": "moved", "from": move.source, "to": move.target,
                    "checkpoint_key": fingerprint(move.signer),
                    "previous_checkpoint_key": door.audit.key_id}))
                signed = door.audit.sign_again(move.signer)  # this move's own record's included
                door.audit.signing_key = move.signer
        except BaseException:
            if move is None or not move.committed:
                door.audit.signing_key = before
            raise
        return KeyMove(move.source, move.target, fingerprint(move.signer), signed)

    @gated(Action.BACKUP)
    def backup(self, door: Access, out: Path, passphrase: str, *, written_to: Path | None = None
               ) -> BackupResult:
        """The whole vault as one encrypted file that opens on another machine with ``passphrase``.
        ``written_to``: where it is made when the workstation service hands it on to a client,
        which puts it at ``out`` (the name recorded)."""
        made = write_backup(door.store, written_to or out, passphrase)
        door.record(AuditEvent(EventType.BACKUP, user=door.actor, detail={
            "file": out.name, "instances": made.instances, "missing": made.missing, "sha256": made.sha256}))
        return replace(made, path=out)

    @gated(Action.VERIFY)
    def verify(self, door: Access, progress: Progress | None = None) -> VerifyReport:
        with door.store.reading() as conn:
            stored = StudyBook(conn).instances()
            mismatched = StudyBook(conn).manifest_mismatches()
        report = VerifyReport(instances=len(stored))

        def check(instance: StoredInstance) -> Damage | None:
            try:
                plain = door.store.plaintext(instance.sop_uid, instance.study_uid, instance.blob)
            except (BlobDamaged, CustodianError) as exc:
                return Damage(instance.sop_uid, str(exc))
            if hashlib.sha256(plain).hexdigest() != instance.sha256:
                return Damage(instance.sop_uid, "content does not match its recorded SHA-256")
            return None

        with ThreadPoolExecutor(IO_THREADS) as pool:
            for done, damage in enumerate(pool.map(check, stored), 1):
                if damage:
                    report.damaged.append(damage)
                if progress:
                    progress(done, len(stored))
        report.ok = report.instances - len(report.damaged)
        report.damaged.extend(Damage(None, "study manifest does not match its instances", study_uid=uid)
                              for uid in mismatched)
        door.record(AuditEvent(
            EventType.VERIFY, Outcome.SUCCESS if not report.damaged else Outcome.SERIOUS_FAILURE,
            user=door.actor, detail={"instances": report.instances, "damaged": len(report.damaged)}))
        return report

    @gated(Action.SHRED)
    def shred(self, door: Access, study_uid: str, reason: str) -> int:
        """Destroy a study irrecoverably: its data key goes, then its blobs and index rows."""
        if not reason.strip():
            raise UsageError("Shredding needs a stated reason (--reason).")
        return destroy(door, study_uid, door.actor, reason, forget_measurements=True)

    @gated(Action.RESTRICT_PATIENT)
    def restrict_patient(self, door: Access, patient_id: str, restricted: bool = True,
                         issuer: str = "") -> None:
        """Mark a patient as restricted (VIP, staff, legal hold): images only through break-glass.
        ``patient_id`` may be the reference of a patient without an ID ('noid:' and its study); every
        record with the Patient ID is marked, a conflicting one included."""
        with door.store.transaction() as conn:
            if not StudyBook(conn).restrict(patient_id, issuer, restricted):
                raise CustodianError("No cached patient has this Patient ID.")
            door.record(AuditEvent(EventType.PATIENT_RESTRICTION, user=door.actor,
                                   patients=(patient_id,), detail={"restricted": restricted}))


def destroy(door: Access, study_uid: str, actor: str, reason: str, *,
            forget_measurements: bool = False) -> int:
    """A study destroyed, its Shred event first (it names the patient and describes the study,
    both about to go); the number of instances."""
    with door.store.destroying(study_uid, forget_measurements=forget_measurements) as doomed:
        door.record(AuditEvent(EventType.SHRED, user=actor, studies=(study_uid,),
                               patients=(doomed.patient,) if doomed.patient else (),
                               detail={"reason": reason, "instances": doomed.instances}))
    return doomed.instances
