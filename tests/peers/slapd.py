"""OpenLDAP slapd (Debian's) as the site directory: LDAPS and StartTLS with a certificate from the
test site CA, and two test trees.

``dc=plain,dc=test`` is an OpenLDAP-style tree (inetOrgPerson users, groupOfNames groups read by
their ``member``); ``dc=ad,dc=test`` is Active-Directory-like: users carry ``sAMAccountName`` and
``userAccountControl`` (a small schema with AD's own OIDs) and the memberof overlay keeps their
``memberOf``, as AD does. Each tree has a service account that may read it. The tests change the
trees through the plain port as the root DN, the way a directory administrator would.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap3

from app.security.directory import DirectoryConfig, parse_mapping
from tests.peers.pki import Issued, Site
from tests.peers.ports import free_port, stop_gracefully, wait_listening

ROOT_PASSWORD = "slapd root secret"
SERVICE_PASSWORD = "directory service secret"
PLAIN, AD = "dc=plain,dc=test", "dc=ad,dc=test"
UPN_DOMAIN = "hospital.example"  # the AD-like tree's users' User Principal Names end in it

AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
    SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.1.1 NAME 'adLikeUser' AUXILIARY
    MAY ( userAccountControl $ sAMAccountName $ userPrincipalName ) )
"""

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {folder}/ad.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {folder}/slapd.pid
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
{databases}"""

DATABASE = """
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "cn=root,{suffix}"
rootpw "{root}"
directory {folder}
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="cn=custodian,{suffix}" read by self read by * none
{overlay}"""


@dataclass(frozen=True)
class Person:
    uid: str
    password: str
    groups: tuple[str, ...]  # the cn of each group (ou=groups) the person is a member of


def group_dn(cn: str, suffix: str) -> str:
    return f"cn={cn},ou=groups,{suffix}"


def person_dn(uid: str, suffix: str) -> str:
    return f"uid={uid},ou=people,{suffix}"


class Slapd:
    """One slapd in the foreground: ``ldaps_url`` (LDAPS) and ``ldap_url`` (plain port, StartTLS)."""

    def __init__(self, folder: Path, ca: Path, server: Issued) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ad.schema").write_text(AD_SCHEMA)
        databases = []
        for suffix, name, overlay in ((PLAIN, "plain", ""), (AD, "ad", "overlay memberof\n")):
            (folder / name).mkdir(exist_ok=True)
            databases.append(DATABASE.format(suffix=suffix, root=ROOT_PASSWORD, folder=folder / name,
                                             overlay=overlay))
        self.config = folder / "slapd.conf"
        self.config.write_text(CONFIG.format(folder=folder, ca=ca, cert=server.cert, key=server.key,
                                             databases="".join(databases)))
        self.ldaps_port, self.ldap_port = free_port(), free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://localhost:{self.ldap_port}"

    def start(self) -> None:
        log = self.folder / "slapd.log"
        binary = shutil.which("slapd") or "/usr/sbin/slapd"
        urls = f"ldaps://127.0.0.1:{self.ldaps_port}/ ldap://127.0.0.1:{self.ldap_port}/"
        self._process = subprocess.Popen([binary, "-d", "0", "-f", str(self.config), "-h", urls],
                                         stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_listening(self._process, self.ldap_port, log, "slapd")

    def stop(self) -> None:
        stop_gracefully(self._process)
        self._process = None

    # ------------------------------------------------------------------ the trees
    def admin(self, suffix: str) -> ldap3.Connection:
        """The tree's root DN on the plain port (the tests' own changes, never Custodian's)."""
        return ldap3.Connection(ldap3.Server("127.0.0.1", port=self.ldap_port), f"cn=root,{suffix}",
                                ROOT_PASSWORD, auto_bind=True, raise_exceptions=True)

    def load(self, suffix: str, people: list[Person], groups: tuple[str, ...]) -> None:
        """The tree's base, its service account (cn=custodian), groups and people."""
        ad = suffix == AD
        with self.admin(suffix) as conn:
            conn.add(suffix, ["dcObject", "organization"],
                     {"o": "Test hospital", "dc": suffix.split(",")[0][3:]})
            conn.add(f"cn=custodian,{suffix}", ["organizationalRole", "simpleSecurityObject"],
                     {"userPassword": SERVICE_PASSWORD})
            for ou in ("people", "groups"):
                conn.add(f"ou={ou},{suffix}", ["organizationalUnit"])
            for person in people:
                attributes: dict[str, object] = {"cn": person.uid, "sn": person.uid,
                                                 "userPassword": person.password}
                if ad:
                    attributes.update(sAMAccountName=person.uid, userAccountControl=512,
                                      userPrincipalName=f"{person.uid}@{UPN_DOMAIN}")
                conn.add(person_dn(person.uid, suffix),
                         ["inetOrgPerson", *(["adLikeUser"] if ad else [])], attributes)
            for cn in groups:
                # groupOfNames needs a member: the service account keeps a group the tests empty one.
                members = [f"cn=custodian,{suffix}",
                           *(person_dn(p.uid, suffix) for p in people if cn in p.groups)]
                conn.add(group_dn(cn, suffix), ["groupOfNames"], {"member": members})

    def change(self, dn: str, suffix: str, **changes: tuple[str, list[object]]) -> None:
        """ldap3 modify changes on ``dn``: attribute=(MODIFY_ADD|MODIFY_DELETE|MODIFY_REPLACE, values)."""
        with self.admin(suffix) as conn:
            conn.modify(dn, {name: [change] for name, change in changes.items()})


@contextlib.contextmanager
def running(folder: Path, people: list[Person], groups: tuple[str, ...]) -> Iterator[tuple[Slapd, Site]]:
    """A started slapd with both trees loaded, and the test site (its CA) it has a certificate of."""
    site = Site(folder, "localhost")
    server = Slapd(folder / "slapd", site.ca.cert, site.server)
    server.start()
    try:
        server.load(PLAIN, people, groups)
        server.load(AD, people, groups)
        yield server, site
    finally:
        server.stop()


def site_directory(server: Slapd, site: Site, suffix: str = PLAIN, *, url: str | None = None,
                   ca: Path | None = None) -> DirectoryConfig:
    """The plain tree over LDAPS, or the AD-like one over StartTLS (found by sAMAccountName); the
    groups admins, radiologists and technologists give those roles."""
    ad = suffix == AD
    return DirectoryConfig(
        url or (server.ldap_url if ad else server.ldaps_url), suffix, f"cn=custodian,{suffix}",
        parse_mapping([f"{role}={group_dn(f'{role}s', suffix)}" for role in ("admin", "radiologist",
                                                                               "technologist")]),
        "(sAMAccountName={user})" if ad else "(uid={user})", (ca or site.ca.cert).read_text())
