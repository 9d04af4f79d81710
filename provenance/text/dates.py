"""Publication dates: ISO 8601 in, naive UTC out (how the database stores them)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def parse_datetime(value: object) -> Optional[datetime]:
    """Parse an ISO 8601 date or date-time; None when it is not one."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        # A Unix timestamp; one out of datetime's range (1e20, inf, NaN) is no date at all.
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)
        except (OverflowError, ValueError, OSError):
            return None
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
            return None
    return parsed
