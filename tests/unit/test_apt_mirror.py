"""tools/apt_mirror.py: the Debian main archive debootstrap fetches the stand-in base from, read
from apt's sources in both formats."""

from __future__ import annotations

from pathlib import Path

from tools.apt_mirror import entries, main_archive

DEB822 = """Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
# a comment line
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def _apt(tmp_path: Path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if sources_list:
        (tmp_path / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    return tmp_path


def test_deb822_main_archive_skips_security_and_source_stanzas(tmp_path: Path) -> None:
    apt = _apt(tmp_path, parts={"debian.sources": DEB822})
    assert main_archive(entries(apt)) == "http://mirror.example/debian"


def test_one_line_format_with_options(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n",
    )
    assert main_archive(entries(apt)) == "http://one.example/debian"


def test_disabled_parts_and_other_archives_are_not_debians(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        parts={
            "a.list": "deb https://vendor.example/apt stable main\n",
            "b.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: x\n",
            "c.list.disabled": "deb http://disabled.example/debian bookworm main\n",
        },
    )
    assert main_archive(entries(apt)) is None
