// The launch form: what the launch will use of the quota and what is left
// (servers, vCPUs, RAM), Launch disabled with the reason when even the
// count does not fit; the user data's size against Nova's limit, and a
// file picker that fills the user data.
(function () {
  "use strict";

  function num(el, name) { return parseInt(el.getAttribute("data-" + name), 10); }

  function fmtLeft(max, used, use, unit) {
    if (max < 0) return use + unit + " (unlimited)";
    var left = max - used - use;
    return use + unit + ", " + (left < 0 ? "over by " + (-left) : left + " left") + " of " + max;
  }

  function setup() {
    var form = document.getElementById("launch");
    var go = document.getElementById("launch-go");
    if (!form || !go) return;
    var preview = document.getElementById("quota-preview");
    var flavor = document.getElementById("flavor");
    var count = document.getElementById("count");
    var maxCount = document.getElementById("max-count");
    var ud = document.getElementById("user-data");
    var udSize = document.getElementById("user-data-size");
    var udFile = document.getElementById("user-data-file");
    var quotaFull = go.disabled; // the server said the quota is used up

    function fits(n, f) {
      var why = [];
      var checks = [["instances", 1, "servers"], ["cores", f.vcpus, "vCPUs"], ["ram", f.ram, "MB RAM"]];
      checks.forEach(function (c) {
        var max = num(preview, c[0]), used = num(preview, c[0] + "-used");
        if (max >= 0 && used + n * c[1] > max) why.push(c[2] + " (needs " + (n * c[1]) + ", " + Math.max(0, max - used) + " left)");
      });
      return why;
    }

    function update() {
      var reasons = [];
      var opt = flavor && flavor.options[flavor.selectedIndex];
      var f = { vcpus: opt ? parseInt(opt.getAttribute("data-vcpus"), 10) || 0 : 0, ram: opt ? parseInt(opt.getAttribute("data-ram"), 10) || 0 : 0 };
      var lo = parseInt(count.value, 10) || 0;
      var hi = maxCount && maxCount.value !== "" ? parseInt(maxCount.value, 10) || 0 : lo;
      if (lo < 1) reasons.push("the count must be 1 or more");
      if (hi < lo) reasons.push("\"at most\" is below the count");
      if (preview && lo >= 1) {
        var n = Math.max(hi, lo);
        var text = "This launch uses " + fmtLeft(num(preview, "instances"), num(preview, "instances-used"), n, " servers") + "; " +
          fmtLeft(num(preview, "cores"), num(preview, "cores-used"), n * f.vcpus, " vCPUs") + "; " +
          fmtLeft(num(preview, "ram"), num(preview, "ram-used"), n * f.ram, " MB RAM") + ".";
        var short = fits(lo, f);
        if (short.length) {
          reasons.push("the quota leaves too few " + short.join(", "));
        } else if (hi > lo && fits(hi, f).length) {
          text += " Not all " + hi + " fit: the cloud launches as many as the quota allows, at least " + lo + ".";
        }
        preview.textContent = text;
        preview.className = short.length ? "error" : "hint";
      }
      if (ud && udSize) {
        var bytes = new TextEncoder().encode(ud.value).length, maxUD = num(ud, "max");
        udSize.textContent = bytes + " of " + maxUD + " bytes (Nova's limit of 65,535 base64 characters).";
        udSize.className = bytes > maxUD ? "error" : "hint";
        if (bytes > maxUD) reasons.push("the user data is " + (bytes - maxUD) + " bytes too long");
      }
      var block = quotaFull || reasons.length > 0;
      // A reader's Launch stays disabled with portal.js's reason.
      var reader = !!document.body.getAttribute("data-reader");
      go.disabled = block || reader;
      if (!reader) go.title = reasons.length ? "Cannot launch: " + reasons.join("; ") : "";
      var note = document.getElementById("launch-why");
      if (!note) {
        note = document.createElement("p");
        note.id = "launch-why"; note.className = "error"; note.setAttribute("role", "status");
        go.parentNode.insertBefore(note, go.nextSibling);
      }
      note.textContent = reasons.length ? "Cannot launch: " + reasons.join("; ") + "." : "";
      note.hidden = !reasons.length;
    }

    if (udFile && ud) {
      udFile.addEventListener("change", function () {
        var file = udFile.files && udFile.files[0];
        if (!file) return;
        var rd = new FileReader();
        rd.onload = function () { ud.value = rd.result; update(); };
        rd.readAsText(file);
      });
    }
    [flavor, count, maxCount, ud].forEach(function (el) {
      if (el) { el.addEventListener("input", update); el.addEventListener("change", update); }
    });
    update();
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
