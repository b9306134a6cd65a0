"""A toxiproxy server on 127.0.0.1 and a tiny client of its HTTP API.

The server binary comes from ``tools/install_go_tools.sh toxiproxy-server`` (in .cache/bin).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from testkit.paths import ROOT, cached_binary
from testkit.ports import HOST, free_port


def binary() -> str | None:
    found = cached_binary("toxiproxy-server")
    if found.exists():
        return str(found)
    return shutil.which("toxiproxy-server")


def install() -> str | None:
    """Install toxiproxy-server with the project's Go tool installer; its path or None."""
    if binary() is None:
        subprocess.run([str(ROOT / "tools" / "install_go_tools.sh"), "toxiproxy-server"],
                       check=False, capture_output=True)  # fmt: skip
    return binary()


class Toxiproxy:
    """A toxiproxy-server process and its API."""

    def __init__(self, exe: str, log_path: Path) -> None:
        self.port = free_port()
        self.api = f"http://{HOST}:{self.port}"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([exe, "-host", HOST, "-port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                self._call("GET", "/version")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.1)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            self.api + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            text = resp.read()
        return json.loads(text) if text else None

    def proxy(self, name: str, listen_port: int, upstream: str) -> str:
        """Create a proxy 127.0.0.1:listen_port -> upstream; return its listen address."""
        listen = f"{HOST}:{listen_port}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                         "enabled": True})  # fmt: skip
        return listen

    def add(self, proxy: str, name: str, kind: str, stream: str = "downstream",
            **attributes: Any) -> None:  # fmt: skip
        self._call("POST", f"/proxies/{proxy}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": 1.0,
            "attributes": attributes,
        })  # fmt: skip

    def remove(self, proxy: str, name: str) -> None:
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def enable(self, proxy: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
