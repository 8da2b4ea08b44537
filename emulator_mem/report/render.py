"""One self-contained HTML file from a :class:`~emulator_mem.report.model.RunReport`.

A pure function of plain data: no Unicorn, no manager, no file access apart from reading
the package's own stylesheet and script, which are inlined. The page needs no network and
opens from disk. The text parts (header, exit status, exception report, console output,
totals) are plain HTML written here, so they read without JavaScript; the address-space map,
the history timeline and the long lists are drawn by the inlined script from a JSON island,
because only the browser knows how wide the screen is and what fits on it (it aggregates
what cannot be shown: 100k allocations become at most a few thousand bars).

Numbers in the JSON island: region addresses and sizes are plain numbers (user-mode
addresses stay below 2**48, exact in a double); event and call values that may be any
64-bit value (arguments, results, exception addresses) are hex strings.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from .model import CATEGORIES, EVENT_KINDS, RunReport

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SIZE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _human(size: int) -> str:
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{size:,} bytes" if unit == 0 else f"{value:,.1f} {_SIZE_UNITS[unit]}"


class _Strings:
    """A string table: the JSON island names each distinct string once."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.items)
            self.items.append(text)
        return index


def report_data(report: RunReport) -> dict[str, Any]:
    """The JSON island the script draws from (compact rows plus a string table)."""
    strings = _Strings()
    regions = [
        [r.BaseAddress, r.RegionSize, r.State, r.Protect, r.Type, r.AllocationBase,
         r.AllocationProtect, CATEGORIES.index(r.category) if r.category in CATEGORIES else 2,
         strings(r.name)]
        for r in sorted(report.regions, key=lambda r: r.BaseAddress)
    ]
    events = [
        [e.instructions, EVENT_KINDS.index(e.kind), f"{e.address:#x}", e.size, e.protect,
         e.old_protect, strings(e.name), -1 if e.api is None else e.api, strings(e.detail)]
        for e in report.events
    ]
    calls = [
        [c.instructions, strings(c.name), [f"{a:#x}" for a in c.args],
         None if c.result is None else f"{c.result:#x}", f"{c.caller:#x}"]
        for c in report.api_calls
    ]
    return {
        "bits": report.bits, "lowest": report.lowest_address, "highest": report.highest_address,
        "instructions": report.instructions, "resolution": report.resolution,
        "categories": list(CATEGORIES), "kinds": list(EVENT_KINDS),
        "regions": regions, "events": events, "calls": calls, "strings": strings.items,
        "droppedEvents": report.dropped_events, "droppedCalls": report.dropped_calls,
    }


def _json_island(data: dict[str, Any]) -> str:
    text = json.dumps(data, separators=(",", ":"))
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def _totals_table(report: RunReport) -> str:
    rows = []
    total_r = total_c = total_n = 0
    for t in report.totals:
        rows.append(f"<tr><td>{html.escape(t.type)}</td><td>{t.regions:,}</td>"
                    f"<td title='{t.reserved:,} bytes'>{_human(t.reserved)}</td>"
                    f"<td title='{t.committed:,} bytes'>{_human(t.committed)}</td></tr>")
        total_r, total_c, total_n = total_r + t.reserved, total_c + t.committed, total_n + t.regions
    rows.append(f"<tr class='total'><td>Total</td><td>{total_n:,}</td>"
                f"<td title='{total_r:,} bytes'>{_human(total_r)}</td>"
                f"<td title='{total_c:,} bytes'>{_human(total_c)}</td></tr>")
    return ("<table id='totals'><thead><tr><th>Type</th><th>Regions</th><th>Reserved</th>"
            "<th>Committed</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _status(report: RunReport) -> str:
    facts = [f"{report.bits}-bit", report.origin, report.state]
    if report.instructions:
        facts.append(f"{report.instructions:,} instructions")
    parts = [f"<p class='facts'>{html.escape(' · '.join(facts))}</p>"]
    if report.exit_text:
        bad = report.exit_code not in (None, 0)
        parts.append(f"<p id='exit' class='{'bad' if bad else 'ok'}'>{html.escape(report.exit_text)}</p>")
    if report.exception:
        parts.append(f"<pre id='exception'>{html.escape(report.exception)}</pre>")
    return "".join(parts)


def render_html(report: RunReport) -> str:
    """The complete report page: inline CSS, inline script, data as a JSON island."""
    title = f"{report.title} — emulator-mem report"
    console = ""
    if report.console:
        console = ("<section><h2>Console output</h2><pre id='console'>"
                   f"{html.escape(report.console)}</pre></section>")
    history_note = ""
    if report.history != "recorded":
        history_note = f"<p class='note'>History {html.escape(report.history)}.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_asset("report.css")}</style>
</head><body>
<header><h1>{html.escape(report.title)}</h1><p class="source">{html.escape(report.source)}</p>
{_status(report)}</header>
<section><h2>Address space</h2>
<div id="legend"></div>
<div id="map" role="img" aria-label="address-space map"></div>
<div id="details" class="details">Click a bar to keep its details here.</div>
</section>
<section><h2>History</h2>{history_note}
<div id="timeline"></div>
<div id="events"></div>
</section>
<section><h2>Totals</h2>{_totals_table(report)}</section>
{console}
<section><h2>API log</h2><div id="calls"></div></section>
<div id="tip" hidden></div>
<script type="application/json" id="report-data">{_json_island(report_data(report))}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""
