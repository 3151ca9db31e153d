// The server page's usage history: CPU, memory, disk IO and network over
// the last hour, day or week, as the cloud keeps them
// (/api/servers/{id}/usage), drawn as inline SVG with a time axis (no
// library). A gap in the points (the server stopped, a lost round) is a
// gap in the line. Refreshed while the page is open.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 320, H = 130, L = 34, R = 6, T = 6, B = 18; // plot box inside the viewBox

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function human(v) {
    var units = ["", "k", "M", "G", "T"], i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (v >= 100 || v === 0 ? v.toFixed(0) : v.toFixed(v >= 10 ? 0 : 1)) + units[i];
  }

  function nice(max) {
    if (!(max > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(max))), m = max / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function timeLabel(d, period) {
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (period === "week") return (d.getMonth() + 1) + "/" + d.getDate() + " " + pad(d.getHours()) + "h";
    return hm;
  }

  // draw plots series (arrays of {t, v}) on svg between from and to.
  function draw(svg, from, to, series, period, res, fixedMax) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = fixedMax || 0;
    series.forEach(function (s) { s.forEach(function (p) { if (p.v > max) max = p.v; }); });
    max = fixedMax || nice(max);
    var x = function (t) { return L + (t - from) / (to - from) * (W - L - R); };
    var y = function (v) { return T + (1 - Math.min(v, max) / max) * (H - T - B); };
    for (var i = 0; i <= 2; i++) {
      var gy = T + i * (H - T - B) / 2;
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: gy, y2: gy, "class": "grid" }));
      svg.appendChild(el("text", { x: L - 3, y: gy + 3, "text-anchor": "end" }, human(max * (1 - i / 2))));
    }
    for (var k = 0; k <= 3; k++) {
      var t = from + k * (to - from) / 3, gx = x(t);
      svg.appendChild(el("line", { x1: gx, x2: gx, y1: T, y2: H - B, "class": "grid" }));
      svg.appendChild(el("text", { x: gx, y: H - 5, "text-anchor": k === 0 ? "start" : k === 3 ? "end" : "middle", "class": "tick" },
        timeLabel(new Date(t), period)));
    }
    var count = 0;
    series.forEach(function (s, n) {
      var run = [];
      var flush = function () {
        if (run.length === 1) svg.appendChild(el("circle", { cx: run[0][0], cy: run[0][1], r: 1.5, "class": "l" + (n + 1) }));
        if (run.length > 1) svg.appendChild(el("polyline", { points: run.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" "), "class": "l" + (n + 1) }));
        run = [];
      };
      var last = null;
      s.forEach(function (p) {
        if (last !== null && p.t - last > 2.5 * res * 1000) flush();
        run.push([x(p.t), y(p.v)]);
        last = p.t;
        count++;
      });
      flush();
    });
    svg.setAttribute("data-points", String(count));
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("history");
    if (!root) return;
    var id = root.getAttribute("data-id"), period = "hour", timer = null;
    var msg = document.getElementById("history-msg");
    var buttons = root.querySelectorAll("button[data-period]");

    function load() {
      clearTimeout(timer);
      fetch("/api/servers/" + encodeURIComponent(id) + "/usage?period=" + period, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
        .then(function (a) {
          if (!a.ok) { msg.textContent = (a.body && a.body.error) || "The usage history cannot be read."; return 0; }
          var u = a.body.usage, res = u.resolution_seconds || 60;
          var from = Date.parse(u.from), to = Date.parse(u.to);
          var pts = u.points.map(function (p) { p.t = Date.parse(p.at); return p; });
          var pick = function (f) { return pts.map(function (p) { return { t: p.t, v: f(p) }; }); };
          draw(document.getElementById("history-cpu"), from, to, [pick(function (p) { return p.cpu_percent; })], period, res, 100);
          draw(document.getElementById("history-mem"), from, to, [pick(function (p) { return p.memory_mb; })], period, res,
            u.memory_mb || 0);
          draw(document.getElementById("history-disk"), from, to, [pick(function (p) { return p.disk_read_bps; }), pick(function (p) { return p.disk_write_bps; })], period, res);
          draw(document.getElementById("history-net"), from, to, [pick(function (p) { return p.net_rx_bps; }), pick(function (p) { return p.net_tx_bps; })], period, res);
          msg.textContent = pts.length ? pts.length + " points, one per " + (res >= 60 ? (res / 60) + " min" : res + " s") +
            " (blue: read/in, orange: write/out)." : "No usage recorded in this period yet (the cloud keeps a point per server every interval while it runs).";
          return res;
        })
        .catch(function () { msg.textContent = "The usage history cannot be read right now."; return 0; })
        .then(function (res) { timer = setTimeout(load, Math.max(5000, (res || 60) * 1000)); });
    }
    Array.prototype.forEach.call(buttons, function (b) {
      b.addEventListener("click", function () {
        period = b.getAttribute("data-period");
        Array.prototype.forEach.call(buttons, function (o) { o.setAttribute("aria-pressed", String(o === b)); });
        load();
      });
    });
    load();
  });
})();
