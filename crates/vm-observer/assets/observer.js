// beamvm observer: polls /api/snapshot once a second and draws plain SVG charts.
// No library and no build step. Every number shown is also in a data-value attribute
// (raw, unformatted) so that tests and scripts can read the page.
"use strict";

const beamvmObserver = (() => {
  const WINDOW = 120;          // seconds of history the charts show
  const INTERVAL = 1000;       // ms between refreshes of the overview
  const PROCESS_INTERVAL = 2000;
  const TOP_N = 10;
  const LONG_ROWS = 12;        // most recent long_schedule events listed
  const COLORS = ["#2a6fdb", "#e4572e", "#29a35a", "#9b5de5", "#f3a712", "#17becf",
                  "#d6338a", "#6b8e23", "#8c564b", "#7f7f7f"];
  const SVGNS = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------------ formatting
  const fmtInt = (n) => Math.round(n).toLocaleString("en-US");
  function fmtShort(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    return String(Math.round(n * 10) / 10);
  }
  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
  }
  const fmtPct = (x) => (x * 100).toFixed(1) + "%";
  function fmtSecs(s) {
    if (s < 1) return (s * 1000).toFixed(1) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? `${h} h ${m % 60} min` : `${m} min ${Math.floor(s % 60)} s`;
  }

  // Sets every [data-key=key] element's text and its raw data-value.
  function show(key, value, text) {
    for (const el of document.querySelectorAll(`[data-key="${key}"]`)) {
      el.textContent = text === undefined ? String(value) : text;
      el.dataset.value = typeof value === "object" ? JSON.stringify(value) : String(value);
    }
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function pidLink(pid) {
    return el("a", { href: "/process?pid=" + encodeURIComponent(pid), "data-pid": pid }, pid);
  }

  function setStatus(ok, text) {
    const s = document.getElementById("status");
    if (!s) return;
    s.textContent = text;
    s.className = "status " + (ok ? "ok" : "err");
  }

  // ------------------------------------------------------------------ SVG charts
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // series: [{name, values: [number per sample]}]; times: uptime of each sample.
  // opts: {max, fmt, stacked}
  function drawChart(fig, times, series, opts) {
    const svg = fig.querySelector("svg");
    const W = Math.max(200, svg.clientWidth || 600), H = Math.max(80, svg.clientHeight || 150);
    const L = 48, R = 6, T = 6, B = 16;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const n = times.length;
    const tEnd = n ? times[n - 1] : 0;
    let stacks = series.map((s) => s.values.slice());
    if (opts.stacked) {
      for (let i = 1; i < stacks.length; i++)
        stacks[i] = stacks[i].map((v, j) => v + stacks[i - 1][j]);
    }
    let top = opts.max;
    if (top === undefined) {
      top = 0;
      for (const s of stacks) for (const v of s) if (v > top) top = v;
      top = niceMax(top);
    }
    const x = (t) => L + (W - L - R) * (1 - (tEnd - t) / WINDOW);
    const y = (v) => T + (H - T - B) * (1 - Math.min(v, top) / top);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(SVGNS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    for (const f of [0, 0.5, 1]) {
      const v = top * f;
      add("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) });
      add("text", { class: "axis", x: L - 4, y: y(v) + 3, "text-anchor": "end" }, opts.fmt(v));
    }
    add("text", { class: "axis", x: L, y: H - 3 }, `-${WINDOW} s`);
    add("text", { class: "axis", x: W - R, y: H - 3, "text-anchor": "end" }, "now");
    const pts = (vals) => vals.map((v, j) => `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`);
    for (let i = stacks.length - 1; i >= 0 && n > 0; i--) {
      const color = COLORS[i % COLORS.length];
      if (opts.stacked) {
        const lower = i > 0 ? stacks[i - 1] : stacks[i].map(() => 0);
        const d = "M" + pts(stacks[i]).join("L") + "L" + pts(lower).reverse().join("L") + "Z";
        add("path", { class: "area", d, fill: color, "data-series": series[i].name });
      } else {
        add("path", { class: "line", d: "M" + pts(stacks[i]).join("L"), stroke: color,
                      "data-series": series[i].name });
      }
    }
    const legend = fig.querySelector(".legend");
    legend.replaceChildren(...series.map((s, i) => {
      const last = s.values.length ? s.values[s.values.length - 1] : 0;
      const b = el("b", { "data-value": String(last) }, opts.fmt(last));
      return el("span", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }),
                s.name + " ", b);
    }));
    fig.dataset.points = String(n);
  }

  // ------------------------------------------------------------------ overview
  function overview() {
    const hist = [];      // {t, util[], runq[], global, mem{}, procs, reds, msgs}
    let prev = null;

    function rate(cur, old, f, dt) {
      return old && dt > 0 ? Math.max(0, (f(cur) - f(old)) / dt) : 0;
    }

    function topTable(by, rows) {
      const t = document.getElementById("top-" + by);
      const head = el("tr", {}, el("th", {}, "pid"), el("th", {}, "name / function"),
        el("th", { class: "num" }, "mailbox"), el("th", { class: "num" }, "memory"),
        el("th", { class: "num" }, "reductions"));
      const body = rows.map((r) => el("tr", { "data-pid": r.pid, title: r.status || "exited" },
        el("td", {}, pidLink(r.pid)),
        el("td", { title: r.current || "" }, r.name || r.current || `(${r.status || "exited"})`),
        el("td", { class: "num", "data-value": r.message_queue_len ?? "" },
          r.message_queue_len === undefined ? "-" : fmtInt(r.message_queue_len)),
        el("td", { class: "num", "data-value": r.memory ?? "" },
          r.memory === undefined ? "-" : fmtBytes(r.memory)),
        el("td", { class: "num", "data-value": r.reductions ?? "" },
          r.reductions === undefined ? "-" : fmtShort(r.reductions))));
      t.replaceChildren(head, ...body);
    }

    function render(s) {
      const st = s.statistics, si = s.system_info, mem = s.memory;
      const dt = prev ? st.uptime - prev.statistics.uptime : 0;
      const util = st.scheduler_wall_time.map((w, i) => {
        const p = prev && prev.statistics.scheduler_wall_time[i];
        const dTotal = p ? w[1] - p[1] : 0;
        return p && dTotal > 0 ? Math.min(1, Math.max(0, (w[0] - p[0]) / dTotal)) : (w[1] > 0 ? w[0] / w[1] : 0);
      });
      const poolUtil = (k) => {
        const w = st[k], p = prev && prev.statistics[k];
        const dTotal = p ? w[1] - p[1] : 0;
        return p && dTotal > 0 ? Math.min(1, Math.max(0, (w[0] - p[0]) / dTotal)) : st[k.replace("wall_time", "utilisation")];
      };
      const reds = rate(s, prev, (x) => x.statistics.total_reductions, dt);
      const msgs = rate(s, prev, (x) => x.statistics.messages_sent, dt);
      const switches = rate(s, prev, (x) => x.statistics.context_switches, dt);
      hist.push({ t: st.uptime, util, runq: st.run_queue_lengths.slice(), global: st.global_run_queue,
                  mem, procs: s.process_count, reds, msgs, hasRate: !!prev });
      while (hist.length && st.uptime - hist[0].t > WINDOW) hist.shift();

      show("version", si.version);
      show("uptime", st.uptime, fmtSecs(st.uptime));
      show("schedulers", si.schedulers);
      show("schedulers_online", si.schedulers_online);
      show("os_pid", s.os_pid);
      show("took", s.took, fmtSecs(s.took));
      show("took_cpu", s.took_cpu, fmtSecs(s.took_cpu));
      show("process_count", s.process_count, fmtInt(s.process_count));
      show("process_limit", si.process_limit, fmtInt(si.process_limit));
      for (const k of ["waiting", "runnable", "running"])
        show(k, s.processes_by_status[k], fmtInt(s.processes_by_status[k]));
      show("memory_total", mem.total, fmtBytes(mem.total));
      for (const k of ["processes", "binary", "atom", "system"]) show("memory_" + k, mem[k], fmtBytes(mem[k]));
      show("reductions_rate", reds, prev ? fmtShort(reds) : "-");
      show("messages_rate", msgs, prev ? fmtShort(msgs) : "-");
      show("switches_rate", switches, prev ? fmtShort(switches) : "-");
      show("messages_queued", s.messages_queued, fmtInt(s.messages_queued));
      const rqTotal = st.run_queue_lengths.reduce((a, b) => a + b, 0) + st.global_run_queue;
      show("run_queue_total", rqTotal, fmtInt(rqTotal));
      show("global_run_queue", st.global_run_queue, fmtInt(st.global_run_queue));
      for (const k of ["total_reductions", "context_switches", "messages_sent", "spawned", "exited",
                       "gcs", "long_schedules", "watchdog_takeovers"])
        show(k, st[k], fmtInt(st[k]));
      show("gc_reclaimed_bytes", st.gc_reclaimed_bytes, fmtBytes(st.gc_reclaimed_bytes));
      show("longest_slice", st.longest_slice, st.longest_slice.map(fmtSecs).join(", "));
      for (const pool of ["cpu", "io"]) {
        show(`dirty_${pool}_schedulers`, si[`dirty_${pool}_schedulers`]);
        const u = poolUtil(`dirty_${pool}_wall_time`);
        show(`dirty_${pool}_util`, u, fmtPct(u));
        show(`dirty_${pool}_queued`, st[`dirty_${pool}_queued`], fmtInt(st[`dirty_${pool}_queued`]));
        show(`dirty_${pool}_completed`, st[`dirty_${pool}_completed`], fmtInt(st[`dirty_${pool}_completed`]));
      }

      const times = hist.map((h) => h.t);
      const nsched = util.length;
      drawChart(document.getElementById("chart-util"), times,
        Array.from({ length: nsched }, (_, i) => ({ name: `scheduler ${i + 1}`,
          values: hist.map((h) => 100 * (h.util[i] || 0)) })),
        { max: 100, fmt: (v) => v.toFixed(0) + "%" });
      drawChart(document.getElementById("chart-runq"), times,
        Array.from({ length: nsched }, (_, i) => ({ name: `scheduler ${i + 1}`,
          values: hist.map((h) => h.runq[i] || 0) }))
          .concat([{ name: "global", values: hist.map((h) => h.global) }]),
        { fmt: fmtShort });
      drawChart(document.getElementById("chart-memory"), times,
        ["processes", "binary", "atom", "system"].map((k) => ({ name: k, values: hist.map((h) => h.mem[k]) })),
        { stacked: true, fmt: fmtBytes });
      drawChart(document.getElementById("chart-procs"), times,
        [{ name: "processes", values: hist.map((h) => h.procs) }], { fmt: fmtShort });
      const rated = hist.filter((h) => h.hasRate);
      drawChart(document.getElementById("chart-reds"), rated.map((h) => h.t),
        [{ name: "reductions/s", values: rated.map((h) => h.reds) }], { fmt: fmtShort });
      drawChart(document.getElementById("chart-msgs"), rated.map((h) => h.t),
        [{ name: "messages/s", values: rated.map((h) => h.msgs) }], { fmt: fmtShort });

      for (const by of ["message_queue_len", "memory", "reductions"]) topTable(by, s.top[by] || []);
      const events = (s.long_schedule_events || []).slice(0, LONG_ROWS).map((e) => el("tr", {},
        el("td", {}, fmtSecs(e.at)), el("td", {}, pidLink(e.pid)),
        el("td", { class: "num", "data-value": e.took }, fmtSecs(e.took)), el("td", { title: e.label }, e.label)));
      const tbody = document.querySelector("#long-schedules tbody");
      tbody.replaceChildren(...(events.length ? events
        : [el("tr", {}, el("td", { colspan: 4, class: "note" }, "none yet"))]));

      prev = s;
      const samples = Number(document.body.dataset.samples) + 1;
      document.body.dataset.samples = String(samples);
      document.body.dataset.drawn = String(rated.length >= 1);
      document.body.dataset.snapshot = JSON.stringify({ process_count: s.process_count, time: s.time });
    }

    async function tick() {
      const started = Date.now();
      try {
        const r = await fetch(`/api/snapshot?n=${TOP_N}`, { cache: "no-store" });
        const s = await r.json();
        if (!r.ok) throw new Error(s.error || r.statusText);
        if (!s.running) {
          setStatus(false, "VM not running");
        } else {
          render(s);
          setStatus(true, "live");
        }
      } catch (e) {
        setStatus(false, "no answer: " + e.message);
      }
      setTimeout(tick, Math.max(50, INTERVAL - (Date.now() - started)));
    }
    tick();
  }

  // ------------------------------------------------------------------ process page
  function process() {
    const pid = new URLSearchParams(location.search).get("pid") || "";
    document.getElementById("pid").textContent = pid;
    const url = "/api/process?pid=" + encodeURIComponent(pid);
    document.getElementById("raw").setAttribute("href", url);

    function list(id, pids) {
      const ul = document.getElementById(id);
      ul.replaceChildren(...(pids && pids.length ? pids.map((p) => el("li", {}, pidLink(p)))
        : [el("li", { class: "note" }, "none")]));
    }

    function render(d) {
      const info = d.info || {};
      const s = d.summary;
      const rows = [
        ["status", info.status ?? s.status], ["priority", info.priority ?? s.priority],
        ["registered_name", (info.registered_name ?? s.registered_name) || "-"],
        ["current_function", (info.current_function ?? s.current) || "-"],
        ["reductions", fmtInt(info.reductions ?? s.reductions)],
        ["message_queue_len", fmtInt(info.message_queue_len ?? s.message_queue_len)],
        ["memory", fmtBytes(info.memory ?? s.memory)],
      ];
      if (d.info) {
        rows.push(["heap_size (words)", fmtInt(info.heap_size)],
          ["young / old heap (words)", `${fmtInt(info.young_heap_size)} / ${fmtInt(info.old_heap_size)}`],
          ["minor / major GCs", `${fmtInt(info.minor_gcs)} / ${fmtInt(info.major_gcs)}`],
          ["trap_exit", String(info.trap_exit)]);
      }
      document.getElementById("info").replaceChildren(...rows.map(([k, v]) =>
        el("tr", { "data-field": k }, el("td", {}, k), el("td", {}, v))));
      list("links", info.links);
      list("monitors", info.monitors);
      list("monitored_by", info.monitored_by);
      document.getElementById("note").textContent = d.locked ? ""
        : "The process is in a long slice: showing its published counters only (links, monitors and queue need it to pause).";
      document.getElementById("queue").replaceChildren(...d.queue_sample.map((m) => el("li", {}, m)));
      document.getElementById("sample-size").textContent = String(d.queue_sample.length);
      const more = (info.message_queue_len ?? s.message_queue_len) - d.queue_sample.length;
      document.getElementById("queue-note").textContent =
        (d.queue_sample.length ? "" : "empty. ") + (more > 0 ? `${fmtInt(more)} more not shown` : "")
        + (d.in_transit ? ` (${fmtInt(d.in_transit)} in transit)` : "");
      const frames = document.getElementById("frames");
      const note = document.getElementById("stacktrace-note");
      if (d.current_stacktrace) {
        frames.replaceChildren(...d.current_stacktrace.map((f) =>
          el("li", {}, `${f.module}.${f.function}  ${f.file}:${f.line}`)));
        note.textContent = "innermost call last";
      } else {
        frames.replaceChildren();
        note.textContent = d.stacktrace_available ? "no Python stack (a native process, or it could not be read in time)"
          : "Not available in this build yet: the current stack trace comes with call tracing (process_info(pid, \"current_stacktrace\")).";
      }
      document.body.dataset.loaded = "true";
    }

    async function tick() {
      try {
        const r = await fetch(url, { cache: "no-store" });
        const d = await r.json();
        if (r.status === 404 && d.alive === false) {
          setStatus(false, "not alive");
          document.getElementById("note").textContent = `${pid} is not alive (it exited, or never existed).`;
          document.body.dataset.loaded = "true";
          return; // a dead pid never comes back
        }
        if (!r.ok) throw new Error(d.error || r.statusText);
        render(d);
        setStatus(true, "live");
      } catch (e) {
        setStatus(false, "no answer: " + e.message);
      }
      setTimeout(tick, PROCESS_INTERVAL);
    }
    tick();
  }

  return { overview, process, fmtBytes, fmtShort };
})();
