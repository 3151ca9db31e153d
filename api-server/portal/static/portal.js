// Capsule portal: live status without reloading the page. The list and
// detail pages poll the portal's JSON every 2 s; rows are built with
// textContent only (names come from users).
(function () {
  "use strict";
  var POLL_MS = 2000;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function statusCell(s) {
    var td = el("td");
    td.appendChild(el("span", "status " + s["class"], s.status));
    if (s.task) { td.appendChild(document.createTextNode(" ")); td.appendChild(el("span", "task", s.task)); }
    return td;
  }

  function row(s) {
    var tr = el("tr");
    tr.setAttribute("data-id", s.id);
    var name = el("td"), a = el("a", "", s.name);
    a.href = "/servers/" + encodeURIComponent(s.id);
    name.appendChild(a);
    tr.appendChild(name);
    tr.appendChild(statusCell(s));
    tr.appendChild(el("td", "", (s.ips && s.ips.length) ? s.ips.join(", ") : "-"));
    tr.appendChild(el("td", "wide", s.flavor));
    tr.appendChild(el("td", "wide", s.image));
    return tr;
  }

  function pollList(table) {
    var q = "limit=" + encodeURIComponent(table.getAttribute("data-limit") || "20");
    var marker = table.getAttribute("data-marker");
    if (marker) q += "&marker=" + encodeURIComponent(marker);
    var live = document.getElementById("live");
    fetch("/api/servers?" + q, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login?expired=1"; throw new Error("logged out"); }
        return r.json().then(function (b) { if (!r.ok) throw new Error(b.error || ("HTTP " + r.status)); return b; });
      })
      .then(function (b) {
        var tbody = table.tBodies[0], fresh = document.createElement("tbody");
        if (!b.servers.length) {
          var tr = el("tr", "empty"), td = el("td", "", "No servers yet.");
          td.colSpan = 5; tr.appendChild(td); fresh.appendChild(tr);
        }
        b.servers.forEach(function (s) { fresh.appendChild(row(s)); });
        table.replaceChild(fresh, tbody);
        var next = document.getElementById("next");
        if (next) {
          next.hidden = !b.next;
          if (b.next) next.href = "/servers?marker=" + encodeURIComponent(b.next) + "&limit=" + encodeURIComponent(table.getAttribute("data-limit"));
        }
        if (live) { live.textContent = "Status updates live · " + new Date().toLocaleTimeString(); live.className = "hint"; }
      })
      .catch(function (e) { if (live) { live.textContent = "Live status paused: " + e.message; live.className = "error"; } })
      .then(function () { setTimeout(function () { pollList(table); }, POLL_MS); });
  }

  function pollServer(badge) {
    var id = badge.getAttribute("data-id");
    fetch("/api/servers/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, status: r.status, body: b }; }); })
      .then(function (res) {
        if (res.status === 404) { badge.textContent = "DELETED"; badge.className = "status off"; return false; }
        if (!res.ok) return true;
        badge.textContent = res.body.status;
        badge.className = "status " + res.body["class"];
        var task = document.getElementById("task");
        if (task) task.textContent = res.body.task || "";
        var ips = document.getElementById("ips");
        if (ips) ips.textContent = (res.body.ips && res.body.ips.length) ? res.body.ips.join(", ") : "none";
        return true;
      })
      .catch(function () { return true; })
      .then(function (again) { if (again) setTimeout(function () { pollServer(badge); }, POLL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("servers");
    if (table) setTimeout(function () { pollList(table); }, POLL_MS);
    var badge = document.getElementById("status");
    if (badge && badge.getAttribute("data-id")) setTimeout(function () { pollServer(badge); }, POLL_MS);
  });
})();
