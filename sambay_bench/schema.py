"""The JSON schema of ``bench.json``: the common part in ``schema.json``, each mode's section from
the mode itself (``Mode.schema``), so the schema knows every registered mode and no other.
``sambay-bench schema`` prints the whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .modes import MODES

COMMON = Path(__file__).with_name("schema.json")


def schema() -> dict[str, Any]:
    doc = json.loads(COMMON.read_text())
    doc["properties"]["settings"]["properties"]["modes"]["items"] = {"enum": list(MODES)}
    doc["properties"]["modes"]["properties"] = {name: mode.schema() for name, mode in MODES.items()}
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Raises ``jsonschema.ValidationError`` naming the first field that does not fit."""
    import jsonschema

    jsonschema.validate(doc, schema())
