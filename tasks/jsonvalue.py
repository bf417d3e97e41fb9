"""JSON the way the task rows store it, refusing up front what PostgreSQL's ``jsonb`` would refuse
at the insert: NaN and infinity, and the NUL character (``\\u0000``)."""

from __future__ import annotations

import json
import re
from typing import Any

#: a NUL character as JSON writes it: ``\u0000`` after an even number of backslashes
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def encode(value: Any) -> str:
    """``value`` as compact JSON; :class:`ValueError` saying what the database would refuse."""
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if _NUL.search(encoded):
        raise ValueError("holds a NUL character (\\u0000), which the database cannot store")
    return encoded
