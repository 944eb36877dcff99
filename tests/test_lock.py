"""requirements.lock: every package pyproject.toml asks for is pinned to one version that satisfies
it, with the hashes of its files, and installer/setup.sh installs from it and nothing else (an
install that is not reproducible was a finding of the security review)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pinned() -> dict[str, tuple[Version, int]]:
    """Each package of the lock file: its pinned version and how many sha256 hashes it carries."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if pin := _PIN.match(line):
            name = canonicalize_name(pin[1])
            assert name not in found, f"{name} is pinned twice"
            found[name] = (Version(pin[2]), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def asked_for() -> list[Requirement]:
    """What pyproject.toml asks for: the dependencies, the test extra and the setup group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    texts = (project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]
             + project["dependency-groups"]["setup"])
    return [Requirement(text) for text in texts]


def test_every_requirement_is_pinned_with_hashes_in_the_lock() -> None:
    lock = pinned()
    assert len(lock) > 60 and all(hashes for _, hashes in lock.values()), "a pin without a hash"
    for requirement in asked_for():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} is not in requirements.lock: renew it (README, Installs)"
        version = lock[name][0]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {name} {version}, which pyproject.toml's {requirement} excludes"


def test_setup_installs_from_the_lock_only() -> None:
    script = (ROOT / "installer" / "setup.sh").read_text()
    installs = [line.strip() for line in script.splitlines() if "pip install" in line]
    assert ".venv/bin/python -m pip install --require-hashes -r requirements.lock &&" in installs[0]
    assert "--no-deps --no-build-isolation -e ." in installs[1] and len(installs) == 2
    assert "requirements.lock -nt" in script  # a renewed lock is installed again
