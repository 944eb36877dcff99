"""What the operating system could write of this process's memory to disk, and what we stop.

Decrypted images and keys live in ordinary Python objects: the interpreter copies them freely,
never zeroes freed memory, and cannot pin them in RAM (``mlockall`` would pin every image and
volume too). So the promises are at the process edge: no core dump (a crash must not leave a
plaintext file), no other process of the same user attaching a debugger to read memory, and a
self-test that fails where swap could receive pages unencrypted.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3


def harden() -> None:
    """No core file and, on Linux, not dumpable: no core through a pipe handler (systemd-coredump
    ignores the size limit) and no ptrace or /proc/PID/mem by the same user's other processes."""
    try:
        import resource
    except ImportError:  # Windows writes no core files unless configured to
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def hardened() -> bool:
    try:
        import resource
    except ImportError:
        return True
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        return False
    return not sys.platform.startswith("linux") or ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


@dataclass(frozen=True)
class Swap:
    device: str
    encrypted: bool  # on dm-crypt (directly or under LVM), or compressed RAM (zram)


def encrypted_block(block: Path) -> bool:
    """Whether a block device (its /sys/dev/block entry) is dm-crypt or stacked on it."""
    uuid = block / "dm" / "uuid"
    if uuid.is_file() and uuid.read_text().startswith("CRYPT-"):
        return True
    slaves = block / "slaves"
    return slaves.is_dir() and any(encrypted_block(s.resolve()) for s in slaves.iterdir())


def swap_areas(proc_swaps: Path = Path("/proc/swaps"),
               sys_dev_block: Path = Path("/sys/dev/block")) -> list[Swap]:
    """The active swap areas (Linux); empty where there are none or the OS does not say. A swap
    file counts as encrypted when its file system's device is; one the kernel does not trace to
    a device (btrfs) counts as not encrypted."""
    try:
        lines = proc_swaps.read_text().splitlines()[1:]
    except OSError:
        return []
    areas = []
    for line in lines:
        device = Path(line.split()[0])
        if device.name.startswith("zram"):
            areas.append(Swap(str(device), True))
            continue
        try:
            info = os.stat(device)
        except OSError:
            areas.append(Swap(str(device), False))
            continue
        dev = info.st_rdev if stat.S_ISBLK(info.st_mode) else info.st_dev
        block = sys_dev_block / f"{os.major(dev)}:{os.minor(dev)}"
        areas.append(Swap(str(device), block.exists() and encrypted_block(block.resolve())))
    return areas
