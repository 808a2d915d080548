// The status page's HTML, CSS and JavaScript, as strings compiled into the agent: the same
// bytes are served from the TypeScript sources (tsx) and from the esbuild bundle, with nothing
// to fetch from a CDN or the filesystem. The script builds every element with textContent
// (never innerHTML from data), and the server's Content-Security-Policy allows only these
// same-origin files.

export const LOGIN_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ringedge — log in</title>
<link rel="stylesheet" href="/app.css">
</head>
<body class="login">
<main>
<h1>ringedge</h1>
<p>Site status. Log in with the installer password.</p>
{{error}}
<form method="post" action="/login">
<label for="password">Installer password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="128" autofocus>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
`;

export const APP_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ringedge — status</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
<h1>ringedge <span id="site"></span></h1>
<div id="summary" class="summary"></div>
<form method="post" action="/logout"><button type="submit" class="link">Log out</button></form>
</header>
<main>
<section><h2>Ringing now</h2><div id="ringing"><p class="muted">Connecting…</p></div></section>
<section><h2>Groups</h2><div id="groups" class="cards"></div></section>
<section><h2>Phones</h2><div class="scroll"><table id="phones"><thead><tr><th>Phone</th><th>State</th><th>Model</th><th>Firmware</th><th>Last config fetch</th><th>Address</th></tr></thead><tbody></tbody></table></div></section>
<section><h2>Missed calls</h2><div class="scroll"><table id="missed"><thead><tr><th>When</th><th>Caller</th><th>Dialled</th><th>Group</th><th>Offered to</th><th>Outcome</th></tr></thead><tbody></tbody></table></div></section>
<section><h2>First-fork latency</h2><p id="latency-summary" class="muted"></p><div id="latency" class="chart" role="img" aria-label="first-fork latency histogram"></div></section>
</main>
<footer id="stream" class="muted">live</footer>
</body>
</html>
`;

export const APP_CSS = `
:root { --fg:#1d2330; --muted:#667085; --bg:#f6f7f9; --card:#fff; --line:#e3e6ea; --ok:#1f8a4c; --ring:#d97706; --talk:#2563eb; --away:#8b5cf6; --off:#9aa1ad; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:.5rem 1rem; padding:.75rem 1rem; background:var(--card); border-bottom:1px solid var(--line); }
header h1 { font-size:1.2rem; margin:0; }
header h1 span { color:var(--muted); font-weight:normal; }
header form { margin-left:auto; }
main { padding:0 1rem 1rem; max-width:1100px; margin:0 auto; }
section { margin-top:1rem; }
h2 { font-size:1rem; margin:.5rem 0; }
.summary { display:flex; flex-wrap:wrap; gap:.5rem; }
.pill { padding:.1rem .55rem; border-radius:999px; background:var(--bg); border:1px solid var(--line); font-size:.85rem; white-space:nowrap; }
.pill.up { border-color:var(--ok); color:var(--ok); }
.pill.down { border-color:#c0392b; color:#c0392b; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(260px, 1fr)); gap:.75rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.6rem .75rem; }
.card h3 { margin:0 0 .4rem; font-size:.95rem; }
.card h3 small { color:var(--muted); font-weight:normal; }
.member { display:flex; justify-content:space-between; gap:.5rem; padding:.2rem 0; border-top:1px solid var(--line); }
.state { font-size:.8rem; padding:0 .45rem; border-radius:4px; color:#fff; background:var(--off); white-space:nowrap; }
.state.available { background:var(--ok); }
.state.ringing { background:var(--ring); }
.state.talking { background:var(--talk); }
.state.away { background:var(--away); }
.scroll { overflow-x:auto; background:var(--card); border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; width:100%; font-size:.9rem; }
th, td { text-align:left; padding:.35rem .6rem; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:.8rem; }
.dot { display:inline-block; width:.6rem; height:.6rem; border-radius:50%; background:var(--off); margin-right:.35rem; }
.dot.on { background:var(--ok); }
.muted { color:var(--muted); }
.call { background:var(--card); border:1px solid var(--ring); border-radius:8px; padding:.4rem .75rem; margin-bottom:.4rem; }
.chart { display:flex; align-items:flex-end; gap:4px; height:140px; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.5rem .5rem 1.8rem; overflow-x:auto; }
.bar { flex:1 0 34px; display:flex; flex-direction:column; justify-content:flex-end; align-items:center; height:100%; position:relative; }
.bar i { display:block; width:100%; background:var(--talk); border-radius:3px 3px 0 0; min-height:1px; }
.bar b { font-weight:normal; font-size:.7rem; color:var(--muted); }
.bar span { position:absolute; bottom:-1.5rem; font-size:.65rem; color:var(--muted); white-space:nowrap; }
button { font:inherit; padding:.45rem 1rem; border-radius:6px; border:1px solid var(--talk); background:var(--talk); color:#fff; cursor:pointer; }
button.link { background:none; border:none; color:var(--talk); padding:0; }
body.login main { max-width:360px; margin:12vh auto; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1.25rem; }
body.login input { display:block; width:100%; margin:.35rem 0 .9rem; padding:.5rem; font:inherit; border:1px solid var(--line); border-radius:6px; }
.error { color:#c0392b; }
footer { text-align:center; padding:1rem; font-size:.8rem; }
@media (max-width: 600px) { body { font-size:14px; } main { padding:0 .5rem .5rem; } th, td { padding:.3rem .4rem; } }
`;

export const APP_JS = `"use strict";
(function () {
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function ago(iso) {
    if (!iso) return "never";
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : s < 129600 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " d ago";
  }
  function time(ms) { var d = new Date(ms); return d.toLocaleDateString() + " " + d.toLocaleTimeString(); }
  function uptime(s) { var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60); return (d ? d + "d " : "") + (h ? h + "h " : "") + m + "min"; }
  function us(v) { return v >= 1000 ? (v / 1000).toFixed(2) + " ms" : v + " µs"; }

  function render(s) {
    document.getElementById("site").textContent = s.siteId;
    var sum = document.getElementById("summary"); clear(sum);
    var online = s.phones.filter(function (p) { return p.online; }).length;
    sum.appendChild(el("span", "pill", s.calls.active + (s.calls.active === 1 ? " call" : " calls")));
    sum.appendChild(el("span", "pill", online + "/" + s.phones.length + " phones online"));
    sum.appendChild(el("span", "pill " + s.link, "console " + s.link));
    sum.appendChild(el("span", "pill", "up " + uptime(s.uptimeS)));

    var ringing = document.getElementById("ringing"); clear(ringing);
    if (s.calls.ringing.length === 0) ringing.appendChild(el("p", "muted", "No call is ringing."));
    s.calls.ringing.forEach(function (c) {
      var d = el("div", "call"); d.dataset.call = c.callId;
      d.appendChild(el("strong", null, c.caller));
      d.appendChild(document.createTextNode(" → " + (c.group || "direct") + " · ringing: " + (c.ringingNow.join(", ") || "—") + " · " + c.sinceS + " s"));
      ringing.appendChild(d);
    });

    var groups = document.getElementById("groups"); clear(groups);
    if (s.groups.length === 0) groups.appendChild(el("p", "muted", "No groups configured."));
    s.groups.forEach(function (g) {
      var card = el("div", "card"); card.dataset.group = g.id;
      var h = el("h3", null, g.name + " "); h.appendChild(el("small", null, g.number + " · " + g.strategy)); card.appendChild(h);
      g.members.forEach(function (m) {
        var row = el("div", "member"); row.dataset.member = m.id; row.dataset.state = m.state;
        row.appendChild(el("span", null, m.name + (m.extension ? " (" + m.extension + ")" : "")));
        row.appendChild(el("span", "state " + m.state.replace(" ", "-"), m.state));
        card.appendChild(row);
      });
      groups.appendChild(card);
    });

    var pb = document.querySelector("#phones tbody"); clear(pb);
    s.phones.forEach(function (p) {
      var tr = el("tr"); tr.dataset.device = p.username; tr.dataset.online = String(p.online);
      var name = el("td"); name.appendChild(el("span", "dot" + (p.online ? " on" : ""))); name.appendChild(document.createTextNode(p.username + (p.name ? " — " + p.name : ""))); tr.appendChild(name);
      tr.appendChild(el("td", null, p.online ? "online" : "offline"));
      tr.appendChild(el("td", null, p.model || (p.kind === "soft" ? "soft client" : "—")));
      tr.appendChild(el("td", null, p.firmware || "—"));
      tr.appendChild(el("td", null, p.mac ? ago(p.lastConfigFetch) : "—"));
      tr.appendChild(el("td", null, p.address || "—"));
      pb.appendChild(tr);
    });
    if (s.phones.length === 0) { var tr0 = el("tr"); var td0 = el("td", "muted", "No phones."); td0.colSpan = 6; tr0.appendChild(td0); pb.appendChild(tr0); }

    var mb = document.querySelector("#missed tbody"); clear(mb);
    s.missed.forEach(function (c) {
      var tr = el("tr"); tr.dataset.caller = c.caller;
      [time(c.at), c.caller, c.target, c.group || "—", c.offered.join(", ") || "nobody", c.outcome].forEach(function (v) { tr.appendChild(el("td", null, v)); });
      mb.appendChild(tr);
    });
    if (s.missed.length === 0) { var tr1 = el("tr"); var td1 = el("td", "muted", "No missed calls."); td1.colSpan = 6; tr1.appendChild(td1); mb.appendChild(tr1); }

    var l = s.latency;
    document.getElementById("latency-summary").textContent = l.count === 0 ? "No calls yet." : l.count + (l.count === 1 ? " call" : " calls") + " · p50 " + us(l.p50Us) + " · p99 " + us(l.p99Us) + " · " + l.overBudget + " over the " + us(l.budgetUs) + " budget";
    var chart = document.getElementById("latency"); clear(chart);
    var max = Math.max.apply(null, l.buckets.map(function (b) { return b.count; }).concat([1]));
    l.buckets.forEach(function (b) {
      var bar = el("div", "bar"); bar.title = "≤ " + b.le + ": " + b.count;
      bar.appendChild(el("b", null, b.count || ""));
      var fill = el("i"); fill.style.height = Math.round(100 * b.count / max) + "%"; bar.appendChild(fill);
      bar.appendChild(el("span", null, b.le === "more" ? "more" : "≤" + b.le));
      chart.appendChild(bar);
    });
  }

  var footer = document.getElementById("stream");
  var es = new EventSource("/events");
  es.addEventListener("status", function (ev) {
    try { render(JSON.parse(ev.data)); footer.textContent = "live · updated " + new Date().toLocaleTimeString(); } catch (e) { footer.textContent = "bad update: " + e.message; }
  });
  es.onerror = function () {
    footer.textContent = "reconnecting…";
    // A stream refused with 401 (session expired) does not recover by itself: back to the login.
    fetch("/api/status", { credentials: "same-origin" }).then(function (r) { if (r.status === 401) location.reload(); }, function () {});
  };
})();
`;
