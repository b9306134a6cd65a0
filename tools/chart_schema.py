"""The `config` section of the Helm chart's values.schema.json, derived from Ferry's Settings.

`config` takes any `ferry serve` setting by its name (each becomes its FERRY_<NAME> variable),
except those the chart sets from its own values: the define "ferry.managedSettings" in
helm/ferry/templates/_ferry.tpl names them. Every other setting gets a property with its JSON
type and bounds, so that `helm` refuses a wrong type, and a setting Ferry gains shows up here
(tests/chart checks that the committed schema is this one).

    python tools/chart_schema.py           # rewrite the config section of values.schema.json
    python tools/chart_schema.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sidecar.config import Settings  # noqa: E402

CHART = ROOT / "helm" / "ferry"
SCHEMA = CHART / "values.schema.json"
HELPERS = CHART / "templates" / "_ferry.tpl"
#: A decimal number written as a string.
NUMBER = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def managed_settings() -> dict[str, str]:
    """Setting name -> the chart values that set it (the define "ferry.managedSettings")."""
    text = HELPERS.read_text()
    found = re.search(r'define "ferry\.managedSettings" -}}\n(.*?)\n{{- end -}}', text, re.S)
    if found is None:
        raise SystemExit(f'{HELPERS}: no define "ferry.managedSettings"')
    managed: dict[str, str] = yaml.safe_load(found.group(1))
    return managed


def _json_type(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a setting's type (None aside: an unset setting is left out)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        [inner] = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _json_type(inner)
    if origin is typing.Literal:
        return {"type": "string", "enum": list(typing.get_args(annotation))}
    if origin in (tuple, frozenset, list, set):
        return {"type": ["array", "string"], "items": {"type": "string"}}
    if origin is dict:
        return {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        # `helm --set` keeps a fraction as a string ("0.25"): one that reads as a number passes.
        return {"type": ["number", "string"], "pattern": NUMBER}
    if annotation in (str, Path):
        return {"type": "string"}
    raise SystemExit(f"no JSON type for the setting type {annotation!r}: add one here")


def _bounds(field: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Gt):
            bounds["exclusiveMinimum"] = item.gt
        elif isinstance(item, annotated_types.Ge):
            bounds["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["maximum"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds["exclusiveMaximum"] = item.lt
    return bounds


def config_schema() -> dict[str, Any]:
    """The schema of `config`: every setting the chart does not manage, nothing else."""
    managed = managed_settings()
    properties = {
        name: {
            **_json_type(field.annotation),
            **_bounds(field),
            "description": f"FERRY_{name.upper()}: {field.description}",
        }
        for name, field in Settings.model_fields.items()
        if name not in managed
    }
    return {
        "type": "object",
        "description": "any other `ferry serve` setting by its snake_case name; each becomes "
        "its FERRY_<NAME> variable",
        "additionalProperties": False,
        "properties": properties,
    }


def schema_with_config(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (values.schema.json) with its config section as derived from Settings."""
    updated = json.loads(json.dumps(schema))
    updated["properties"]["config"] = config_schema()
    return updated


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the schema is stale")
    args = parser.parse_args()
    current = SCHEMA.read_text()
    wanted = render(schema_with_config(json.loads(current)))
    if current == wanted:
        return 0
    if args.check:
        print(f"{SCHEMA.relative_to(ROOT)} is stale: run python tools/chart_schema.py")
        return 1
    SCHEMA.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
