"""Orthanc as the central PACS, started on free loopback ports with a generated configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

from tests.peers.pki import Issued
from tests.peers.ports import free_port, stop_gracefully, wait_listening

AET = "ORTHANC"


class Orthanc:
    def __init__(self, folder: Path, *, known: dict[str, tuple[str, int]] | None = None,
                 tls: tuple[Path, Issued] | None = None) -> None:
        """``known``: the modalities Orthanc accepts (name -> (AE title, port on 127.0.0.1)),
        and the only callers it lets in; ``tls``: (CA file, Orthanc's certificate) for DICOM TLS."""
        self.binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        modalities = {name: [aet, "127.0.0.1", port] for name, (aet, port) in (known or {}).items()}
        config = {
            "Name": "custodian-test-pacs", "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"), "HttpPort": self.http_port, "DicomPort": self.port,
            "DicomAet": AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": False, "UnknownSopClassAccepted": False, "StableAge": 1,
            "DicomModalities": modalities,
            "DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0,
        }
        if tls is not None:
            ca, own = tls
            config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(own.cert),
                           "DicomTlsPrivateKey": str(own.key), "DicomTlsTrustedCertificates": str(ca),
                           "DicomTlsRemoteCertificateRequired": True})
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=1))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen([self.binary, str(self.config)], stdout=subprocess.DEVNULL,
                                         stderr=(self.folder / "orthanc.log").open("ab"))
        wait_listening(self._process, self.port, self.folder / "orthanc.log", "Orthanc", timeout=30,
                       ready=lambda: self.rest("/system"))

    def stop(self) -> None:
        stop_gracefully(self._process)
        self._process = None

    def rest(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as reply:
            return json.loads(reply.read())
