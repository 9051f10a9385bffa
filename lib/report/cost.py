"""What the bucket costs: bytes held and the estimated monthly price."""
from __future__ import annotations

from typing import Mapping

from lib.errors import ConfigError

DEFAULT_PRICE_PER_GB_MONTH = 0.015  # Railway's published bucket storage price, USD per GB-month

GB = 1_000_000_000


def price_per_gb_month(environ: Mapping[str, str]) -> float:
    raw = environ.get("RESTORABLE_PRICE_PER_GB_MONTH", "").strip()
    try:
        return float(raw) if raw else DEFAULT_PRICE_PER_GB_MONTH
    except ValueError:
        raise ConfigError(f"RESTORABLE_PRICE_PER_GB_MONTH={raw!r} is not a number; use e.g. 0.015") from None


def monthly_cost(nbytes: int, price: float) -> float:
    """Estimated storage cost per month in USD (decimal GB, as providers bill)."""
    return round(nbytes / GB * price, 4)
