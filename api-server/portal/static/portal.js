// Capsule portal: live status without reloading the page. The list and
// detail pages poll the portal's JSON every 2 s; rows are built with
// textContent only (names come from users). The detail page also draws
// its usage charts (inline SVG) from diagnostics samples it polls.
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

  function copyButton(text, label, shown) {
    // The visible label is drawn by CSS (data-label), so a cell's text
    // stays the name or the address alone.
    var b = el("button", "copy");
    b.type = "button";
    b.setAttribute("data-label", shown);
    b.setAttribute("data-copy", text);
    b.setAttribute("aria-label", label);
    b.title = label;
    return b;
  }

  function row(s) {
    var tr = el("tr");
    tr.setAttribute("data-id", s.id);
    tr.setAttribute("data-name", s.name);
    tr.setAttribute("data-status", s.status);
    tr.setAttribute("data-created", s.created || "");
    tr.setAttribute("data-ips", (s.ips || []).join(", "));
    var name = el("td"), a = el("a", "clip", s.name), pick = el("input", "pick");
    pick.type = "checkbox"; pick.name = "id"; pick.value = s.id;
    pick.setAttribute("aria-label", "Tick " + s.name);
    name.appendChild(pick);
    a.title = s.name;
    a.href = "/servers/" + encodeURIComponent(s.id);
    name.appendChild(a);
    name.appendChild(copyButton(s.id, "Copy the ID of " + s.name, "ID"));
    tr.appendChild(name);
    tr.appendChild(statusCell(s));
    var ips = el("td");
    if (s.ips && s.ips.length) {
      s.ips.forEach(function (ip) {
        // An item is "network: address"; the button copies the address.
        // The network's name hides on a phone (CSS), the address stays.
        var cut = ip.indexOf(": "), addr = cut >= 0 ? ip.slice(cut + 2) : ip, span = el("span", "ip");
        if (cut >= 0) span.appendChild(el("span", "net", ip.slice(0, cut + 2)));
        span.appendChild(document.createTextNode(addr));
        span.appendChild(copyButton(addr, "Copy " + addr, "Copy"));
        ips.appendChild(span);
        ips.appendChild(document.createTextNode(" "));
      });
    } else {
      ips.textContent = "-";
    }
    tr.appendChild(ips);
    var age = el("td", "age"), t = el("time", "", s.created || "");
    t.setAttribute("datetime", s.created || "");
    age.appendChild(t);
    tr.appendChild(age);
    tr.appendChild(el("td", "wide", s.flavor));
    tr.appendChild(el("td", "wide", s.image));
    tr.appendChild(rowMenu(s));
    return tr;
  }

  // rowMenu is a row's action menu (a <details>, so keyboard and screen
  // readers get it for free): open, console, and the actions that make
  // sense in the status; stop, reboot and delete go to their confirmation.
  function rowMenu(s) {
    var td = el("td", "menu"), d = el("details", "rowmenu"), sum = el("summary", "", "\u22ee"), box = el("div", "menubox");
    sum.setAttribute("aria-label", "Actions for " + s.name);
    sum.title = "Actions";
    d.appendChild(sum);
    var base = "/servers/" + encodeURIComponent(s.id), open = el("a", "", "Open"), cons = el("a", "", "Console output");
    open.href = base; cons.href = base + "/console";
    box.appendChild(open); box.appendChild(cons);
    var f = el("form"), csrf = document.querySelector('#bulk input[name="csrf"]');
    f.method = "post"; f.action = base + "/action";
    var tok = el("input"); tok.type = "hidden"; tok.name = "csrf"; tok.value = csrf ? csrf.value : ""; f.appendChild(tok);
    var acts = s.status === "SHUTOFF" ? [["start", "Start"]] : s.status === "ACTIVE" ? [["stop", "Stop\u2026"], ["reboot", "Reboot\u2026"]] : [];
    acts.concat([["delete", "Delete\u2026"]]).forEach(function (a) {
      var b = el("button", a[0] === "delete" ? "danger" : "", a[1]); b.name = "action"; b.value = a[0]; f.appendChild(b);
    });
    box.appendChild(f);
    d.appendChild(box);
    td.appendChild(d);
    return td;
  }

  // ---- the servers list's tools: search, sort, ages, copy ----

  // ago says how long ago an RFC 3339 time was ("5 min ago").
  function ago(iso, now) {
    var t = Date.parse(iso);
    if (!isFinite(t)) return iso || "-";
    var s = Math.max(0, Math.round((now - t) / 1000));
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function showAges(table) {
    var now = Date.now();
    Array.prototype.forEach.call(table.querySelectorAll("time[datetime]"), function (t) {
      var iso = t.getAttribute("datetime"), d = new Date(iso);
      t.textContent = ago(iso, now);
      t.title = isFinite(d.getTime()) ? d.toLocaleString() + " (" + iso + ")" : iso;
    });
  }

  // listView applies the search box and the chosen sort to the rows in
  // place; the live refresh calls it on every new set of rows.
  function listView(table) {
    var input = document.getElementById("server-search");
    var q = input ? input.value.trim().toLowerCase() : "";
    var key = table.getAttribute("data-sort-key"), dir = table.getAttribute("data-sort-dir") === "desc" ? -1 : 1;
    var tbody = table.tBodies[0];
    var rows = Array.prototype.filter.call(tbody.rows, function (r) { return r.hasAttribute("data-id"); });
    if (key) {
      rows.sort(function (a, b) {
        var x = a.getAttribute("data-" + key) || "", y = b.getAttribute("data-" + key) || "";
        var c = key === "created" ? (x < y ? -1 : x > y ? 1 : 0) : x.localeCompare(y, undefined, { sensitivity: "base", numeric: true });
        return c * dir;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    }
    var shown = 0;
    rows.forEach(function (r) {
      var hit = !q || (r.getAttribute("data-name") || "").toLowerCase().indexOf(q) >= 0 ||
        (r.getAttribute("data-ips") || "").toLowerCase().indexOf(q) >= 0;
      r.hidden = !hit;
      if (hit) shown++;
    });
    // A ticked row the search hides is not acted on (a disabled box is
    // not sent).
    rows.forEach(function (r) { var c = r.querySelector("input.pick"); if (c) c.disabled = r.hidden; });
    ticks(table);
    var count = document.getElementById("search-count"), empty = document.getElementById("search-empty");
    if (count) count.textContent = q ? shown + " of the " + rows.length + " on this page" : "";
    if (empty) empty.hidden = !(q && rows.length && !shown);
    Array.prototype.forEach.call(table.querySelectorAll("button.sort"), function (b) {
      var k = b.getAttribute("data-sort");
      b.parentNode.setAttribute("aria-sort", k !== key ? "none" : dir > 0 ? "ascending" : "descending");
    });
    showAges(table);
  }

  // ticks shows how many servers are ticked and enables the bulk buttons.
  function ticks(table) {
    var boxes = Array.prototype.filter.call(table.tBodies[0].querySelectorAll("input.pick"), function (c) { return !c.disabled; });
    var n = boxes.filter(function (c) { return c.checked; }).length;
    var count = document.getElementById("bulk-count");
    if (count) count.textContent = n ? n + " ticked" : "Tick servers to act on several at once.";
    ["bulk-start", "bulk-stop", "bulk-delete"].forEach(function (id) { var b = document.getElementById(id); if (b) b.disabled = !n; });
    var all = document.getElementById("pick-all");
    if (all) { all.checked = n > 0 && n === boxes.length; all.indeterminate = n > 0 && n < boxes.length; }
  }

  // copyText puts text on the clipboard: the Clipboard API where the page
  // may use it (a secure context), else a selected textarea and
  // execCommand("copy").
  function copyText(text) {
    if (navigator.clipboard && navigator.clipboard.writeText) {
      return navigator.clipboard.writeText(text).catch(function () { return legacyCopy(text); });
    }
    return legacyCopy(text);
  }

  function legacyCopy(text) {
    return new Promise(function (resolve, reject) {
      var ta = el("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.style.position = "fixed"; ta.style.top = "0"; ta.style.left = "0"; ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(ta);
      if (ok) resolve(); else reject(new Error("copy refused"));
    });
  }

  function listTools(table) {
    var input = document.getElementById("server-search");
    if (input) input.addEventListener("input", function () { listView(table); });
    // An open row menu is placed fixed under its button: the table's
    // scrolling box would clip it otherwise.
    table.addEventListener("toggle", function (ev) {
      var d = ev.target;
      if (!d.classList || !d.classList.contains("rowmenu") || !d.open) return;
      Array.prototype.forEach.call(table.querySelectorAll("details.rowmenu[open]"), function (o) { if (o !== d) o.open = false; });
      var r = d.querySelector("summary").getBoundingClientRect(), box = d.querySelector(".menubox");
      box.style.position = "fixed";
      box.style.top = Math.round(r.bottom + 2) + "px";
      box.style.right = Math.max(4, Math.round(document.documentElement.clientWidth - r.right)) + "px";
    }, true);
    window.addEventListener("scroll", function () {
      Array.prototype.forEach.call(table.querySelectorAll("details.rowmenu[open]"), function (o) { o.open = false; });
    }, { passive: true });
    document.addEventListener("keydown", function (ev) {
      if (ev.key !== "Escape") return;
      var d = table.querySelector("details.rowmenu[open]");
      if (d) { d.open = false; d.querySelector("summary").focus(); }
    });
    table.addEventListener("change", function (ev) {
      if (ev.target.id === "pick-all") {
        Array.prototype.forEach.call(table.tBodies[0].querySelectorAll("input.pick"), function (c) { if (!c.disabled) c.checked = ev.target.checked; });
      }
      if (ev.target.classList.contains("pick")) ticks(table);
    });
    table.addEventListener("click", function (ev) {
      var b = ev.target.closest("button");
      if (!b || !table.contains(b)) return;
      if (b.classList.contains("sort")) {
        var k = b.getAttribute("data-sort");
        var desc = table.getAttribute("data-sort-key") === k && table.getAttribute("data-sort-dir") !== "desc";
        table.setAttribute("data-sort-key", k);
        table.setAttribute("data-sort-dir", desc ? "desc" : "asc");
        listView(table);
        return;
      }
      if (b.classList.contains("copy")) {
        var label = b.getAttribute("data-label");
        copyText(b.getAttribute("data-copy")).then(function () { b.setAttribute("data-label", "Copied"); b.setAttribute("data-copied", "1"); },
          function () { b.setAttribute("data-label", "Failed"); b.title = "Copying failed: select the text instead"; })
          .then(function () { setTimeout(function () { b.setAttribute("data-label", label); }, 1500); });
      }
    });
    listView(table);
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
        var tbody = table.tBodies[0], fresh = document.createElement("tbody"), ticked = {};
        // The ticks survive the refresh (by server ID).
        Array.prototype.forEach.call(tbody.querySelectorAll("input.pick:checked"), function (c) { ticked[c.value] = true; });
        if (!b.servers.length) {
          var tr = el("tr", "empty"), td = el("td", "", "No servers yet.");
          td.colSpan = 7; tr.appendChild(td); fresh.appendChild(tr);
        }
        // Not while the user is in the list (focus on a box or button, a
        // menu open): rebuilding would take it away; the next poll
        // catches up.
        if (tbody.contains(document.activeElement) || tbody.querySelector("details[open]")) {
          if (live) { live.textContent = "Status updates wait while you use the list."; live.className = "hint"; }
          return;
        }
        b.servers.forEach(function (s) {
          var tr = row(s);
          if (ticked[s.id]) tr.querySelector("input.pick").checked = true;
          fresh.appendChild(tr);
        });
        table.replaceChild(fresh, tbody);
        listView(table);
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
        showFor(res.body.status);
        var task = document.getElementById("task");
        if (task) task.textContent = res.body.task || "";
        var ips = document.getElementById("ips");
        if (ips) ips.textContent = (res.body.ips && res.body.ips.length) ? res.body.ips.join(", ") : "none";
        return true;
      })
      .catch(function () { return true; })
      .then(function (again) { if (again) setTimeout(function () { pollServer(badge); }, POLL_MS); });
  }

  // showFor shows the actions that make sense in status (data-when).
  function showFor(status) {
    Array.prototype.forEach.call(document.querySelectorAll("[data-when]"), function (e) {
      e.hidden = e.getAttribute("data-when").split(" ").indexOf(status) < 0;
    });
  }

  // pollImages refreshes the Images list in place (a snapshot goes from
  // queued to active while the page is open).
  function pollImages(table) {
    var live = document.getElementById("images-live");
    fetch("/api/images", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login?expired=1"; throw new Error("logged out"); }
        return r.json().then(function (b) { if (!r.ok) throw new Error(b.error || ("HTTP " + r.status)); return b; });
      })
      .then(function (b) {
        var fresh = document.createElement("tbody");
        if (!b.images.length) {
          var tr = el("tr"), td = el("td", "", "No images."); td.colSpan = 4; tr.appendChild(td); fresh.appendChild(tr);
        }
        b.images.forEach(function (im) {
          var tr = el("tr"), name = el("td"), span = el("a", "clip", im.name);
          tr.setAttribute("data-id", im.id);
          span.title = im.name;
          span.href = "/images/" + encodeURIComponent(im.id);
          name.appendChild(span);
          tr.appendChild(name);
          tr.appendChild(el("td", "", im.status));
          tr.appendChild(el("td", "", im.visibility));
          var id = el("td", "wide"); id.appendChild(el("code", "", im.id)); tr.appendChild(id);
          fresh.appendChild(tr);
        });
        table.replaceChild(fresh, table.tBodies[0]);
        if (live) { live.textContent = "Statuses update live · " + new Date().toLocaleTimeString(); live.className = "hint"; }
      })
      .catch(function (e) { if (live) { live.textContent = "Live status paused: " + e.message; live.className = "error"; } })
      .then(function () { setTimeout(function () { pollImages(table); }, POLL_MS); });
  }

  // readOnly disables the write buttons of a reader's pages (every form
  // that posts, but logging out and switching project), saying why on
  // hover: the APIs would refuse them.
  function readOnly() {
    var why = "Your role in this project is reader: you can look, not change.";
    Array.prototype.forEach.call(document.querySelectorAll("form"), function (f) {
      if ((f.getAttribute("method") || "get").toLowerCase() !== "post") return;
      var a = f.getAttribute("action") || "";
      if (a === "/logout" || a === "/switch-project") return;
      Array.prototype.forEach.call(f.querySelectorAll("button, input[type=submit]"), function (b) {
        b.disabled = true; b.title = why; b.classList.add("read-only");
        // A disabled button shows no title in some browsers: its
        // wrapper carries it too.
        if (b.parentNode) b.parentNode.title = why;
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("a.write"), function (l) {
      l.setAttribute("aria-disabled", "true"); l.title = why; l.classList.add("read-only");
      l.addEventListener("click", function (ev) { ev.preventDefault(); });
    });
  }

  // upload sends the image form with a progress bar: the same multipart
  // post as without script, the CSRF token in the header, the answer JSON.
  function upload(form) {
    var bar = document.getElementById("upload-progress"), st = document.getElementById("upload-status");
    var go = document.getElementById("upload-go");
    form.addEventListener("submit", function (ev) {
      if (!window.FormData || !window.XMLHttpRequest) return;
      ev.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.elements.csrf.value);
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        bar.value = Math.floor(e.loaded * 100 / e.total);
        st.textContent = bar.value + "% of " + bytes(e.total);
      };
      xhr.upload.onload = function () { st.textContent = "Sent; the image service is checking it…"; };
      xhr.onload = function () {
        var b = {};
        try { b = JSON.parse(xhr.responseText); } catch (e) { b = { error: "HTTP " + xhr.status }; }
        if (xhr.status === 201 && b.location) { window.location = b.location; return; }
        if (xhr.status === 401) { window.location = "/login?expired=1"; return; }
        go.disabled = false; bar.hidden = true;
        st.textContent = b.error || ("HTTP " + xhr.status); st.className = "error";
      };
      xhr.onerror = function () { go.disabled = false; st.textContent = "The upload was cut off: try again."; st.className = "error"; };
      bar.hidden = false; bar.value = 0; go.disabled = true; st.className = "hint"; st.textContent = "Starting…";
      xhr.send(new FormData(form));
    });
  }

  // followMigration polls the migration just requested on the Hosts
  // page until it settles, and says how it ended (and why it failed).
  function followMigration(p) {
    var id = p.getAttribute("data-id");
    fetch("/api/servers/" + encodeURIComponent(id) + "/migration", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, status: r.status, body: b }; }); })
      .then(function (res) {
        if (!res.ok) {
          p.textContent = "The migration's outcome cannot be read: " + (res.body.error || ("HTTP " + res.status));
          p.className = "error";
          return res.status >= 500;
        }
        p.textContent = res.body.message;
        p.setAttribute("data-state", res.body.state);
        if (res.body.state === "failed") { p.className = "error"; return false; }
        if (res.body.state === "done") { p.className = "notice"; return false; }
        p.className = "notice busy";
        return true;
      })
      .catch(function () { return true; })
      .then(function (again) { if (again) setTimeout(function () { followMigration(p); }, POLL_MS); });
  }

  // ---- usage charts ----

  var CHART_MS = 3000, KEEP = 60, SVGNS = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  // draw plots series (arrays of numbers or null, newest last) on a
  // 300x100 view box, KEEP samples across, the newest at the right edge;
  // top is the value at the top of the box.
  function draw(svg, series, top) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    [25, 50, 75].forEach(function (y) { svg.appendChild(svgEl("line", { x1: 0, x2: 300, y1: y, y2: y, "class": "grid" })); });
    var step = 300 / (KEEP - 1), drawn = 0;
    series.forEach(function (s) {
      var pts = [];
      s.values.forEach(function (v, i) {
        if (v === null || v === undefined || !isFinite(v)) return;
        var x = 300 - (s.values.length - 1 - i) * step;
        // 3 units of margin: a line at 0 or at the top stays in sight.
        var y = 97 - Math.max(0, Math.min(1, top > 0 ? v / top : 0)) * 94;
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      svg.appendChild(svgEl("polyline", { points: pts.join(" "), "class": "line " + s.cls, "data-points": pts.length }));
      drawn = Math.max(drawn, pts.length);
    });
    svg.setAttribute("data-drawn", drawn);
  }

  function bytes(n) {
    var u = ["B", "kB", "MB", "GB"], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : Math.round(n)) + " " + u[i];
  }

  // niceTop rounds a maximum up to 1, 2 or 5 times a power of ten.
  function niceTop(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    return [1, 2, 5, 10].map(function (m) { return m * p; }).find(function (t) { return t >= v; });
  }

  // rate is the per-second change of field between samples a and b
  // (null when either lacks it or the counter went back: a restart).
  function rate(a, b, field) {
    var dt = (b.t - a.t) / 1000;
    if (a[field] === null || b[field] === null || dt <= 0 || b[field] < a[field]) return null;
    return (b[field] - a[field]) / dt;
  }

  function charts(root) {
    var id = root.getAttribute("data-id"), samples = [];
    var msg = document.getElementById("charts-msg");
    var cpuSVG = document.getElementById("chart-cpu"), memSVG = document.getElementById("chart-mem"), netSVG = document.getElementById("chart-net");
    function say(text, bad) { if (msg) { msg.textContent = text; msg.className = bad ? "error" : "hint"; } }
    function render() {
      var cpu = [], rx = [], tx = [], mem = samples.map(function (s) { return s.mem_used_mb; });
      for (var i = 1; i < samples.length; i++) {
        var a = samples[i - 1], b = samples[i];
        var vcpus = b.vcpus || parseInt(root.getAttribute("data-vcpus"), 10) || 1;
        var c = rate(a, b, "cpu_ns");
        cpu.push(c === null ? null : Math.min(100, c / 1e9 / vcpus * 100));
        rx.push(rate(a, b, "rx_bytes"));
        tx.push(rate(a, b, "tx_bytes"));
      }
      var last = samples[samples.length - 1];
      draw(cpuSVG, [{ cls: "cpu", values: cpu }], 100);
      var cpuNow = cpu.length ? cpu[cpu.length - 1] : null;
      document.getElementById("cpu-now").textContent = cpuNow === null ? "–" : cpuNow.toFixed(1) + "% of " + (last.vcpus || 1) + " vCPU";
      // The limit is drawn a little below the top, so a server at its
      // limit shows both lines.
      var limit = last.mem_max_mb || niceTop(Math.max.apply(null, mem.map(function (v) { return v || 0; })));
      draw(memSVG, [{ cls: "limit", values: mem.map(function () { return limit; }) }, { cls: "mem", values: mem }], limit * 1.1);
      document.getElementById("mem-now").textContent = last.mem_used_mb === null ? "not running" : last.mem_used_mb + " of " + limit + " MB";
      var netTop = niceTop(Math.max.apply(null, rx.concat(tx, [1000]).map(function (v) { return v || 0; })));
      draw(netSVG, [{ cls: "rx", values: rx }, { cls: "tx", values: tx }], netTop);
      var r = rx.length ? rx[rx.length - 1] : null, t = tx.length ? tx[tx.length - 1] : null;
      document.getElementById("net-now").textContent = !last.nics ? "no NICs" :
        "rx " + (r === null ? "–" : bytes(r) + "/s") + " · tx " + (t === null ? "–" : bytes(t) + "/s") + " (top " + bytes(netTop) + "/s)";
      root.setAttribute("data-samples", samples.length);
    }
    function poll() {
      fetch("/api/servers/" + encodeURIComponent(id) + "/diagnostics", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.json().then(function (b) { return { status: r.status, ok: r.ok, body: b }; }); })
        .then(function (res) {
          if (res.status === 401) { say("Your session has ended: log in again.", true); return false; }
          if (res.status === 403) {
            root.hidden = true;
            say("CPU, memory and network charts need an admin role: " + (res.body.error || "the diagnostics API refused."), false);
            return false;
          }
          if (res.status === 404) { say("The server is gone.", false); return false; }
          if (!res.ok) { say("No new sample: " + (res.body.error || ("HTTP " + res.status)), false); return true; }
          samples.push(res.body);
          if (samples.length > KEEP + 1) samples.shift();
          render();
          say("Sampled every " + CHART_MS / 1000 + " s from the server's diagnostics; " + samples.length + " of the last " + KEEP + " samples shown.", false);
          return true;
        })
        .catch(function (e) { say("No new sample: " + e.message, false); return true; })
        .then(function (again) { if (again) setTimeout(poll, CHART_MS); });
    }
    poll();
  }

  // A page restored from the back-forward cache (Back after logging out)
  // is loaded again, so the server decides whether it may be shown.
  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted && document.getElementById("who")) window.location.reload();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("servers");
    if (table) { listTools(table); setTimeout(function () { pollList(table); }, POLL_MS); }
    var badge = document.getElementById("status");
    if (badge && badge.getAttribute("data-id")) setTimeout(function () { pollServer(badge); }, POLL_MS);
    var images = document.getElementById("images");
    if (images && images.getAttribute("data-live")) setTimeout(function () { pollImages(images); }, POLL_MS);
    if (document.body.getAttribute("data-reader")) readOnly();
    var up = document.getElementById("upload-form");
    if (up) upload(up);
    var mig = document.getElementById("migration-outcome");
    if (mig) followMigration(mig);
    var root = document.getElementById("charts");
    if (root) charts(root);
    // Small destructive forms (a key pair's delete) ask first.
    Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (f) {
      f.addEventListener("submit", function (ev) {
        if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  });
})();
