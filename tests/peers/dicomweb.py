"""A DICOMweb PACS as sites deploy one: Orthanc with its DICOMweb plugin on a loopback HTTP port,
behind nginx, which terminates TLS (a certificate from the test site's CA) and authenticates:
HTTP basic under ``/basic/``, a bearer token under ``/token/``. nginx can be stopped and started
again alone, for an outage."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.peers.orthanc import Orthanc
from tests.peers.pki import Site
from tests.peers.ports import free_port, stop_gracefully, wait_listening

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
USER, PASSWORD, TOKEN = "reader", "correct horse battery", "t0ken-3f9a7c1e"


def available() -> bool:
    return PLUGIN.exists() and Path(NGINX).exists() and shutil.which("Orthanc") is not None


class DicomWebPacs:
    def __init__(self, folder: Path, site: Site) -> None:
        self.folder = folder
        self.site = site
        self.orthanc = Orthanc(folder / "orthanc")
        config = json.loads(self.orthanc.config.read_text())
        config.update({"Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
        self.orthanc.config.write_text(json.dumps(config, indent=1))
        self.port = free_port()
        self._nginx: subprocess.Popen[bytes] | None = None
        self._write_nginx_config()

    def url(self, auth: str = "basic") -> str:
        """The DICOMweb base URL behind ``auth`` ("basic" or "token")."""
        return f"https://localhost:{self.port}/{auth}/dicom-web"

    def start(self) -> None:
        self.orthanc.start()
        try:
            self.start_proxy()
        except BaseException:
            self.orthanc.stop()
            raise

    def stop(self) -> None:
        self.stop_proxy()
        self.orthanc.stop()

    def start_proxy(self) -> None:
        log = self.folder / "nginx" / "error.log"
        self._nginx = subprocess.Popen([NGINX, "-p", str(self.folder / "nginx"), "-c", "nginx.conf",
                                        "-e", str(log)], stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        wait_listening(self._nginx, self.port, log, "nginx")

    def stop_proxy(self) -> None:
        stop_gracefully(self._nginx)
        self._nginx = None

    def _write_nginx_config(self) -> None:
        home = self.folder / "nginx"
        (home / "temp").mkdir(parents=True, exist_ok=True)
        salt = os.urandom(8)
        digest = base64.b64encode(hashlib.sha1(PASSWORD.encode() + salt).digest() + salt).decode()
        (home / "htpasswd").write_text(f"{USER}:{{SSHA}}{digest}\n")
        upstream = f"http://127.0.0.1:{self.orthanc.http_port}/"
        # Unbuffered, as a streamed answer should pass, in reads of up to 256 KiB (nginx's default
        # of one page sends a study in 4 KiB pieces: ten times slower to take apart here)
        proxied = (f"proxy_pass {upstream}; proxy_buffering off; proxy_buffer_size 256k; "
                   "proxy_buffers 4 256k; proxy_busy_buffers_size 256k; proxy_read_timeout 60s; "
                   "client_max_body_size 0;")
        temp = home / "temp"
        (home / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off; master_process on; worker_processes 1; pid {home / "nginx.pid"};
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
  uwsgi_temp_path {temp}; scgi_temp_path {temp};
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {self.site.server.cert}; ssl_certificate_key {self.site.server.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location /basic/ {{ auth_basic "PACS"; auth_basic_user_file {home / "htpasswd"}; {proxied} }}
    location /token/ {{
      if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
      {proxied}
    }}
  }}
}}
""")
