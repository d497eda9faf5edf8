"""``gpm report --format html``: one self-contained page of charts (#16).

Rendered from the json report's dict (``to_json_obj``), so the page's numbers
are the json's. Inline CSS and SVG only: no script, no font, image or style
sheet fetched from anywhere. Light and dark through CSS custom properties and
``prefers-color-scheme``; ``@media print`` for A4; a viewport and charts
that scale to the width for a phone. Everything from outside (host, GPU,
process, game and model names) is escaped and made visible.
"""

from __future__ import annotations

from gpm.report import charts_gpu, charts_use
from gpm.report import figures as f
from gpm.report.build import Report
from gpm.report.period import fmt_local
from gpm.report.render import to_json_obj
from gpm.report.svg import esc

# Each part of the page and the --section names that select it.
PARTS = (
    (charts_gpu.heatmap, ("coverage", "gaps", "gpus")),
    (charts_gpu.energy_per_day, ("days", "workload")),
    (charts_gpu.memory_and_temperature, ("gpus", "throttling")),
    (charts_use.llm, ("llm",)),
    (charts_use.games, ("games",)),
    (charts_use.processes, ("processes",)),
    (charts_use.alerts, ("alerts",)),
)

CSS = """
:root{--bg:#fff;--fg:#1b1f24;--muted:#59636e;--grid:#d8dee4;--line:#eaeef2;--heat:#0b5cad;
--gap:#8c959f;--gapbg:#f3f4f6;--out:#f6f8fa;--mark:#cf222e;
--k0:#0969da;--k1:#bf8700;--k2:#1a7f37;--k3:#8250df;--k4:#cf222e;--k5:#e16f24;--k6:#1b7c83;--k7:#6e7781;
color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--grid:#30363d;
--line:#21262d;--heat:#58a6ff;--gap:#6e7681;--gapbg:#161b22;--out:#161b22;--mark:#ff7b72;
--k0:#58a6ff;--k1:#d29922;--k2:#3fb950;--k3:#bc8cff;--k4:#ff7b72;--k5:#ffa657;--k6:#39c5cf;--k7:#9198a1}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1100px;padding:1rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .4rem;border-bottom:1px solid var(--grid)}
p.note,p.meta,p.omitted,caption{color:var(--muted)}caption{text-align:left;padding:.3rem 0}
.plot{overflow-x:auto}.plot svg{min-width:540px;display:block;margin:.4rem 0}
details{margin:.4rem 0 1rem;overflow-x:auto}summary{cursor:pointer;color:var(--muted)}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0 .8rem}
th,td{padding:.15rem .5rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
svg.chart text{font-size:11px;font-family:inherit}
.fg{fill:var(--fg)}.strong{font-weight:600}svg.chart text.heading{font-size:13px;font-weight:600}.fgfill{fill:var(--fg)}.grid{stroke:var(--grid);stroke-width:1}
.heat{fill:var(--heat)}.gap{stroke:var(--gap);stroke-width:.5}.gapbg{fill:var(--gapbg)}
.gapline{stroke:var(--gap);stroke-width:1}.out{fill:var(--bg);stroke:var(--grid);stroke-width:.5;stroke-dasharray:2 2}.mark{fill:var(--mark)}
.line{fill:none;stroke-width:1.6}.box{fill-opacity:.55}.median{fill:var(--fg)}
.f0{fill:var(--k0)}.f1{fill:var(--k1)}.f2{fill:var(--k2)}.f3{fill:var(--k3)}
.f4{fill:var(--k4)}.f5{fill:var(--k5)}.f6{fill:var(--k6)}.f7{fill:var(--k7)}
.l0{stroke:var(--k0)}.l1{stroke:var(--k1)}.l2{stroke:var(--k2)}.l3{stroke:var(--k3)}
.l4{stroke:var(--k4)}.l5{stroke:var(--k5)}.l6{stroke:var(--k6)}.l7{stroke:var(--k7)}
@media (max-width:600px){body{padding:.5rem;font-size:14px}}
@media print{@page{size:A4;margin:12mm}body{max-width:none;padding:0;font-size:10pt}
.plot{overflow:visible}.plot svg{min-width:0}section.fig{break-inside:avoid-page}
details{overflow:visible}summary{display:none}table{font-size:7pt}}
"""


def render_html(report: Report, sections: tuple[str, ...] = ()) -> str:
    """The page for ``gpm report --format html``."""
    return page(to_json_obj(report), sections)


def page(obj: dict, sections: tuple[str, ...] = ()) -> str:
    """The page from a json report's dict; ``sections`` (``--section``) picks its parts."""
    r = obj["report"]
    label = r["iso_week"] or f"{fmt_local(r['since_ms'])} to {fmt_local(r['until_ms'])}"
    parts = [part(obj) for part, names in PARTS if not sections or set(names) & set(sections)]
    body = [
        f"<header><h1>GPU report: {esc(label)}</h1>",
        f'<p class="meta">{esc(fmt_local(r["since_ms"]))} to {esc(fmt_local(r["until_ms"]))} local time; '
        f'generated {esc(fmt_local(r["generated_ms"]))} by gpm. Busy means utilization above '
        f'{r["busy_threshold_percent"]:g} %.</p></header>',
        "<main>",
        summary(obj) if not sections or {"hosts", "gpus", "coverage", "gaps"} & set(sections) else "",
        *parts,
        "</main>",
    ]
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>GPU report {esc(label)}</title>"
            '<link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def summary(obj: dict) -> str:
    """The figures at a glance: the fleet, each GPU, coverage and gaps."""
    out = ['<section id="summary"><h2>Summary</h2>']
    fleet = obj["fleet"]
    if fleet:
        out.append(f.table(
            ["Fleet", "GPUs", "GPU time", "GPU-busy", "Mean utilization", "Energy", "Throttled"],
            [["all hosts", f.cell(fleet["gpus"], f.count, ("fleet", "gpus")),
              f.cell(fleet["gpu_sampled_seconds"], f.hours, ("fleet", "gpu_sampled_seconds")),
              f.cell(fleet["busy_seconds"], f.hours, ("fleet", "busy_seconds")),
              f.cell(fleet["utilization_mean_percent"], f.percent, ("fleet", "utilization_mean_percent")),
              f.cell(fleet["energy_joules"], f.energy, ("fleet", "energy_joules")),
              f.cell(fleet["throttled_seconds"], f.hours, ("fleet", "throttled_seconds"))]],
            "Summed over the GPUs: two GPUs busy for an hour are 2.0 h of GPU-busy"))
    if obj["gpus"]:
        rows = []
        for i, g in enumerate(obj["gpus"]):
            p = ("gpus", i)
            rows.append([f"{g['host']}:{g['gpu_index']}", g["gpu_name"] or "?",
                         f.cell(g["busy_seconds"], f.hours, (*p, "busy_seconds")),
                         f.cell(g["utilization_mean_percent"], f.percent, (*p, "utilization_mean_percent")),
                         f.cell(g["utilization_p95_percent"], f.percent, (*p, "utilization_p95_percent")),
                         f.cell(g["temperature_max_celsius"], f.celsius, (*p, "temperature_max_celsius")),
                         f.cell(g["memory_peak_bytes"], f.nbytes, (*p, "memory_peak_bytes")),
                         f.cell(g["power_mean_watts"], lambda v: f"{v:.0f} W", (*p, "power_mean_watts")),
                         f.cell(g["energy_joules"], f.energy, (*p, "energy_joules")),
                         f.cell(g["throttled_seconds"], f.hours, (*p, "throttled_seconds")),
                         *f.price_cells(obj, g, *p)])
        out.append(f.table(["GPU", "Name", "Busy", "Mean util", "p95 util", "Max temp", "Peak memory",
                            "Mean power", "Energy", "Throttled", *f.price_headers(obj)], rows, "Per GPU"))
    else:
        out.append(f'<p class="omitted">{esc(obj["omitted"].get("gpus", "no GPU samples in this range"))}</p>')
    cov = [[c["host"], f.cell(c["coverage_ratio"], lambda v: f"{v * 100:.1f} %", ("coverage", i, "coverage_ratio")),
            f.cell(c["sampled_seconds"], f.hours, ("coverage", i, "sampled_seconds")),
            f.cell(len(c["gaps"]), f.count), f.cell(c["gap_seconds"], f.hours, ("coverage", i, "gap_seconds"))]
           for i, c in enumerate(obj["coverage"])]
    out.append(f.table(["Host", "Coverage", "Sampled", "Gaps", "Gap time"], cov,
                       "Coverage: gaps are time gpm was not sampling, never counted as idle"))
    gaps = [[c["host"], fmt_local(g["start_ms"]), fmt_local(g["end_ms"]),
             f.cell(g["seconds"], f.hours, ("coverage", i, "gaps", k, "seconds"))]
            for i, c in enumerate(obj["coverage"]) for k, g in enumerate(c["gaps"])]
    if gaps:
        out.append(f"<details><summary>Gaps ({len(gaps)})</summary>"
                   + f.table(["Host", "From", "To", "Length"], gaps) + "</details>")
    out.append("</section>")
    return "".join(out)
