"""Print the Debian mirror this machine's apt uses for the main archive (not security or
updates), read from /etc/apt/sources.list and /etc/apt/sources.list.d/ (both the one-line and
the deb822 format), so that debootstrap fetches from the same mirror as apt-get.

    python3 tools/apt_mirror.py          # e.g. http://<mirror>/debian
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

APT_DIR = Path("/etc/apt")


def _one_line_entries(text: str) -> Iterator[tuple[str, str]]:
    """(uri, suite) of every `deb` line of a sources.list."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], words[1]


def _deb822_entries(text: str) -> Iterator[tuple[str, str]]:
    """(uri, suite) of every `deb` stanza of a .sources file."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            name, _, value = raw.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite


def entries(apt_dir: Path = APT_DIR) -> Iterator[tuple[str, str]]:
    """(uri, suite) of every enabled binary source apt reads, in apt's order."""
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        yield from _one_line_entries(main_list.read_text())
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                yield from _one_line_entries(path.read_text())
            elif path.suffix == ".sources":
                yield from _deb822_entries(path.read_text())


def main_archive(found: Iterable[tuple[str, str]]) -> str | None:
    """The first mirror of Debian's main archive: a suite without a -security, -updates or
    -backports part, served from a path that ends in /debian."""
    for uri, suite in found:
        if "-" not in suite and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return None


def main() -> int:
    mirror = main_archive(entries())
    if mirror is None:
        print(f"no Debian main archive in {APT_DIR}/sources.list*", file=sys.stderr)
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
