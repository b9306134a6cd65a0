"""Where things live: the repository root, and the cache of downloaded tools (Kafka's jars,
the Go tools)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """``$FERRY_CACHE_DIR``, or ``<repo>/.cache``."""
    env = os.environ.get("FERRY_CACHE_DIR")
    return Path(env) if env else ROOT / ".cache"


def cached_binary(name: str) -> Path:
    """Where ``tools/install_go_tools.sh`` puts the Go tool ``name`` (it may not exist yet)."""
    return cache_dir() / "bin" / name
