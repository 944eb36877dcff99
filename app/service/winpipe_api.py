"""The Windows calls behind the service's named pipe, and the pipe's name (written, not tested here).

Shared by the service's side (:mod:`app.service.winpipe`) and the clients' (:mod:`app.service.
winpipe_client`). Everything that calls Windows sits under ``sys.platform == "win32"``: importing
this module elsewhere defines only the names and checks below, and mypy on Linux skips the rest.

Who is at the other end of a pipe is read from the kernel's token, never through the process id:
a service account may not open another account's process (nor a user the service's), and a process
id can be reused. The service takes the client's token by impersonating it for a moment at
identification level (the client allows no more); a client reads whose pipe it talks to from the
pipe's owner, which a squatter cannot set to the service's account without the restore privilege.
"""

from __future__ import annotations

import re
import sys

from app.errors import UsageError

PIPE_ROOT = "\\\\.\\pipe\\"
PREFIX = "custodian-"
INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOCAL_PIPE = re.compile(r"[\\/]{2}\.[\\/]pipe[\\/]([A-Za-z0-9][A-Za-z0-9_.-]{0,79})", re.IGNORECASE)
SID = re.compile(r"S-1-\d{1,15}(-\d{1,10}){0,15}")
SYSTEM = "S-1-5-18"
SERVICE_ACCOUNT = "NT SERVICE\\Custodian"  # the installer's virtual account (install-service.ps1)

# What a client asks of the pipe, and all a member of the group is granted: read, write, the
# attributes and the owner. Not FILE_CREATE_PIPE_INSTANCE (0x4, the bit GENERIC_WRITE would bring),
# which would let a member serve further instances of the service's pipe to the others.
FILE_READ_DATA, FILE_WRITE_DATA, FILE_CREATE_PIPE_INSTANCE = 0x1, 0x2, 0x4
FILE_READ_ATTRIBUTES, READ_CONTROL, SYNCHRONIZE = 0x80, 0x20000, 0x100000
CLIENT_ACCESS = FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE

ERROR_FILE_NOT_FOUND, ERROR_ACCESS_DENIED, ERROR_SEM_TIMEOUT, ERROR_PIPE_BUSY = 2, 5, 121, 231
NOT_HERE = ("A named pipe is how the workstation service is reached on Windows; on this system the "
            "service listens on a Unix socket (--socket PATH).")


def pipe_address(given: str) -> str:
    r"""The pipe a ``--socket`` value names: a local pipe path (``\\.\pipe\custodian``) as it is,
    a bare instance name (``main``) as ``\\.\pipe\custodian-main``. A pipe on another machine is
    refused: a password typed here must never travel to a server elsewhere."""
    local = _LOCAL_PIPE.fullmatch(given)
    if local is not None:
        return PIPE_ROOT + local.group(1)
    if INSTANCE.fullmatch(given):
        return f"{PIPE_ROOT}{PREFIX}{given}"
    raise UsageError(f"'{given}' names no local pipe: give \\\\.\\pipe\\NAME, or an instance name of "
                     "letters, digits, '.', '_' and '-'.")


def is_pipe(given: str) -> bool:
    """Whether a ``--socket`` value is a Windows pipe path rather than a file's path."""
    return _LOCAL_PIPE.fullmatch(given) is not None


def checked_sid(sid: str) -> str:
    """A SID as Windows writes it, or a refusal: it goes into a security descriptor's text, where
    anything else could add an entry of its own."""
    if not SID.fullmatch(sid):
        raise UsageError(f"'{sid}' is not a Windows security identifier (S-1-...).")
    return sid


if sys.platform == "win32":
    import ctypes
    import os
    import time
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _PSID = ctypes.c_void_p
    INVALID_HANDLE = ctypes.c_void_p(-1).value
    TOKEN_QUERY, TOKEN_USER_CLASS = 0x8, 1
    SE_KERNEL_OBJECT, OWNER_SECURITY_INFORMATION = 6, 1
    SID_TYPE_GROUP, SID_TYPE_ALIAS, SID_TYPE_WELL_KNOWN_GROUP = 2, 4, 5

    class SecurityAttributes(ctypes.Structure):
        _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", ctypes.c_void_p),
                    ("bInheritHandle", wintypes.BOOL)]

    class _SidAndAttributes(ctypes.Structure):
        _fields_ = [("Sid", _PSID), ("Attributes", wintypes.DWORD)]

    def _declare(dll: ctypes.WinDLL, name: str, restype: object, *argtypes: object) -> None:
        function = getattr(dll, name)
        function.restype, function.argtypes = restype, list(argtypes)

    _H, _D, _B, _P = wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL, ctypes.c_void_p
    _declare(_kernel32, "CreateNamedPipeW", _H, wintypes.LPCWSTR, _D, _D, _D, _D, _D, _D, _P)
    _declare(_kernel32, "CreateFileW", _H, wintypes.LPCWSTR, _D, _D, _P, _D, _D, _H)
    _declare(_kernel32, "WaitNamedPipeW", _B, wintypes.LPCWSTR, _D)
    _declare(_kernel32, "CloseHandle", _B, _H)
    _declare(_kernel32, "LocalFree", _P, _P)
    _declare(_kernel32, "GetCurrentProcess", _H)
    _declare(_kernel32, "GetCurrentThread", _H)
    _declare(_advapi32, "ConvertStringSecurityDescriptorToSecurityDescriptorW", _B, wintypes.LPCWSTR, _D,
             ctypes.POINTER(_P), ctypes.POINTER(wintypes.ULONG))
    _declare(_advapi32, "ImpersonateNamedPipeClient", _B, _H)
    _declare(_advapi32, "RevertToSelf", _B)
    _declare(_advapi32, "OpenThreadToken", _B, _H, _D, _B, ctypes.POINTER(_H))
    _declare(_advapi32, "OpenProcessToken", _B, _H, _D, ctypes.POINTER(_H))
    _declare(_advapi32, "GetTokenInformation", _B, _H, ctypes.c_int, _P, _D, ctypes.POINTER(_D))
    _declare(_advapi32, "CheckTokenMembership", _B, _H, _PSID, ctypes.POINTER(_B))
    _declare(_advapi32, "ConvertSidToStringSidW", _B, _PSID, ctypes.POINTER(wintypes.LPWSTR))
    _declare(_advapi32, "ConvertStringSidToSidW", _B, wintypes.LPCWSTR, ctypes.POINTER(_PSID))
    _declare(_advapi32, "LookupAccountNameW", _B, wintypes.LPCWSTR, wintypes.LPCWSTR, _PSID,
             ctypes.POINTER(_D), wintypes.LPWSTR, ctypes.POINTER(_D), ctypes.POINTER(ctypes.c_int))
    _declare(_advapi32, "GetSecurityInfo", _D, _H, ctypes.c_int, _D, ctypes.POINTER(_PSID),
             ctypes.POINTER(_PSID), _P, _P, ctypes.POINTER(_P))

    def _check(ok: object) -> None:
        if not ok:
            raise ctypes.WinError(ctypes.get_last_error())

    def _sid_text(sid: int | None) -> str:
        text = wintypes.LPWSTR()
        _check(_advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)))
        try:
            return str(text.value)
        finally:
            _kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))

    def _token_user(token: wintypes.HANDLE) -> str:
        size = wintypes.DWORD()
        _advapi32.GetTokenInformation(token, TOKEN_USER_CLASS, None, 0, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        _check(_advapi32.GetTokenInformation(token, TOKEN_USER_CLASS, buffer, size, ctypes.byref(size)))
        return _sid_text(ctypes.cast(buffer, ctypes.POINTER(_SidAndAttributes)).contents.Sid)

    def own_sid() -> str:
        """The account this process runs as (the service's)."""
        token = wintypes.HANDLE()
        _check(_advapi32.OpenProcessToken(_kernel32.GetCurrentProcess(), TOKEN_QUERY, ctypes.byref(token)))
        try:
            return _token_user(token)
        finally:
            _kernel32.CloseHandle(token)

    def account_sid(name: str, *, group: bool = False) -> str:
        """The SID of a local account or group by name; a user's name where a group was asked for
        is refused."""
        size, domain_size, kind = wintypes.DWORD(), wintypes.DWORD(), ctypes.c_int()
        _advapi32.LookupAccountNameW(None, name, None, ctypes.byref(size), None, ctypes.byref(domain_size),
                                     ctypes.byref(kind))
        sid, domain = ctypes.create_string_buffer(size.value), ctypes.create_unicode_buffer(domain_size.value)
        if not _advapi32.LookupAccountNameW(None, name, sid, ctypes.byref(size), domain,
                                            ctypes.byref(domain_size), ctypes.byref(kind)):
            raise UsageError(f"Windows knows no account or group named '{name}'.")
        if group and kind.value not in (SID_TYPE_GROUP, SID_TYPE_ALIAS, SID_TYPE_WELL_KNOWN_GROUP):
            raise UsageError(f"'{name}' is not a group: give the local group whose members may connect.")
        return _sid_text(ctypes.addressof(sid))

    def security_attributes(sddl: str) -> SecurityAttributes:
        """Security attributes carrying the descriptor written in ``sddl`` (kept for the process's
        life: every instance of the pipe is made with it)."""
        descriptor = ctypes.c_void_p()
        convert = _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW
        _check(convert(sddl, 1, ctypes.byref(descriptor), None))  # 1: SDDL_REVISION_1
        return SecurityAttributes(ctypes.sizeof(SecurityAttributes), descriptor, False)

    def create_pipe(address: str, attributes: SecurityAttributes, *, first: bool) -> int:
        """One overlapped byte-mode instance of the pipe, local clients only; the first fails if
        anyone already serves that name."""
        mode = 0x3 | 0x40000000 | (0x80000 if first else 0)  # duplex, overlapped, first instance
        handle = _kernel32.CreateNamedPipeW(address, mode, 0x8, 255, 65536, 65536, 0,  # 0x8: local only
                                            ctypes.byref(attributes))
        if handle in (None, INVALID_HANDLE):
            raise ctypes.WinError(ctypes.get_last_error())
        return int(handle)

    def client_identity(pipe: int, group_sid: str | None) -> tuple[str, bool]:
        """The connected client's account and whether its token holds the group (enabled, not
        deny-only). Impersonates the client on this thread for the two reads; if the thread
        cannot return to the service's own account, the process ends rather than go on as it."""
        _check(_advapi32.ImpersonateNamedPipeClient(pipe))
        token = wintypes.HANDLE()
        try:
            _check(_advapi32.OpenThreadToken(_kernel32.GetCurrentThread(), TOKEN_QUERY, True,
                                             ctypes.byref(token)))
        finally:
            if not _advapi32.RevertToSelf():
                os.abort()
        try:
            return _token_user(token), group_sid is not None and _holds(token, group_sid)
        finally:
            _kernel32.CloseHandle(token)

    def _holds(token: wintypes.HANDLE, group_sid: str) -> bool:
        sid, member = _PSID(), wintypes.BOOL()
        _check(_advapi32.ConvertStringSidToSidW(group_sid, ctypes.byref(sid)))
        try:
            _check(_advapi32.CheckTokenMembership(token, sid, ctypes.byref(member)))
        finally:
            _kernel32.LocalFree(sid)
        return bool(member.value)

    def open_client(address: str, wait: float) -> int:
        """A client's handle on the pipe, asking only ``CLIENT_ACCESS`` and letting the service
        identify this account but not act as it; a busy pipe is waited for, ``wait`` seconds in all."""
        deadline = time.monotonic() + wait
        while True:
            handle = _kernel32.CreateFileW(address, CLIENT_ACCESS, 0, None, 3,  # OPEN_EXISTING
                                           0x00100000 | 0x00010000, None)  # SQOS: identification
            if handle not in (None, INVALID_HANDLE):
                return int(handle)
            error = ctypes.get_last_error()
            if error != ERROR_PIPE_BUSY:
                raise ctypes.WinError(error)
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not _kernel32.WaitNamedPipeW(address, left):
                raise ctypes.WinError(ERROR_SEM_TIMEOUT if left <= 0 else ctypes.get_last_error())

    def pipe_owner(handle: int) -> str:
        """The account that owns the pipe: the one that made its first instance."""
        owner, descriptor = _PSID(), ctypes.c_void_p()
        error = _advapi32.GetSecurityInfo(handle, SE_KERNEL_OBJECT, OWNER_SECURITY_INFORMATION,
                                          ctypes.byref(owner), None, None, None, ctypes.byref(descriptor))
        if error:
            raise ctypes.WinError(error)
        try:
            return _sid_text(owner.value)
        finally:
            _kernel32.LocalFree(descriptor)

    def close_handle(handle: int) -> None:
        _kernel32.CloseHandle(handle)
