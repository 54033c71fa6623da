"""JSON helpers for result files that strict readers (browsers, jq, JSON Schema) accept."""

from __future__ import annotations

import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """NaN and infinities become null: strict JSON readers (and the bench schema) refuse them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
