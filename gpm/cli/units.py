"""Human units for terminal output: kept here for older imports; they live in ``gpm.humanize``."""

from __future__ import annotations

from gpm.humanize import fmt_bytes, fmt_duration, fmt_opt

__all__ = ["fmt_bytes", "fmt_duration", "fmt_opt"]
