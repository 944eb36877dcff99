"""Directory accounts: the site's LDAP or Active Directory decides who may log in and in which role.

The connection is always encrypted and verified against the site CA (LDAPS, or StartTLS on a
``ldap://`` URL; never plain, since a password crosses it). The service account finds the user
with the site's filter and reads the groups, from the user's ``memberOf`` where the directory keeps
it (Active Directory, OpenLDAP's memberof overlay), else from the groups' ``member``; the user's own
bind checks the password. Groups in groups count: the groups that hold the user's groups are
followed up, one search a level for the whole level, to :data:`NESTING` levels, and a cycle of groups
ends where it comes back (Active Directory's LDAP_MATCHING_RULE_IN_CHAIN would do it in one search,
but OpenLDAP does not know it). The first mapped group the user is in gives the role; a user in none
of them, or disabled in Active Directory (``userAccountControl`` bit 2), gets no access.

The second factor of directory users is the station's authenticator app (TOTP), one-time codes
checked by the site's MFA server over RADIUS (:mod:`app.security.radius`), or a smart card
(:mod:`app.security.card`).

ldap3 is imported inside the functions that talk to the directory, so a command that never does
pays nothing for it at start.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlcipher3

from app.errors import AuthenticationFailed, CustodianError, UsageError
from app.security.card import CardCheck
from app.security.radius import RadiusServer, parse_server
from app.security.roles import Role, parse_role

DEFAULT_FILTER = "(uid={user})"
SECOND_FACTORS = ("totp", "radius", "card")
_CONFIG_KEY, _SECRET_KEY, _RADIUS_KEY = "directory", "directory_secret", "radius_secret"
# Seconds to connect, and for each answer (whole: ldap3 packs it in a socket option): a login waits
# no longer than this for a directory that is down.
TIMEOUT = 3
AD_DISABLED = 0x2  # userAccountControl: ACCOUNTDISABLE
_READ = ["userAccountControl", "memberOf", "userPrincipalName"]
NESTING = 8  # levels of groups in groups followed above the user's own groups
_BATCH = 50  # groups asked about in one search (an OR of their DNs)
DISABLED, NO_GROUP = "disabled in the directory", "in no group mapped to a role"  # (refusals, as audited)


class DirectoryUnavailable(CustodianError):
    """The directory did not answer, or its certificate is not the site's (``untrusted``)."""

    def __init__(self, message: str, *, untrusted: bool = False) -> None:
        super().__init__(message)
        self.untrusted = untrusted


def _untrusted(error: str) -> bool:
    """Whether ldap3's socket error is the TLS check failing (not a directory that is down)."""
    return "CERTIFICATE" in error.upper() or "hostname" in error


def _dn(text: str) -> str:
    """A DN as compared here: case and the spaces around its separators do not count."""
    return ",".join(part.strip() for part in text.lower().split(","))


@dataclass(frozen=True)
class DirectoryConfig:
    """Where the directory is and how its groups map to roles (``directory set``, or the managed
    site policy's ``directory``). ``tls_ca``: the site CA as PEM (empty: the system's CAs);
    ``radius``: the MFA server (HOST[:PORT]) when the second factor is its one-time codes;
    ``card_ca`` (PEM) and ``crl`` (a path or URL; empty: none) when it is a card."""

    url: str
    base: str
    bind_dn: str
    roles: tuple[tuple[Role, str], ...]  # (role, group DN); the first group the user is in decides
    user_filter: str = DEFAULT_FILTER
    tls_ca: str = ""
    second_factor: str = "totp"
    radius: str = ""
    card_ca: str = ""
    crl: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            valid = parts.scheme in ("ldaps", "ldap") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # (a port that is not a number from 0 to 65535)
            valid = False
        if not valid:
            raise UsageError("Directory: the URL is ldaps://HOST[:PORT] (or ldap://HOST[:PORT], which is "
                             "used with StartTLS only).")
        if "{user}" not in self.user_filter or not self.user_filter.startswith("("):
            raise UsageError("Directory: the user filter is an LDAP filter naming {user}, e.g. "
                             "(sAMAccountName={user}).")
        if not self.roles:
            raise UsageError("Directory: map at least one group to a role (--role ROLE=GROUP_DN).")
        if self.second_factor not in SECOND_FACTORS:
            raise UsageError("Directory: the second factor of directory users is the authenticator app "
                             "(totp), RADIUS one-time codes (radius) or a smart card (card).")
        if (self.second_factor == "radius") != bool(self.radius):
            raise UsageError("Directory: the second factor radius needs the MFA server (--radius HOST:PORT), "
                             "and only it does.")
        if self.radius:
            parse_server(self.radius)
        if (self.second_factor == "card") != bool(self.card_ca) or (self.crl and not self.card_ca):
            raise UsageError("Directory: the second factor card needs the site's card CA (--card-ca FILE), "
                             "and only it does (with --crl, the card CA's revocation list).")
        if self.card_ca:
            CardCheck(self.card_ca, self.crl)  # (refuses a CA that is not PEM)
        if not (self.base.strip() and self.bind_dn.strip()):
            raise UsageError("Directory: give the base DN and the service account's DN.")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (636 if parts.scheme == "ldaps" else 389)

    @property
    def starttls(self) -> bool:
        return urlsplit(self.url).scheme == "ldap"

    def role_of(self, groups: Iterable[str]) -> Role | None:
        held = {_dn(g) for g in groups}
        return next((role for role, group in self.roles if _dn(group) in held), None)

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "base": self.base, "bind_dn": self.bind_dn,
                           "roles": mapping_text(self.roles), "user_filter": self.user_filter,
                           "tls_ca": self.tls_ca, "second_factor": self.second_factor, "radius": self.radius,
                           "card_ca": self.card_ca, "crl": self.crl},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DirectoryConfig:
        doc = json.loads(text)
        return cls(**{**doc, "roles": parse_mapping(doc["roles"])})

    @classmethod
    def from_policy(cls, doc: object) -> DirectoryConfig:
        """The managed policy's ``directory``: as stored, but ``tls_ca`` and ``card_ca`` name PEM files."""
        if not isinstance(doc, dict) or not isinstance(doc.get("roles"), list):
            raise UsageError("Site policy: directory must be an object with url, base, bind_dn and roles "
                             "(a list of ROLE=GROUP_DN).")
        try:
            ca = Path(doc["tls_ca"]).read_text(encoding="ascii") if doc.get("tls_ca") else ""
            card = Path(doc["card_ca"]).read_text(encoding="ascii") if doc.get("card_ca") else ""
            return cls(**{**doc, "roles": parse_mapping(doc["roles"]), "tls_ca": ca, "card_ca": card})
        except (OSError, ValueError):
            raise UsageError(f"Site policy: the directory's CA file {doc.get('tls_ca')} (or the card CA "
                             f"{doc.get('card_ca')}) cannot be read.") from None
        except TypeError:
            raise UsageError("Site policy: directory has fields this version does not know or lacks one it "
                             "needs (url, base, bind_dn, roles).") from None


def parse_mapping(items: Iterable[str]) -> tuple[tuple[Role, str], ...]:
    """``ROLE=GROUP_DN`` items, in their order."""
    found = []
    for item in items:
        role, sep, group = str(item).partition("=")
        if not (sep and group.strip()):
            raise UsageError(f"Directory: a role mapping is ROLE=GROUP_DN, not '{item}'.")
        try:
            found.append((parse_role(role.strip()), group.strip()))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return tuple(found)


def mapping_text(roles: Iterable[tuple[Role, str]]) -> list[str]:
    return [f"{role.value}={group}" for role, group in roles]


@dataclass(frozen=True)
class Standing:
    """What the directory says of a user now: the entry, its role (None: no mapped group),
    whether the account is disabled, and its User Principal Name (AD; "" where the entry has none),
    which a card must carry whole."""

    dn: str
    role: Role | None
    disabled: bool
    upn: str = ""

    @property
    def refusal(self) -> str | None:
        """Why this user gets no access (for the audit trail), or None."""
        if self.disabled:
            return DISABLED
        return None if self.role else NO_GROUP


class DirectoryBook:
    """The directory set at this station (``directory set``), the service account's secret and the
    MFA server's shared secret, in the vault's encrypted index."""

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        self._conn = conn

    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def config(self) -> DirectoryConfig | None:
        text = self._get(_CONFIG_KEY)
        return DirectoryConfig.from_json(text) if text else None

    def secret(self) -> str:
        return self._get(_SECRET_KEY) or ""

    def radius(self, config: DirectoryConfig) -> RadiusServer | None:
        """The MFA server of ``config`` (this station's or the managed policy's) with the shared
        secret set here, when the site's second factor is its one-time codes."""
        return RadiusServer(config.radius, self._get(_RADIUS_KEY) or "") if config.radius else None

    def save(self, config: DirectoryConfig, secret: str, radius_secret: str = "") -> None:
        self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               [(_CONFIG_KEY, config.to_json()), (_SECRET_KEY, secret),
                                (_RADIUS_KEY, radius_secret)])


class Directory:
    """One site directory, reached with the service account's ``secret``."""

    def __init__(self, config: DirectoryConfig, secret: str) -> None:
        self.config = config
        self._secret = secret

    def authenticate(self, name: str, password: str) -> Standing:
        """The user's standing, once their own bind has checked the password; AuthenticationFailed
        for a name the filter does not find (or finds twice) and for a wrong password."""
        from ldap3.core.exceptions import LDAPBindError, LDAPInvalidCredentialsResult

        if not password:  # an empty password is an unauthenticated bind, which LDAP lets through
            raise AuthenticationFailed("no password")
        with self._service() as conn:
            standing = self._find(conn, name)
            if standing is None:
                raise AuthenticationFailed("not in the directory")
            try:
                conn.rebind(standing.dn, password)
            except (LDAPBindError, LDAPInvalidCredentialsResult):
                raise AuthenticationFailed("wrong directory password") from None
        return standing

    def lookup(self, name: str) -> Standing | None:
        """The user's standing now (the service account's view; no password), or None when the
        filter no longer finds them."""
        with self._service() as conn:
            return self._find(conn, name)

    def probe(self) -> float:
        """Milliseconds for a verified connection and the service account's bind and read."""
        started = time.perf_counter()
        with self._service() as conn:
            conn.search(self.config.base, "(objectClass=*)", search_scope="BASE", attributes=[])
        return (time.perf_counter() - started) * 1000

    # ------------------------------------------------------------------ the protocol
    def _find(self, conn: Any, name: str) -> Standing | None:
        from ldap3.utils.conv import escape_filter_chars

        conn.search(self.config.base, self.config.user_filter.replace("{user}", escape_filter_chars(name)),
                    attributes=_READ, size_limit=2)
        if len(conn.entries) != 1:
            return None
        entry = conn.entries[0]
        dn = entry.entry_dn
        values = entry.entry_attributes_as_dict
        groups = self._nested(conn, [str(g) for g in values.get("memberOf", [])] or self._holding(conn, [dn]))
        control = values.get("userAccountControl") or [0]
        upn = values.get("userPrincipalName") or [""]
        return Standing(dn, self.config.role_of(groups), bool(int(control[0]) & AD_DISABLED), str(upn[0]))

    def _nested(self, conn: Any, direct: list[str]) -> list[str]:
        """The ``direct`` groups and every group above them, level by level to NESTING levels; a
        group seen before is not asked about again, so a cycle ends where it comes back."""
        held: dict[str, str] = {}
        level = direct
        for depth in range(NESTING + 1):
            fresh = {_dn(group): group for group in level if _dn(group) not in held}
            held.update(fresh)
            if not fresh or depth == NESTING:
                break
            level = self._holding(conn, list(fresh.values()))
        return list(held.values())

    def _holding(self, conn: Any, members: list[str]) -> list[str]:
        """The groups that have any of ``members`` as a member (groupOfNames, groupOfUniqueNames,
        AD groups)."""
        from ldap3.utils.conv import escape_filter_chars

        found = []
        for start in range(0, len(members), _BATCH):
            either = "".join(f"(member={m})(uniqueMember={m})"
                             for m in map(escape_filter_chars, members[start:start + _BATCH]))
            conn.search(self.config.base, f"(|{either})", attributes=[])
            found += [group.entry_dn for group in conn.entries]
        return found

    @contextlib.contextmanager
    def _service(self) -> Iterator[Any]:
        """A connection bound as the service account over verified TLS; DirectoryUnavailable if
        the directory does not answer, is not the site's, or refuses the service account."""
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPStartTLSError

        config = self.config
        where = f"The directory at {config.host}:{config.port}"
        if not self._secret:
            raise DirectoryUnavailable("The directory's service account has no secret on this station "
                                       "(custodian directory set, with CUSTODIAN_DIRECTORY_SECRET).")
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=config.tls_ca or None, sni=config.host)
        server = ldap3.Server(config.host, port=config.port, use_ssl=not config.starttls, tls=tls,
                              get_info=ldap3.NONE, connect_timeout=TIMEOUT)
        bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if config.starttls else ldap3.AUTO_BIND_NO_TLS
        try:
            conn = ldap3.Connection(server, config.bind_dn, self._secret, auto_bind=bind,
                                    receive_timeout=TIMEOUT, raise_exceptions=True, read_only=True)
        except LDAPBindError:
            raise DirectoryUnavailable("The directory refused Custodian's service account: check its DN "
                                       "and secret (custodian directory set).") from None
        except LDAPException as exc:
            if isinstance(exc, LDAPStartTLSError) or _untrusted(str(exc)):
                raise DirectoryUnavailable(f"{where} presented a certificate the site CA does not vouch "
                                           "for (or not for that name); it was not used.",
                                           untrusted=True) from None
            raise DirectoryUnavailable(f"{where} does not answer.") from None
        try:
            yield conn
        except (AuthenticationFailed, DirectoryUnavailable):
            raise
        except LDAPException:
            raise DirectoryUnavailable(f"{where} stopped answering.") from None
        finally:
            with contextlib.suppress(LDAPException):
                conn.unbind()
