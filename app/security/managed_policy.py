"""The managed site policy: settings the hospital's IT sets for every workstation, signed with
the site's Ed25519 key, which nobody at the workstation can weaken.

Two files in a system location only administrators of the machine can write (see
:data:`SYSTEM_DIR`): ``site-key.pub``, the site's public key (the trust anchor, installed with
the package), and ``site-policy.json``, ``{"policy": {...}, "signature": "<base64>"}`` where the
signature covers the canonical JSON of ``policy`` (sorted keys, no spaces). The environment
variables ``CUSTODIAN_SITE_POLICY`` and ``CUSTODIAN_SITE_KEY`` name further files (for a test
site); they add to the system location, never replace it, so unsetting them removes nothing the
site installed.

A policy that does not verify stops the application: the settings it should enforce cannot be
known, and running without them would be running with weaker ones (fail closed).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from app.audit.repository import Repository
from app.errors import CustodianError, UsageError
from app.net.nodes import Node
from app.security.directory import DirectoryConfig
from app.security.roles import Field, Role, narrowed
from app.security.tls import TlsIdentity

if TYPE_CHECKING:
    from app.imaging.protocols import Protocol

POLICY_FILE, KEY_FILE = "site-policy.json", "site-key.pub"
if sys.platform == "win32":
    SYSTEM_DIR = Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Custodian"
elif sys.platform == "darwin":
    SYSTEM_DIR = Path("/Library/Application Support/Custodian")
else:
    SYSTEM_DIR = Path("/etc/custodian")


class PolicyRefused(CustodianError):
    """The managed policy is there but cannot be trusted; the application must not start."""


@dataclass(frozen=True)
class ManagedPolicy:
    settings: dict[str, object]
    source: Path


VISIBLE_FIELDS_KEY = "visible_fields"  # role -> the demographic fields it is shown (fewer only)
NODES_KEY = "nodes"  # the PACS nodes every workstation of the site talks to
REPOSITORY_KEY = "audit_repository"  # where every workstation's audit trail goes
DIRECTORY_KEY = "directory"  # the site's LDAP or Active Directory and its groups' roles
PROTOCOLS_KEY = "hanging_protocols"  # the site's hanging protocols (app/imaging/protocols.py)


@dataclass(frozen=True)
class SiteRules:
    """A managed policy taken apart: site policy settings, demographics per role, PACS nodes and
    the audit repository (TLS material read from the files the policy names)."""

    settings: dict[str, object]
    visible: dict[Role, frozenset[Field]]
    nodes: tuple[Node, ...] = ()
    repository: Repository | None = None
    directory: DirectoryConfig | None = None
    protocols: tuple[Protocol, ...] = ()


def split(doc: dict[str, object]) -> SiteRules:
    """UsageError, saying what, when a part is not what the workstation can put in force."""
    rest = dict(doc)
    fields, nodes, repository = (rest.pop(VISIBLE_FIELDS_KEY, {}), rest.pop(NODES_KEY, []),
                                 rest.pop(REPOSITORY_KEY, None))
    try:
        if not isinstance(fields, dict):
            raise ValueError("it must map roles to lists of fields")
        visible = narrowed(fields)
    except ValueError as exc:
        raise UsageError(f"Site policy: visible fields: {exc}.") from None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise UsageError("Site policy: nodes must be a list of nodes (name, ae_title, host, port).")
    try:
        made = tuple(Node(**{k: v for k, v in n.items() if k != "tls"}, tls=_identity(n.get("tls")))
                     for n in nodes)
        repo = None
        if repository is not None:
            if not isinstance(repository, dict):
                raise TypeError("not an object")
            repo = Repository(**{k: v for k, v in repository.items() if k != "tls"},
                              identity=_identity(repository.get("tls")) or _missing_tls())
    except TypeError:
        raise UsageError("Site policy: a node or the audit repository has fields this version does not "
                         "know or lacks one it needs.") from None
    directory, protocols = rest.pop(DIRECTORY_KEY, None), rest.pop(PROTOCOLS_KEY, None)
    return SiteRules(rest, visible, made, repo,
                     DirectoryConfig.from_policy(directory) if directory is not None else None,
                     _protocols(protocols) if protocols is not None else ())


def _protocols(given: object) -> tuple[Protocol, ...]:
    from app.imaging.protocols import from_list  # (NumPy: only for a policy that sets protocols)

    try:
        return from_list(given, managed=True)
    except UsageError as exc:
        raise UsageError(f"Site policy: {exc}") from None


def _identity(files: object) -> TlsIdentity | None:
    """TLS trust anchors, certificate and key from the files ``{"ca", "cert", "key"}`` names."""
    if files is None:
        return None
    if not isinstance(files, dict) or set(files) != {"ca", "cert", "key"}:
        raise UsageError("Site policy: tls must name the files ca, cert and key.")
    return TlsIdentity.from_files(Path(files["ca"]), Path(files["cert"]), Path(files["key"]))


def _missing_tls() -> TlsIdentity:
    raise UsageError("Site policy: the audit repository needs tls (ca, cert and key files).")


def canonical(settings: dict[str, object]) -> bytes:
    return json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()


def sign(settings: dict[str, object], private_key_pem: bytes) -> bytes:
    """The signed policy file's content (the site's tool; the private key never leaves IT)."""
    key = load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CustodianError("The site key must be an Ed25519 private key (PEM).")
    signature = base64.b64encode(key.sign(canonical(settings))).decode()
    return json.dumps({"policy": settings, "signature": signature}, indent=1, sort_keys=True).encode()


def _places() -> list[tuple[Path, Path]]:
    """(policy, key) pairs to honour: the environment's if set, then the system location, whose
    settings are applied last and so win where both set one."""
    places = []
    policy, key = os.environ.get("CUSTODIAN_SITE_POLICY"), os.environ.get("CUSTODIAN_SITE_KEY")
    if policy or key:
        places.append((Path(policy or SYSTEM_DIR / POLICY_FILE), Path(key or SYSTEM_DIR / KEY_FILE)))
    places.append((SYSTEM_DIR / POLICY_FILE, SYSTEM_DIR / KEY_FILE))
    return places


def load() -> list[ManagedPolicy]:
    """Every managed policy that applies, verified; PolicyRefused when one does not verify."""
    found = []
    for policy_path, key_path in _places():
        if not policy_path.exists():
            if policy_path != SYSTEM_DIR / POLICY_FILE:
                raise PolicyRefused(f"The site policy file {policy_path} is missing; Custodian will not "
                                    "start without the settings the site set.")
            continue
        found.append(load_file(policy_path, key_path))
    return found


def load_file(policy_path: Path, key_path: Path) -> ManagedPolicy:
    """One policy file, verified against the public key in ``key_path``; PolicyRefused if not."""
    where = f"The site policy {policy_path}"
    try:
        public = load_pem_public_key(key_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PolicyRefused(f"{where} cannot be checked: the site's public key {key_path} is missing or "
                            "unreadable. Ask IT to reinstall it.") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise PolicyRefused(f"{where} cannot be checked: {key_path} is not an Ed25519 public key.")
    try:
        doc = json.loads(policy_path.read_bytes())
        settings, signature = doc["policy"], base64.b64decode(doc["signature"], validate=True)
        if not isinstance(settings, dict):
            raise TypeError("policy is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicyRefused(f"{where} is damaged and cannot be read. Ask IT to reinstall it.") from exc
    try:
        public.verify(signature, canonical(settings))
    except InvalidSignature:
        raise PolicyRefused(f"{where} has been changed since the site signed it. Custodian will not start; "
                            "ask IT to reinstall the signed policy.") from None
    return ManagedPolicy(settings, policy_path)
