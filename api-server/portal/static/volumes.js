// The Volumes pages' live status: a volume being created, attached,
// detached or extended turns available / in-use without a reload. Rows are
// updated with textContent (names are users').
(function () {
  "use strict";
  var POLL_MS = 2000;
  var settled = { "available": 1, "in-use": 1, "error": 1 };

  function poll(update) {
    fetch("/api/volumes", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body && body.volumes) update(body.volumes);
      })
      .catch(function () {})
      .then(function () { setTimeout(function () { poll(update); }, POLL_MS); });
  }

  function cellAttached(td, list) {
    while (td.firstChild) td.removeChild(td.firstChild);
    if (!list || !list.length) { td.textContent = "-"; return; }
    list.forEach(function (a) {
      var link = document.createElement("a");
      link.className = "clip"; link.href = "/servers/" + encodeURIComponent(a.ServerID);
      link.textContent = a.Server; link.title = a.Server + " at " + a.Mount;
      var code = document.createElement("code");
      code.className = "mount"; code.textContent = a.Mount;
      td.appendChild(link); td.appendChild(code);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("volumes");
    if (table) {
      setTimeout(function () {
        poll(function (vols) {
          var seen = {};
          vols.forEach(function (v) {
            seen[v.id] = 1;
            var row = table.querySelector('tr[data-id="' + v.id + '"]');
            if (!row) return;
            var st = row.querySelector(".vstatus");
            st.textContent = v.status; st.className = "status " + v.class + " vstatus";
            row.querySelector(".vsize").textContent = v.size + " GB";
            cellAttached(row.querySelector(".vattached"), v.attached);
          });
        });
      }, POLL_MS);
    }
    // A volume's page reloads once its volume settles, so the forms offer
    // what the new status allows.
    var badge = document.getElementById("volume-status");
    if (badge && !settled[badge.textContent]) {
      poll(function (vols) {
        vols.forEach(function (v) {
          if (v.id === badge.getAttribute("data-id") && settled[v.status] && v.status !== badge.textContent) {
            window.location.replace(window.location.pathname);
          }
        });
      });
    }
  });
})();
