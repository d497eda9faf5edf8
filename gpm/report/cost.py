"""What the energy cost: money and CO2 from the ``[report]`` prices (#16).

Unset by default, and then the report has no money or CO2 figure anywhere.
With ``electricity_price_per_kwh`` (and ``currency``) or
``carbon_intensity_g_per_kwh`` set, every priced row gets ``cost`` and
``co2_grams`` beside its ``energy_joules``: exactly energy in kWh times the
price or the intensity, kept to 6 and 3 decimals in json and rounded only
for display. Models also get ``cost_per_million_tokens`` (their
``joules_per_token``, priced). Prices are today's settings: a ``--weeks``
trend prices past weeks at them too.

Pure functions over the ``Report``; ``cost_table`` gives the "Cost and CO2"
section's rows to the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpm.humanize import cut, short_gpu_name, visible
from gpm.report.build import Report

JOULES_PER_KWH = 3_600_000
MILLION = 1_000_000
HOST_IN_CELL = 12


@dataclass(frozen=True)
class Pricing:
    """The ``[report]`` prices; a None price or intensity gives no such figure."""

    price_per_kwh: float | None
    currency: str | None
    carbon_g_per_kwh: float | None

    @classmethod
    def of(cls, price_per_kwh: float | None, currency: str | None,
           carbon_g_per_kwh: float | None) -> "Pricing | None":
        """None when neither a price nor an intensity is set."""
        if price_per_kwh is None and carbon_g_per_kwh is None:
            return None
        return cls(price_per_kwh, currency or None, carbon_g_per_kwh)

    def as_json(self) -> dict:
        return {"electricity_price_per_kwh": self.price_per_kwh, "currency": self.currency,
                "carbon_intensity_g_per_kwh": self.carbon_g_per_kwh}

    def cost(self, joules: float | None) -> float | None:
        if joules is None or self.price_per_kwh is None:
            return None
        return round(joules / JOULES_PER_KWH * self.price_per_kwh, 6)

    def co2_grams(self, joules: float | None) -> float | None:
        if joules is None or self.carbon_g_per_kwh is None:
            return None
        return round(joules / JOULES_PER_KWH * self.carbon_g_per_kwh, 3)

    def figures(self, joules: float | None) -> dict:
        """``cost`` and/or ``co2_grams`` of ``joules``: only the keys that are priced."""
        out = {}
        if self.price_per_kwh is not None:
            out["cost"] = self.cost(joules)
        if self.carbon_g_per_kwh is not None:
            out["co2_grams"] = self.co2_grams(joules)
        return out


def _beside(row: dict, key: str, extra: dict) -> dict:
    """``row`` with ``extra`` right after ``key`` (json reads in that order)."""
    out = {}
    for k, v in row.items():
        out[k] = v
        if k == key:
            out.update(extra)
    return out


def priced(row: dict, pricing: Pricing) -> dict:
    return _beside(row, "energy_joules", pricing.figures(row.get("energy_joules")))


def priced_model(row: dict, pricing: Pricing) -> dict:
    """A model's row: its measured energy priced, and a million generated tokens at its J/token."""
    out = priced(row, pricing)
    if pricing.price_per_kwh is not None:
        per_token = row.get("joules_per_token")
        out = _beside(out, "joules_per_token", {
            "cost_per_million_tokens": None if per_token is None else pricing.cost(per_token * MILLION)})
    return out


def add_pricing(report: Report, pricing: Pricing) -> None:
    """Price every GPU, host, the fleet, category, game, model and trend week of ``report``."""
    report.pricing = pricing.as_json()
    report.gpus = [priced(g, pricing) for g in report.gpus]
    report.hosts = [priced(h, pricing) for h in report.hosts]
    if report.fleet:
        report.fleet = priced(report.fleet, pricing)
    report.workload = [priced(w, pricing) for w in report.workload]
    report.games = [priced(g, pricing) for g in report.games]
    report.llm = [priced_model(m, pricing) for m in report.llm]
    if report.trend is not None:
        report.trend = [priced(t, pricing) for t in report.trend]


# ---- the "Cost and CO2" section -------------------------------------------

def money(amount: float | None, currency: str | None) -> str:
    """``EUR 1,234.56``: to the cent, the code first."""
    if amount is None:
        return "-"
    return f"{currency} {amount:,.2f}" if currency else f"{amount:,.2f}"


def grams(co2: float | None) -> str:
    """``346 g``, ``12.345 kg``, ``1.234 t``: to the gram below a tonne."""
    if co2 is None:
        return "-"
    if round(co2) < 1000:
        return f"{co2:.0f} g"
    if round(co2 / 1000, 3) < 1000:
        return f"{co2 / 1000:.3f} kg"
    return f"{co2 / MILLION:,.3f} t"


def _aligned(cells: list[str], currency: str | None) -> list[str]:
    """Amounts after their code with the numbers right-aligned, so the cents line up."""
    if not currency:
        return cells
    numbers = [c[len(currency) + 1:] if c.startswith(currency + " ") else c for c in cells]
    width = max((len(n) for n in numbers if n), default=0)
    return [f"{currency} {n:>{width}}" if c.startswith(currency + " ") else c for c, n in zip(cells, numbers)]


def _priced_rows(report: Report) -> list[tuple[str, str | None, str, dict]]:
    """(kind, host, name, row) of every priced row, in the report's order."""
    several = len(report.coverage) > 1 or len(report.hosts) > 1
    out = []
    for g in report.gpus:
        out.append(("GPU", g["host"], f"{g['gpu_index']} {short_gpu_name(g['gpu_name'])}", g))
    for h in report.hosts:
        if h.get("gpus"):
            out.append(("host", h["host"], h["host"], h))
    if several and report.fleet:
        out.append(("fleet", None, "all hosts", report.fleet))
    out += [("category", None, w["category"], w) for w in report.workload]
    out += [("game", None, g["game"], g) for g in report.games]
    out += [("model", None, m["model"], m) for m in report.llm]
    out += [("week", None, t["iso_week"], t) for t in report.trend or []]
    if several:
        out = [(kind, host, f"{cut(visible(host), HOST_IN_CELL)}:{name}" if kind == "GPU" else name, row)
               for kind, host, name, row in out]
    return out


def cost_table(report: Report, human: bool) -> tuple[list[str], list[list]]:
    """(headers, rows) of the "Cost and CO2" section; none without prices."""
    p = report.pricing
    if not p:
        return [], []
    rows = _priced_rows(report)
    has_price = p["electricity_price_per_kwh"] is not None
    has_co2 = p["carbon_intensity_g_per_kwh"] is not None
    per_million = has_price and any(kind == "model" for kind, *_ in rows)
    if not human:
        keys = ["energy_joules"] + ["cost"] * has_price + ["co2_grams"] * has_co2
        keys += ["cost_per_million_tokens"] * per_million
        return (["kind", "host", "name", *keys],
                [[kind, host, name if kind != "GPU" else row["gpu_index"], *[row.get(k) for k in keys]]
                 for kind, host, name, row in rows])
    currency = p["currency"]
    headers = ["Kind", "What"]
    columns: list[list[str]] = [[kind for kind, *_ in rows], [name for _, _, name, _ in rows]]
    if has_price:
        headers.append("Cost")
        columns.append(_aligned([money(row["cost"], currency) for *_, row in rows], currency))
    if has_co2:
        headers.append("CO2")
        columns.append([grams(row["co2_grams"]) for *_, row in rows])
    if per_million:
        headers.append("Per 1M tok")
        columns.append(_aligned([money(row["cost_per_million_tokens"], currency) if kind == "model" else ""
                                 for kind, _, _, row in rows], currency))
    return headers, [list(cells) for cells in zip(*columns)]


def cost_notes(report: Report) -> list[str]:
    """The prices the section used, and what "per 1M tok" means."""
    p = report.pricing or {}
    said = []
    if p.get("electricity_price_per_kwh") is not None:
        price = f"{p['electricity_price_per_kwh']:g}"
        said.append(f"{p['currency']} {price} per kWh" if p["currency"] else f"{price} per kWh")
    if p.get("carbon_intensity_g_per_kwh") is not None:
        said.append(f"{p['carbon_intensity_g_per_kwh']:g} g CO2 per kWh")
    notes = [f"At {' and '.join(said)} ([report] in the configuration)."] if said else []
    if report.llm and p.get("electricity_price_per_kwh") is not None:
        notes.append("Per 1M tok: a million generated tokens at the model's J/tok (measured requests).")
    if report.trend is not None:
        notes.append("Every week is priced at today's settings.")
    return notes
