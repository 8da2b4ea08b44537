/* emulator-mem report: draws the address-space map, the history timeline and the long lists
   from the JSON island. No network, no libraries. What a screen cannot show is aggregated:
   runs of unnamed allocations beyond MAX_BARS become one bar each, timeline events share a
   marker per pixel bin, lists are paged. */
"use strict";
(function () {
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const S = D.strings, CATS = D.categories, KINDS = D.kinds;
  const NS = "http://www.w3.org/2000/svg";
  const MAX_BARS = 1500, PAGE_ROWS = 400;
  const W = Math.max(760, Math.min(1260, document.getElementById("map").clientWidth || 1180));
  const HEXW = D.bits === 64 ? 16 : 8;  // hex digits, as the vmmap table prints them

  // -- Windows names ------------------------------------------------------------------
  const PROT = {0x01: "PAGE_NOACCESS", 0x02: "PAGE_READONLY", 0x04: "PAGE_READWRITE",
    0x08: "PAGE_WRITECOPY", 0x10: "PAGE_EXECUTE", 0x20: "PAGE_EXECUTE_READ",
    0x40: "PAGE_EXECUTE_READWRITE", 0x80: "PAGE_EXECUTE_WRITECOPY"};
  const SHORT = {0x01: "NA", 0x02: "R", 0x04: "RW", 0x08: "WC", 0x10: "X", 0x20: "RX", 0x40: "RWX", 0x80: "XWC"};
  const STATE = {0x1000: "MEM_COMMIT", 0x2000: "MEM_RESERVE", 0x10000: "MEM_FREE"};
  const TYPE = {0x20000: "MEM_PRIVATE", 0x40000: "MEM_MAPPED", 0x1000000: "MEM_IMAGE"};
  const KIND_LABEL = {allocate: "allocate", commit: "commit", protect: "protect", decommit: "decommit",
    release: "release", map_view: "view mapped", unmap_view: "view unmapped", write_watch: "write-watch hit",
    guard_page: "guard-page hit", exception: "exception"};
  function protName(p) {
    if (!p) return "0";
    let s = PROT[p & 0xff] || ("0x" + (p & 0xff).toString(16));
    if (p & 0x100) s += " | PAGE_GUARD";
    if (p & 0x200) s += " | PAGE_NOCACHE";
    if (p & 0x400) s += " | PAGE_WRITECOMBINE";
    return s;
  }
  function protShort(p) {
    if (!p) return "";
    return (SHORT[p & 0xff] || "?") + (p & 0x100 ? "+G" : "");
  }
  function hex(v, w) { return "0x" + v.toString(16).padStart(w || 0, "0"); }
  function human(n) {
    const u = ["bytes", "KiB", "MiB", "GiB", "TiB"]; let i = 0, v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return i ? v.toFixed(v < 10 ? 1 : 0) + " " + u[i] : n.toLocaleString("en-US") + " bytes";
  }
  function esc(s) { return String(s).replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";"); }
  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // -- regions -> allocations -> bars --------------------------------------------------
  // region row: [base, size, state, protect, type, allocBase, allocProtect, category, name]
  const R = D.regions;
  const allocs = [];  // {first, last (region indexes, inclusive), base, end, named, cat}
  for (let i = 0; i < R.length; i++) {
    const r = R[i], a = allocs[allocs.length - 1];
    if (a && a.base === r[5] && a.end === r[0]) { a.last = i; a.end = r[0] + r[1]; if (S[r[8]]) a.named = true; }
    else allocs.push({first: i, last: i, base: r[5], end: r[0] + r[1], named: !!S[r[8]], cat: r[7]});
  }
  let zoom = 1;  // a sparse address space that fits on one row is drawn larger
  function pieceWidth(size) { return zoom * (14 + 9 * Math.log2(Math.max(1, size / 4096))); }
  function gapWidth(size) { return zoom * Math.min(34, 5 + 2.2 * Math.log2(Math.max(1, size / 65536))); }
  // Items in address order: {kind: "alloc"|"agg"|"gap", ...}
  const items = [];
  let groupSize = 1;
  if (allocs.length > MAX_BARS) {
    const unnamed = allocs.filter(a => !a.named).length;
    groupSize = Math.max(2, Math.ceil(unnamed / Math.max(1, MAX_BARS - (allocs.length - unnamed))));
  }
  let cursor = D.lowest, pending = null;
  function flushGroup() {
    if (pending) { items.push(pending); cursor = pending.end; pending = null; }
  }
  function addGap(to) { if (to > cursor) items.push({kind: "gap", base: cursor, end: to}); }
  for (const a of allocs) {
    if (groupSize > 1 && !a.named) {
      if (!pending) { addGap(a.base); pending = {kind: "agg", base: a.base, end: a.end, allocs: [], reserved: 0, committed: 0, cats: [0, 0, 0, 0]}; }
      pending.allocs.push(a); pending.end = a.end;
      for (let i = a.first; i <= a.last; i++) {
        const r = R[i]; pending.reserved += r[1]; pending.cats[r[7]] += r[1];
        if (r[2] === 0x1000) pending.committed += r[1];
      }
      if (pending.allocs.length >= groupSize) flushGroup();
      continue;
    }
    flushGroup();
    addGap(a.base);
    items.push({kind: "alloc", alloc: a, base: a.base, end: a.end});
    cursor = a.end;
  }
  flushGroup();
  addGap(D.highest);

  // -- the map -------------------------------------------------------------------------
  const LABEL_W = HEXW * 7 + 26, ROW_H = 52, BAR_Y = 18, BAR_H = 28;
  let natural = 0;
  for (const it of items) {
    if (it.kind === "gap") natural += gapWidth(it.end - it.base) + 2;
    else if (it.kind === "agg") natural += pieceWidth(it.end - it.base) + 8;
    else for (let i = it.alloc.first; i <= it.alloc.last; i++) natural += pieceWidth(R[i][1]) + (i === it.alloc.last ? 2 : 0);
  }
  if (natural > 0 && natural < W - LABEL_W - 12) zoom = Math.min(2.2, (W - LABEL_W - 12) / natural);
  const mapDiv = document.getElementById("map");
  const svg = el("svg", {width: W, "data-bars": 0});
  const defs = el("defs", {}, svg);
  const pat = el("pattern", {id: "freehatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)"}, defs);
  el("rect", {width: 6, height: 6, fill: "#eef0f2"}, pat);
  el("line", {x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#b9c0c7", "stroke-width": 2}, pat);
  let x = LABEL_W, row = 0, bars = 0;
  const regionRect = new Map();  // region index -> rect (for highlighting from the history)
  function newRow(base) {
    row++; x = LABEL_W;
    const t = el("text", {x: 4, y: (row - 1) * ROW_H + BAR_Y + 15, class: "rowlabel"}, svg);
    t.textContent = hex(base, HEXW);
  }
  function place(w, base) {
    if (row === 0 || (x + w > W - 6 && x > LABEL_W)) newRow(base);
    const at = x; x += w + 2; return at;
  }
  for (const it of items) {
    if (it.kind === "gap") {
      const w = gapWidth(it.end - it.base), at = place(w, it.base);
      el("rect", {x: at, y: (row - 1) * ROW_H + BAR_Y + 4, width: w, height: BAR_H - 8, class: "gap",
        "data-gap": it.base + ":" + it.end}, svg);
      continue;
    }
    if (it.kind === "agg") {
      const w = pieceWidth(it.end - it.base) + 6, at = place(w, it.base);
      let best = 0; for (let c = 1; c < 4; c++) if (it.cats[c] > it.cats[best]) best = c;
      const rect = el("rect", {x: at, y: (row - 1) * ROW_H + BAR_Y, width: w, height: BAR_H,
        class: "bar agg pw c-" + CATS[best], "data-agg": items.indexOf(it)}, svg);
      rect.__agg = it; bars++;
      if (w > 40) {
        const t = el("text", {x: at + 3, y: (row - 1) * ROW_H + BAR_Y - 3, class: "barlabel"}, svg);
        t.textContent = "×" + it.allocs.length;
      }
      continue;
    }
    const a = it.alloc;
    let w = 0; for (let i = a.first; i <= a.last; i++) w += pieceWidth(R[i][1]);
    let at = place(w, a.base);
    const y = (row - 1) * ROW_H + BAR_Y;
    const name = S[R[a.first][8]] || "";
    if (name && w > 34) {
      const t = el("text", {x: at + 1, y: y - 3, class: "barlabel"}, svg);
      const label = name.replace(/ (\.\w+|headers)$/, "");
      t.textContent = label.length * 6 > w + 30 ? label.slice(0, Math.max(3, Math.floor((w + 30) / 6))) + "…" : label;
    }
    for (let i = a.first; i <= a.last; i++) {
      const r = R[i], pw = pieceWidth(r[1]);
      const p = r[3] & 0xff, committed = r[2] === 0x1000;
      let shade = "res";
      if (committed) shade = (p & 0xf0) ? "px" : (p & 0x0c) ? "pw" : (p & 0x02) ? "pr" : "pn";
      const rect = el("rect", {x: at, y: y, width: pw, height: BAR_H, class: "bar c-" + CATS[r[7]] + " " + shade +
        (r[3] & 0x100 ? " guard" : ""), "data-r": i, "data-name": S[r[8]], "data-base": hex(r[0])}, svg);
      regionRect.set(i, rect); bars++;
      if (r[3] & 0x100) el("rect", {x: at, y: y - 4, width: pw, height: 4, class: "guardmark"}, svg);
      at += pw;
    }
  }
  svg.setAttribute("height", row * ROW_H + 6);
  svg.setAttribute("data-bars", bars);
  mapDiv.appendChild(svg);

  // legend
  const legend = document.getElementById("legend");
  let lh = "";
  for (const c of CATS) lh += `<span><span class="sw" style="background:var(--${c})"></span>${c === "mmio" ? "MMIO" : c}</span>`;
  lh += `<span>shade: <b>X</b> executable · <b>W</b> writable · <b>R</b> read-only · pale: no access · dashed: reserved</span>`;
  lh += `<span><span class="sw" style="background:var(--guard)"></span>guard page</span>`;
  lh += `<span><span class="sw" style="background:repeating-linear-gradient(45deg,#eef0f2 0 3px,#b9c0c7 3px 5px)"></span>free (compressed)</span>`;
  if (groupSize > 1) lh += `<span><b>×N</b>: ${groupSize.toLocaleString("en-US")} unnamed allocations per bar (${allocs.length.toLocaleString("en-US")} in all)</span>`;
  legend.innerHTML = lh;

  // -- tooltips and details --------------------------------------------------------------
  const tip = document.getElementById("tip"), details = document.getElementById("details");
  function regionHtml(i) {
    const r = R[i], w = HEXW;
    const rows = [["BaseAddress", hex(r[0], w)], ["AllocationBase", hex(r[5], w)],
      ["AllocationProtect", protName(r[6])], ["RegionSize", hex(r[1]) + " (" + human(r[1]) + ")"],
      ["State", STATE[r[2]] || hex(r[2])], ["Protect", protName(r[3])], ["Type", TYPE[r[4]] || hex(r[4])]];
    return `<div class="name">${esc(S[r[8]] || "(unnamed " + CATS[r[7]] + ")")}</div><table>` +
      rows.map(([k, v]) => `<tr><td>${k}</td><td class="mono">${esc(v)}</td></tr>`).join("") + "</table>";
  }
  function aggHtml(g) {
    const parts = CATS.map((c, i) => g.cats[i] ? `${c} ${human(g.cats[i])}` : "").filter(Boolean).join(", ");
    return `<div class="name">${g.allocs.length.toLocaleString("en-US")} unnamed allocations</div><table>` +
      `<tr><td>from</td><td class="mono">${hex(g.base, HEXW)}</td></tr>` +
      `<tr><td>to</td><td class="mono">${hex(g.end, HEXW)}</td></tr>` +
      `<tr><td>reserved</td><td>${human(g.reserved)}</td></tr><tr><td>committed</td><td>${human(g.committed)}</td></tr>` +
      `<tr><td>by type</td><td>${esc(parts)}</td></tr></table>`;
  }
  function gapHtml(spec) {
    const [b, e] = spec.split(":").map(Number);
    return `<div class="name">free</div><table><tr><td>BaseAddress</td><td class="mono">${hex(b, HEXW)}</td></tr>` +
      `<tr><td>RegionSize</td><td class="mono">${hex(e - b)} (${human(e - b)})</td></tr>` +
      `<tr><td>State</td><td class="mono">MEM_FREE</td></tr><tr><td>Protect</td><td class="mono">PAGE_NOACCESS</td></tr></table>`;
  }
  function eventsOfAllocation(base) {
    const out = [];
    for (let i = 0; i < D.events.length && out.length < 12; i++) {
      const e = D.events[i], a = parseInt(e[2], 16);
      const r = findRegion(a);
      if (r >= 0 && R[r][5] === base) out.push(i);
    }
    return out;
  }
  function tipFor(target) {
    if (target.dataset.r !== undefined) return regionHtml(+target.dataset.r);
    if (target.__agg) return aggHtml(target.__agg);
    if (target.dataset.gap) return gapHtml(target.dataset.gap);
    if (target.__bin) return binHtml(target.__bin);
    return null;
  }
  function showTip(ev) {
    const h = tipFor(ev.target);
    if (!h) { tip.hidden = true; return; }
    tip.innerHTML = h; tip.hidden = false;
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = ev.clientX + 14, top = ev.clientY + 16;
    if (left + tw > window.innerWidth - 4) left = Math.max(4, ev.clientX - tw - 14);
    if (top + th > window.innerHeight - 4) top = Math.max(4, ev.clientY - th - 16);
    tip.style.left = left + "px"; tip.style.top = top + "px";
  }
  function hideTip() { tip.hidden = true; }
  svg.addEventListener("mouseover", showTip);
  svg.addEventListener("mousemove", showTip);
  svg.addEventListener("mouseleave", hideTip);
  svg.addEventListener("click", ev => {
    const t = ev.target;
    const h = tipFor(t);
    if (!h) return;
    let extra = "";
    if (t.dataset.r !== undefined) {
      const evs = eventsOfAllocation(R[+t.dataset.r][5]);
      if (evs.length) extra = "<div style='margin-top:6px'>History of this allocation: " +
        evs.map(i => `<a href="#" class="api" data-event="${i}">#${i} ${esc(KIND_LABEL[KINDS[D.events[i][1]]])}</a>`).join(", ") + "</div>";
    }
    details.innerHTML = h + extra; details.classList.add("pinned");
  });
  details.addEventListener("click", ev => {
    const a = ev.target.closest("a[data-event]");
    if (a) { ev.preventDefault(); eventsList.show(+a.dataset.event); }
  });
  function findRegion(addr) {
    let lo = 0, hi = R.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, r = R[mid];
      if (addr < r[0]) hi = mid - 1; else if (addr >= r[0] + r[1]) lo = mid + 1; else return mid;
    }
    return -1;
  }
  function flashRegion(addr) {
    const i = findRegion(addr);
    const rect = i >= 0 ? regionRect.get(i) : null;
    if (!rect) return;
    rect.scrollIntoView({block: "center"});
    rect.classList.remove("flash"); void rect.getBBox(); rect.classList.add("flash");
    details.innerHTML = regionHtml(i); details.classList.add("pinned");
  }

  // -- paged lists ------------------------------------------------------------------------
  function pagedList(container, head, count, rowHtml, onRow) {
    const wrap = document.createElement("div");
    const pager = document.createElement("div"); pager.className = "pager";
    const box = document.createElement("div"); box.className = "list";
    wrap.appendChild(pager); wrap.appendChild(box); container.appendChild(wrap);
    let page = 0;
    const pages = Math.max(1, Math.ceil(count / PAGE_ROWS));
    function draw(highlight) {
      const from = page * PAGE_ROWS, to = Math.min(count, from + PAGE_ROWS);
      let h = "<table><thead><tr>" + head.map(x => `<th>${x}</th>`).join("") + "</tr></thead><tbody>";
      for (let i = from; i < to; i++) h += rowHtml(i, i === highlight);
      box.innerHTML = h + "</tbody></table>";
      pager.innerHTML = count === 0 ? "none" : (pages > 1
        ? `<button data-p="-1">◀</button><button data-p="1">▶</button> rows ${(from + 1).toLocaleString("en-US")}–${to.toLocaleString("en-US")} of ${count.toLocaleString("en-US")}`
        : `${count.toLocaleString("en-US")} rows`);
    }
    pager.addEventListener("click", ev => {
      const b = ev.target.closest("button"); if (!b) return;
      page = Math.min(pages - 1, Math.max(0, page + +b.dataset.p)); draw(-1);
    });
    box.addEventListener("click", ev => onRow(ev));
    draw(-1);
    return {
      show(i) {
        page = Math.floor(i / PAGE_ROWS); draw(i);
        const row = box.querySelector("tr.hl");
        if (row) { row.scrollIntoView({block: "center"}); }
      }
    };
  }
  function callText(i) {
    const c = D.calls[i];
    return `${S[c[1]]}(${c[2].join(", ")})` + (c[3] === null ? "" : " = " + c[3]);
  }
  const eventsList = pagedList(document.getElementById("events"),
    ["#", "instructions", "event", "address", "size", "protection", "region", "caused by"], D.events.length,
    (i, hl) => {
      const e = D.events[i], kind = KINDS[e[1]];
      let prot = e[4] ? esc(protShort(e[4])) : "";
      if (kind === "protect") prot = `${esc(protShort(e[5]))} → ${esc(protShort(e[4]))}`;
      const api = e[7] >= 0 ? `<a href="#" class="api" data-call="${e[7]}">${esc(callText(e[7]))}</a>` : esc(S[e[8]] || "—");
      return `<tr class="ev k-row-${kind}${hl ? " hl" : ""}" data-i="${i}"><td class="num">${i}</td>` +
        `<td class="num">${e[0].toLocaleString("en-US")}</td><td><span class="k-${kind}">■</span> ${KIND_LABEL[kind]}</td>` +
        `<td class="addr"><a href="#" class="api" data-addr="${e[2]}">${e[2]}</a></td><td class="num">${e[3] ? hex(e[3]) : ""}</td>` +
        `<td>${prot}</td><td>${esc(S[e[6]])}</td><td>${api}${e[7] >= 0 && S[e[8]] ? " · " + esc(S[e[8]]) : ""}</td></tr>`;
    },
    ev => {
      const a = ev.target.closest("a"); if (!a) return;
      ev.preventDefault();
      if (a.dataset.call) callsList.show(+a.dataset.call);
      else if (a.dataset.addr) flashRegion(parseInt(a.dataset.addr, 16));
    });
  const callsList = pagedList(document.getElementById("calls"),
    ["#", "instructions", "call", "result", "return address"], D.calls.length,
    (i, hl) => {
      const c = D.calls[i];
      return `<tr${hl ? ' class="hl"' : ""} data-i="${i}"><td class="num">${i}</td><td class="num">${c[0].toLocaleString("en-US")}</td>` +
        `<td class="mono">${esc(S[c[1]])}(${esc(c[2].join(", "))})</td><td class="mono">${c[3] === null ? "" : c[3]}</td>` +
        `<td class="mono">${c[4]}</td></tr>`;
    }, () => {});
  if (D.droppedCalls) document.getElementById("calls").insertAdjacentHTML("beforeend",
    `<p class="note">${D.droppedCalls.toLocaleString("en-US")} later calls were counted but not kept.</p>`);

  // -- the timeline ---------------------------------------------------------------------
  const tl = document.getElementById("timeline");
  const present = KINDS.filter((k, i) => D.events.some(e => e[1] === i));
  const lanes = present.length ? present : ["allocate"];
  const TL_LEFT = 120, LANE_H = 22, TL_TOP = 8;
  const tsvg = el("svg", {width: W, height: TL_TOP + lanes.length * LANE_H + 26});
  let maxI = D.instructions; for (const e of D.events) if (e[0] > maxI) maxI = e[0];
  maxI = Math.max(1, maxI);
  const span = W - TL_LEFT - 16, BIN = 4;
  function xOf(n) { return TL_LEFT + (n / maxI) * span; }
  lanes.forEach((k, li) => {
    const y = TL_TOP + li * LANE_H;
    el("line", {x1: TL_LEFT, x2: W - 8, y1: y + LANE_H / 2, y2: y + LANE_H / 2, stroke: "#e3e7eb"}, tsvg);
    const t = el("text", {x: 6, y: y + LANE_H / 2 + 4, class: "lane"}, tsvg); t.textContent = KIND_LABEL[k];
  });
  const axisY = TL_TOP + lanes.length * LANE_H + 14;
  for (let j = 0; j <= 4; j++) {
    const n = Math.round(maxI * j / 4);
    const t = el("text", {x: xOf(n) - (j === 4 ? 60 : j ? 30 : 0), y: axisY, class: "axis"}, tsvg);
    t.textContent = n.toLocaleString("en-US") + (j === 4 ? " instr." : "");
  }
  const bins = new Map();
  D.events.forEach((e, i) => {
    const key = KINDS[e[1]] + ":" + Math.floor((xOf(e[0]) - TL_LEFT) / BIN);
    let b = bins.get(key);
    if (!b) bins.set(key, b = {kind: KINDS[e[1]], x: xOf(e[0]), events: []});
    b.events.push(i);
  });
  let nbin = 0;
  for (const b of bins.values()) {
    const li = lanes.indexOf(b.kind), n = b.events.length;
    const r = Math.min(8, 3.5 + Math.log2(n));
    const c = el("circle", {cx: b.x, cy: TL_TOP + li * LANE_H + LANE_H / 2, r: r, class: "mark k-" + b.kind,
      "data-kind": b.kind, "data-count": n, "data-bin": nbin++}, tsvg);
    c.__bin = b;
  }
  function binHtml(b) {
    let h = `<div class="name">${b.events.length.toLocaleString("en-US")} × ${KIND_LABEL[b.kind]}</div><table>`;
    for (const i of b.events.slice(0, 8)) {
      const e = D.events[i];
      const what = e[7] >= 0 ? callText(e[7]) : (S[e[8]] || "");
      const prot = KINDS[e[1]] === "protect" ? ` ${protShort(e[5])} → ${protShort(e[4])}` : "";
      h += `<tr><td class="num">${e[0].toLocaleString("en-US")}</td><td class="mono">${esc(e[2])}${esc(prot)}</td>` +
        `<td>${esc(S[e[6]])}</td><td class="mono">${esc(what)}</td></tr>`;
    }
    if (b.events.length > 8) h += `<tr><td colspan="4">… ${b.events.length - 8} more (click)</td></tr>`;
    return h + "</table>";
  }
  tsvg.addEventListener("mouseover", showTip);
  tsvg.addEventListener("mousemove", showTip);
  tsvg.addEventListener("mouseleave", hideTip);
  tsvg.addEventListener("click", ev => { if (ev.target.__bin) eventsList.show(ev.target.__bin.events[0]); });
  tl.appendChild(tsvg);
  const notes = [];
  if (D.resolution > 1) notes.push(`instruction counts are exact to within ${D.resolution.toLocaleString("en-US")} instructions`);
  if (D.droppedEvents) notes.push(`${D.droppedEvents.toLocaleString("en-US")} later events were counted but not kept`);
  if (notes.length) tl.insertAdjacentHTML("beforeend", `<p class="note">${esc(notes.join("; "))}.</p>`);

  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  document.body.dataset.rendered = "1";
})();
