"""The README's configuration table and first commands stay true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import Settings, is_env_only

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    flag = f"`--{name.replace('_', '-')}`"
    if is_env_only(Settings.model_fields[name]):
        assert flag not in README  # a secret: never a flag
    else:
        assert flag in README
    assert f"`FERRY_{name.upper()}`" in README


def test_readme_opens_with_run_and_test() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block
    assert "make test" in first_block
    assert "make test" in (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
