// The mpjobs dashboard: one page, hash routes, short polling (every 2 s).
// Every value from the server is put in the page with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
let config = null;
let timer = null;
let generation = 0; // bumped on every route change: a late answer for an old page is dropped

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function fmtTime(t) {
  if (t === null || t === undefined) return "-";
  return new Date(t * 1000).toLocaleString();
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  return (n / 1048576).toFixed(1) + " MiB";
}

function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || response.statusText;
    const err = new Error(response.status + ": " + message);
    err.status = response.status;
    throw err;
  }
  return data;
}

async function post(path, body) {
  try {
    const data = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    notice("");
    await refresh();
    return data;
  } catch (e) {
    notice("action refused: " + e.message);
    return null;
  }
}

function actionButton(label, onclick, cls) {
  if (!config || !config.actions) return null;
  return el("button", { class: "action " + (cls || ""), type: "button", onclick }, label);
}

function statusCell(status) {
  return el("td", { class: "status s-" + status }, status);
}

function jobLink(id) {
  return el("a", { href: "#/job/" + encodeURIComponent(id) }, "#" + id);
}

// -- routes ---------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "job" && parts[1]) return { name: "job", id: decodeURIComponent(parts[1]), params };
  return { name: parts[0] || "overview", params };
}

const views = {
  overview: { load: () => api("api/overview"), render: renderOverview },
  jobs: { load: (r) => api("api/jobs?" + r.params.toString()), render: renderJobs },
  failures: { load: (r) => api("api/failures?" + r.params.toString()), render: renderFailures },
  job: { load: (r) => api("api/jobs/" + encodeURIComponent(r.id)), render: renderJob },
  schedules: { load: () => api("api/schedules"), render: renderSchedules },
};

async function refresh() {
  const r = route();
  const view = views[r.name] || views.overview;
  const mine = generation;
  try {
    const data = await view.load(r);
    if (mine !== generation) return;
    const main = document.getElementById("view");
    const focused = document.activeElement && document.activeElement.id;
    main.replaceChildren(view.render(data, r));
    if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
    document.getElementById("updated").textContent =
      "last updated " + new Date().toLocaleTimeString();
    if (!document.getElementById("notice").textContent.startsWith("action")) notice("");
  } catch (e) {
    if (mine !== generation) return;
    notice(e.status === 401 ? "this dashboard needs its token (open it with ?token=...)"
                            : "cannot reach the dashboard: " + e.message);
  }
}

function go() {
  generation += 1;
  const r = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.route === (r.name === "job" ? "jobs" : r.name));
  }
  clearInterval(timer);
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

// -- overview -------------------------------------------------------------------------

function chart(title, values, cls) {
  const w = 300, h = 60, n = values.length, max = Math.max(1, ...values);
  const box = svg("svg", { class: "chart", width: w, height: h + 2, viewBox: `0 0 ${w} ${h + 2}`,
                           role: "img", "aria-label": title });
  values.forEach((v, i) => {
    const bh = Math.round((v / max) * h);
    const rect = svg("rect", { class: cls, x: (i * w) / n, y: h - bh + 1, width: w / n - 1,
                               height: bh });
    const tip = svg("title", {});
    tip.textContent = v + " in minute " + (i - n + 1);
    rect.append(tip);
    box.append(rect);
  });
  const total = values.reduce((a, b) => a + b, 0);
  return el("div", { class: "card" }, el("div", {}, title + ": " + total + " in the last hour"), box);
}

function renderOverview(d) {
  const leader = d.leader;
  const procs = d.processes || [];
  const rows = procs.map((p) => {
    const isLeader = leader && leader.token === p.token;
    return el("tr", { class: "proc", "data-pid": p.pid, "data-kind": p.kind },
      el("td", {}, p.kind + (isLeader ? " (leader)" : "")),
      el("td", { class: "num" }, p.pid),
      el("td", {}, p.state),
      el("td", {}, p.job ? [jobLink(p.job.id), " ", p.job.name] : "-"),
      el("td", { class: "num" }, p.job ? fmtAge(p.job.running_for_s) : "-"),
      el("td", { class: "num" }, fmtBytes(p.rss_bytes)),
      el("td", { class: "num" }, fmtAge(d.now - p.started_at)));
  });
  // A queue too deep to count live shows the leader's last census (or a floor).
  const est = d.queues_estimated || {};
  const waiting = (q, n) => !(q in est) ? n
    : est[q] === null ? "more than " + (n - 1)
    : "~" + n + " (counted " + fmtAge(d.now - est[q]) + " ago)";
  const queues = Object.entries(d.queues || {}).sort().map(([q, c]) =>
    el("tr", { class: "queue" }, el("td", {}, q),
       el("td", { class: "num" }, waiting(q, c.SCHEDULED || 0)),
       el("td", { class: "num" }, c.RUNNING || 0)));
  const hour = d.last_hour || { succeeded: [], failed: [] };
  return el("div", {},
    el("div", { class: "cards" },
      el("div", { class: "card", id: "leader" }, "leader: ",
         leader ? "pid " + leader.pid + " since " + fmtTime(leader.since) : "none"),
      el("div", { class: "card" }, "supervisors: ",
         procs.filter((p) => p.kind === "supervisor").length),
      el("div", { class: "card" }, "workers: ", procs.filter((p) => p.kind === "worker").length)),
    el("h2", {}, "Throughput"),
    el("div", { class: "cards" }, chart("succeeded", hour.succeeded, "ok"),
       chart("failed", hour.failed, "bad")),
    el("h2", {}, "Processes"),
    el("table", { id: "workers" },
      el("thead", {}, el("tr", {}, ["kind", "pid", "state", "current job", "running for", "RSS",
                                     "up"].map((t) => el("th", {}, t)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 7 }, "no live process")))),
    el("h2", {}, "Queues"),
    el("table", { id: "queues" },
      el("thead", {}, el("tr", {}, el("th", {}, "queue"), el("th", {}, "waiting"),
                         el("th", {}, "running"))),
      el("tbody", {}, queues.length ? queues : el("tr", {}, el("td", { colspan: 3 }, "no waiting job")))));
}

// -- jobs and failures ----------------------------------------------------------------

function filterForm(r, statuses, base) {
  const p = r.params;
  const select = el("select", { id: "f-status", name: "status" }, el("option", { value: "" }, "any status"),
    statuses.map((s) => el("option", { value: s, selected: p.get("status") === s }, s)));
  const input = (id, name, placeholder) =>
    el("input", { id, name, placeholder, value: p.get(name) || "" });
  const form = el("form", { class: "filters", id: "filters" }, select,
    input("f-queue", "queue", "queue"), input("f-task", "task", "task"),
    input("f-q", "q", "text in id, arguments, error"),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/" + base + (q.toString() ? "?" + q.toString() : "");
  });
  return form;
}

function jobsTable(d, r, base, rowActions) {
  const rows = d.jobs.map((j) => el("tr", { class: "job", "data-id": j.id, "data-status": j.status },
    el("td", {}, jobLink(j.id)), statusCell(j.status), el("td", {}, j.name), el("td", {}, j.queue),
    el("td", { class: "num" }, j.attempts + "/" + j.max_attempts),
    el("td", {}, fmtTime(j.finished_at || j.started_at || j.created_at)),
    el("td", { class: "error" }, j.error || ""),
    el("td", {}, rowActions(j))));
  const pager = el("div", { class: "pager" });
  if (d.scanned !== null && d.scanned !== undefined) {
    pager.append(el("span", { class: "muted", id: "scanned" },
      "searched the newest " + d.scanned + " matching jobs" + (d.scan_limited ? " (limit reached)" : "")));
  }
  if (d.next_before) {
    const q = new URLSearchParams(r.params);
    q.set("before", d.next_before);
    pager.append(el("a", { href: "#/" + base + "?" + q.toString(), id: "older" }, "older →"));
  }
  if (r.params.get("before")) {
    const q = new URLSearchParams(r.params);
    q.delete("before");
    pager.append(el("a", { href: "#/" + base + "?" + q.toString() }, "newest"));
  }
  return [el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ["id", "status", "task", "queue", "attempts", "when", "error", ""]
      .map((t) => el("th", {}, t)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 8 }, "no job matches")))), pager];
}

function liveActions(j) {
  if (j.status === "SCHEDULED" || j.status === "RUNNING") {
    return actionButton("cancel", () => post("api/jobs/" + j.id + "/cancel",
      { terminate: j.status === "RUNNING" }), "cancel danger");
  }
  return actionButton("retry", () => post("api/jobs/" + j.id + "/retry"), "retry");
}

function renderJobs(d, r) {
  return el("div", {}, el("h2", {}, "Jobs"), filterForm(r, config.statuses, "jobs"),
            jobsTable(d, r, "jobs", liveActions));
}

function renderFailures(d, r) {
  const p = r.params;
  const bulk = actionButton("retry all matching", () => post("api/jobs/retry", {
    status: p.get("status") ? [p.get("status")] : config.failures,
    queue: p.get("queue"), task: p.get("task"),
  }), "retry-all");
  return el("div", {}, el("h2", {}, "Failures, newest first"),
            filterForm(r, config.failures, "failures"), bulk,
            jobsTable(d, r, "failures", (j) => actionButton("retry",
              () => post("api/jobs/" + j.id + "/retry"), "retry")));
}

function renderJob(j) {
  const dl = (pairs) => el("dl", {}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const parts = [
    el("h2", {}, "Job #" + j.id + " ", el("span", { class: "status s-" + j.status, id: "job-status" }, j.status)),
    el("div", {}, liveActions(j)),
    dl([["task", j.name], ["function", j.func || "-"], ["queue", j.queue],
        ["attempts", j.attempts + " of " + j.max_attempts], ["worker pid", j.pid || "-"]]),
    el("h2", {}, "Arguments"), el("pre", { id: "arguments" }, j.arguments),
    el("h2", {}, "Options"), dl(Object.entries(j.options).map(([k, v]) => [k, v === null ? "-" : v])),
    el("h2", {}, "Timeline"), dl(j.timeline.map((t) => [t.event, fmtTime(t.at)])),
  ];
  if (j.schedule) {
    parts.push(el("h2", {}, "Schedule"), dl([["id", j.schedule.id],
      ["state", j.schedule.exists ? j.schedule.state : "removed"],
      ["trigger", j.schedule.trigger ? JSON.stringify(j.schedule.trigger) : "-"]]));
  }
  const jobLinks = (ids) => ids.length
    ? ids.flatMap((i) => [jobLink(i), " "])
    : "-";
  if (j.depends_on.length || j.dependents.length) {
    parts.push(el("h2", {}, "Workflow"), dl([["depends on", jobLinks(j.depends_on)],
      ["dependents", jobLinks(j.dependents)]]));
  }
  const extra = Object.entries(j.extra || {}).filter(([, v]) => v !== null);
  if (extra.length) {
    parts.push(el("h2", {}, "Progress"),
               dl(extra.map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])));
  }
  if (j.result !== null) parts.push(el("h2", {}, "Result"), el("pre", { id: "result" }, j.result));
  if (j.traceback) parts.push(el("h2", {}, "Error"), el("pre", { id: "traceback" }, j.traceback));
  return el("div", { id: "job" }, parts);
}

// -- schedules ------------------------------------------------------------------------

function renderSchedules(list) {
  const rows = list.map((s) => el("tr", { class: "schedule", "data-id": s.id },
    el("td", {}, s.id), el("td", {}, s.name), el("td", {}, s.trigger_text),
    el("td", { class: "state" + (s.paused ? " paused" : "") }, s.paused ? "paused" : s.state),
    el("td", {}, fmtTime(s.next_run_time)),
    el("td", {}, s.last ? [jobLink(s.last.id), " ", el("span", { class: "status s-" + s.last.status },
                                                          s.last.status)] : "-"),
    el("td", {}, [
      s.paused ? actionButton("resume", () => post("api/schedules/" + encodeURIComponent(s.id) + "/resume"), "resume")
               : actionButton("pause", () => post("api/schedules/" + encodeURIComponent(s.id) + "/pause"), "pause"),
      actionButton("run now", () => post("api/schedules/" + encodeURIComponent(s.id) + "/run"), "run"),
      actionButton("remove", () => post("api/schedules/" + encodeURIComponent(s.id) + "/remove"), "remove danger"),
    ])));
  return el("div", {}, el("h2", {}, "Schedules"), el("table", { id: "schedules" },
    el("thead", {}, el("tr", {}, ["id", "name", "trigger", "state", "next run", "last job", ""]
      .map((t) => el("th", {}, t)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 7 }, "no schedule")))));
}

// -- start ----------------------------------------------------------------------------

async function start() {
  try {
    config = await api("api/config");
  } catch (e) {
    notice(e.status === 401 ? "this dashboard needs its token (open it with ?token=...)"
                            : "cannot reach the dashboard: " + e.message);
    return;
  }
  document.getElementById("home").textContent = config.home;
  window.addEventListener("hashchange", go);
  go();
}

start();
