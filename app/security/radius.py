"""RADIUS one-time codes: the site's MFA server decides whether a directory user's code is right.

The code goes in an Access-Request (RFC 2865) as the User-Password, hidden with the shared secret,
and with a Message-Authenticator (RFC 2869; the BlastRADIUS countermeasure, CVE-2024-3596). pyrad
accepts only a reply whose Response Authenticator proves the same secret, so a forged or
misdirected Accept is never taken: a server that does not answer, or not with this secret, is
"did not answer". The protocol is pyrad's; this module only says what its answers mean here.

pyrad is imported inside :meth:`RadiusServer.check`, so a command that never asks pays nothing for it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import CustodianError, UsageError

DEFAULT_PORT = 1812
# A login waits at most TRIES * TIMEOUT seconds for an MFA server that does not answer (UDP: a
# lost request is sent again).
TIMEOUT, TRIES = 1.5, 2
NAS_IDENTIFIER = "custodian"
# The attributes sent and read (pyrad needs a dictionary; these are RFC 2865's and RFC 2869's).
_DICTIONARY = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Message-Authenticator 80 octets
"""
_ACCEPT, _REJECT = 2, 3  # Access-Accept, Access-Reject


class RadiusUnavailable(CustodianError):
    """The MFA server gave no answer this station can trust: none at all, one not signed with the
    shared secret, or one it does not support (an Access-Challenge)."""


def parse_server(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (an IPv6 address in brackets) as host and port; 1812 when no port is given."""
    try:
        parts = urlsplit(f"//{text.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:  # (a port that is not a number from 0 to 65535)
        host = port = None
    if not host or port == 0 or parts.path or parts.username:
        raise UsageError(f"The RADIUS server is HOST[:PORT] (e.g. mfa.hospital.example:1812), not '{text}'.")
    return host, port or DEFAULT_PORT


@dataclass(frozen=True)
class RadiusServer:
    """The site's MFA server (``HOST[:PORT]``) and the shared secret this station has with it."""

    address: str
    secret: str

    def check(self, name: str, code: str) -> bool:
        """Whether the server accepts ``code`` as ``name``'s one-time code (Access-Accept) or
        rejects it (Access-Reject); RadiusUnavailable when it gives no trustworthy answer."""
        from pyrad import packet
        from pyrad.client import Client, Timeout
        from pyrad.dictionary import Dictionary

        host, port = parse_server(self.address)
        where = f"The hospital's authenticator (the RADIUS server at {self.address})"
        if not self.secret:
            raise RadiusUnavailable(f"{where} has no shared secret on this station (custodian directory set, "
                                    "with CUSTODIAN_RADIUS_SECRET).")
        if not code.strip():
            return False
        client = Client(host, authport=port, secret=self.secret.encode(), retries=TRIES, timeout=TIMEOUT,
                        dict=Dictionary(io.StringIO(_DICTIONARY)))
        request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=name,
                                          NAS_Identifier=NAS_IDENTIFIER)
        request["User-Password"] = request.PwCrypt(code.strip())
        try:
            reply = client.SendPacket(request)
        except (Timeout, OSError):
            raise RadiusUnavailable(f"{where} did not answer, so the code could not be checked: try again "
                                    "shortly; if it goes on, tell the site's administrator (the server may "
                                    "be down, or not share this station's secret).") from None
        finally:
            client._CloseSocket()  # (pyrad has no public close; its socket would wait for the collector)
        if reply.code not in (_ACCEPT, _REJECT):
            raise RadiusUnavailable(f"{where} asked for more than a one-time code (RADIUS code "
                                    f"{reply.code}), which Custodian does not support.")
        return bool(reply.code == _ACCEPT)
