// Capsule's browser terminal: the portal's server page and the console
// proxy's HTML5 console page (the URL `openstack console url show
// --novnc` gives). A small VT100/xterm subset (the shell's line editing,
// prompts, clear, cursor moves; colours are dropped) drawn as text in a
// <pre>, keystrokes from a hidden textarea sent over a websocket joined to
// the server's serial console: the portal's /servers/{id}/terminal, or
// the root's data-ws URL (relative to the page) on the console page, which
// also sets data-autoconnect (connect on load) and data-once (the URL's
// token is single-use: no reconnect). Text only: everything the server
// prints lands in text nodes, never in markup.
(function () {
  "use strict";
  var SCROLLBACK = 1000;

  function Screen(cols, rows) {
    this.cols = cols; this.rows = rows;
    this.lines = []; for (var i = 0; i < rows; i++) this.lines.push(this.blank());
    this.back = [];
    this.x = 0; this.y = 0; this.wrapNext = false;
    this.top = 0; this.bottom = rows - 1; // scroll region
    this.saved = [0, 0];
  }
  Screen.prototype.blank = function () { var l = []; for (var i = 0; i < this.cols; i++) l.push(" "); return l; };
  Screen.prototype.resize = function (cols, rows) {
    this.lines = this.lines.map(function (l) {
      l = l.slice(0, cols); while (l.length < cols) l.push(" "); return l;
    });
    this.cols = cols;
    while (this.lines.length > rows) {
      // Rows above the cursor go to the scrollback; blank rows below it
      // are dropped first.
      if (this.y < this.lines.length - 1 && this.lines[this.lines.length - 1].join("").trim() === "") this.lines.pop();
      else { this.back.push(this.lines.shift()); this.y--; }
    }
    while (this.lines.length < rows) this.lines.push(this.blank());
    this.rows = rows; this.top = 0; this.bottom = rows - 1;
    this.y = Math.max(0, Math.min(rows - 1, this.y)); this.x = Math.min(cols - 1, this.x);
    this.wrapNext = false;
    if (this.back.length > SCROLLBACK) this.back.splice(0, this.back.length - SCROLLBACK);
  };
  Screen.prototype.scrollUp = function () {
    var gone = this.lines.splice(this.top, 1)[0];
    if (this.top === 0) { this.back.push(gone); if (this.back.length > SCROLLBACK) this.back.shift(); }
    this.lines.splice(this.bottom, 0, this.blank());
  };
  Screen.prototype.scrollDown = function () {
    this.lines.splice(this.bottom, 1);
    this.lines.splice(this.top, 0, this.blank());
  };
  Screen.prototype.lineFeed = function () {
    if (this.y === this.bottom) this.scrollUp();
    else if (this.y < this.rows - 1) this.y++;
  };
  Screen.prototype.put = function (ch) {
    if (this.wrapNext) { this.x = 0; this.lineFeed(); this.wrapNext = false; }
    this.lines[this.y][this.x] = ch;
    if (this.x === this.cols - 1) this.wrapNext = true; else this.x++;
  };
  Screen.prototype.erase = function (y, from, to) {
    for (var i = Math.max(0, from); i < Math.min(this.cols, to); i++) this.lines[y][i] = " ";
  };
  Screen.prototype.clamp = function () {
    this.x = Math.max(0, Math.min(this.cols - 1, this.x));
    this.y = Math.max(0, Math.min(this.rows - 1, this.y));
    this.wrapNext = false;
  };
  // csi runs one CSI sequence: params (numbers), private ("?" etc.),
  // final character.
  Screen.prototype.csi = function (p, priv, f) {
    var n = p[0] || 1, i;
    switch (f) {
      case "A": this.y = Math.max(this.top, this.y - n); this.clamp(); break;
      case "B": this.y = Math.min(this.bottom, this.y + n); this.clamp(); break;
      case "C": this.x += n; this.clamp(); break;
      case "D": this.x -= n; this.clamp(); break;
      case "E": this.x = 0; this.y += n; this.clamp(); break;
      case "F": this.x = 0; this.y -= n; this.clamp(); break;
      case "G": case "`": this.x = n - 1; this.clamp(); break;
      case "d": this.y = n - 1; this.clamp(); break;
      case "H": case "f": this.y = (p[0] || 1) - 1; this.x = (p[1] || 1) - 1; this.clamp(); break;
      case "J":
        if (!p[0]) { this.erase(this.y, this.x, this.cols); for (i = this.y + 1; i < this.rows; i++) this.lines[i] = this.blank(); }
        else if (p[0] === 1) { this.erase(this.y, 0, this.x + 1); for (i = 0; i < this.y; i++) this.lines[i] = this.blank(); }
        else { for (i = 0; i < this.rows; i++) this.lines[i] = this.blank(); if (p[0] === 3) this.back = []; }
        break;
      case "K":
        if (!p[0]) this.erase(this.y, this.x, this.cols);
        else if (p[0] === 1) this.erase(this.y, 0, this.x + 1);
        else this.erase(this.y, 0, this.cols);
        break;
      case "P": this.lines[this.y].splice(this.x, n); while (this.lines[this.y].length < this.cols) this.lines[this.y].push(" "); break;
      case "@": for (i = 0; i < n; i++) this.lines[this.y].splice(this.x, 0, " "); this.lines[this.y].length = this.cols; break;
      case "X": this.erase(this.y, this.x, this.x + n); break;
      case "L": for (i = 0; i < n; i++) { this.lines.splice(this.bottom, 1); this.lines.splice(this.y, 0, this.blank()); } break;
      case "M": for (i = 0; i < n; i++) { this.lines.splice(this.y, 1); this.lines.splice(this.bottom, 0, this.blank()); } break;
      case "S": for (i = 0; i < n; i++) this.scrollUp(); break;
      case "T": for (i = 0; i < n; i++) this.scrollDown(); break;
      case "r":
        if (!priv) { this.top = (p[0] || 1) - 1; this.bottom = (p[1] || this.rows) - 1; if (this.bottom >= this.rows || this.top >= this.bottom) { this.top = 0; this.bottom = this.rows - 1; } this.x = 0; this.y = 0; }
        break;
      case "s": this.saved = [this.x, this.y]; break;
      case "u": this.x = this.saved[0]; this.y = this.saved[1]; this.clamp(); break;
      // m (colours), h/l (modes), n (reports) and the rest: no effect on
      // the text.
    }
  };
  // write feeds decoded text through the escape parser.
  Screen.prototype.write = function (s) {
    for (var i = 0; i < s.length; i++) {
      var ch = s[i], c = s.charCodeAt(i);
      switch (this.state) {
        case "esc":
          this.state = "";
          if (ch === "[") { this.state = "csi"; this.params = ""; }
          else if (ch === "]") { this.state = "osc"; }
          else if (ch === "(" || ch === ")" || ch === "#") { this.state = "skip1"; }
          else if (ch === "7") this.saved = [this.x, this.y];
          else if (ch === "8") { this.x = this.saved[0]; this.y = this.saved[1]; this.clamp(); }
          else if (ch === "D") this.lineFeed();
          else if (ch === "E") { this.x = 0; this.lineFeed(); }
          else if (ch === "M") { if (this.y === this.top) this.scrollDown(); else if (this.y > 0) this.y--; }
          else if (ch === "c") { var fresh = new Screen(this.cols, this.rows); fresh.back = this.back; Object.assign(this, fresh); }
          continue;
        case "csi":
          if (c >= 0x40 && c <= 0x7e) {
            this.state = "";
            var priv = /^[?>=!]/.test(this.params) ? this.params[0] : "";
            var nums = this.params.replace(/^[?>=!]/, "").split(";").map(function (v) { return parseInt(v, 10) || 0; });
            this.csi(nums, priv, ch);
          } else this.params += ch;
          continue;
        case "osc": // a title and such: up to BEL or ST
          if (ch === "\x07") this.state = "";
          else if (ch === "\x1b") this.state = "oscesc";
          continue;
        case "oscesc": this.state = ch === "\\" ? "" : "osc"; continue;
        case "skip1": this.state = ""; continue;
      }
      if (c < 0x20 || c === 0x7f) {
        switch (ch) {
          case "\x1b": this.state = "esc"; break;
          case "\r": this.x = 0; this.wrapNext = false; break;
          case "\n": case "\x0b": case "\x0c": this.lineFeed(); this.wrapNext = false; break;
          case "\b": if (this.x > 0) this.x--; this.wrapNext = false; break;
          case "\t": this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); break;
        }
        continue;
      }
      this.put(ch);
    }
  };
  // text is the scrollback and screen as lines (trailing blanks cut).
  Screen.prototype.text = function () {
    return this.back.concat(this.lines).map(function (l) { return l.join("").replace(/\s+$/, ""); });
  };

  // keyBytes is what a key press sends, "" for keys the page keeps.
  function keyBytes(ev) {
    var k = ev.key;
    if (ev.ctrlKey && !ev.altKey && !ev.metaKey && k.length === 1) {
      var up = k.toUpperCase(), code = up.charCodeAt(0);
      if (code >= 64 && code <= 95) return String.fromCharCode(code - 64);
      if (k === " ") return "\x00";
      return "";
    }
    var map = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
      ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~", Insert: "\x1b[2~",
      PageUp: "\x1b[5~", PageDown: "\x1b[6~" };
    if (map[k]) return map[k];
    // Alt+key is Meta (ESC prefix) for readline; plain characters arrive
    // as the textarea's input (which also carries composed text).
    if (k.length === 1 && ev.altKey && !ev.metaKey && !ev.ctrlKey) return "\x1b" + k;
    return "";
  }

  function Terminal(root) {
    var id = root.getAttribute("data-id");
    var pre = root.querySelector(".term-screen"), input = root.querySelector(".term-input");
    var state = root.querySelector(".term-state"), connect = root.querySelector(".term-connect");
    var copyBtn = root.querySelector(".term-copy"), pasteBtn = root.querySelector(".term-paste");
    var ws = null, screen = null, drawn = false, enc = new TextEncoder(), dec = null, opened = false;
    var wsPath = root.getAttribute("data-ws"), once = root.hasAttribute("data-once");

    function say(text, bad) { state.textContent = text; state.className = "term-state " + (bad ? "error" : "hint"); }
    function size() {
      // One character's box, measured in the pre's own font.
      var probe = document.createElement("span");
      probe.textContent = "MMMMMMMMMM";
      pre.appendChild(probe);
      var w = probe.getBoundingClientRect().width / 10, h = probe.getBoundingClientRect().height;
      pre.removeChild(probe);
      var cs = getComputedStyle(pre), inner = pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      var cols = Math.max(20, Math.min(250, Math.floor(inner / (w || 8))));
      var rows = Math.max(8, Math.min(60, Math.floor((window.innerHeight * (wsPath ? 0.85 : 0.6)) / (h || 16))));
      return [cols, rows];
    }
    function render() {
      drawn = false;
      var lines = screen.text(), cur = screen.back.length + screen.y;
      while (lines.length - 1 > cur && lines[lines.length - 1] === "") lines.pop();
      var before = lines.slice(0, cur), line = lines[cur] || "", after = lines.slice(cur + 1);
      while (line.length < screen.x) line += " ";
      var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = "";
      pre.appendChild(document.createTextNode(before.join("\n") + (before.length ? "\n" : "") + line.slice(0, screen.x)));
      var c = document.createElement("span");
      c.className = "term-cursor" + (ws && ws.readyState === 1 ? "" : " off");
      c.textContent = line.charAt(screen.x) || " ";
      pre.appendChild(c);
      pre.appendChild(document.createTextNode(line.slice(screen.x + 1) + (after.length ? "\n" + after.join("\n") : "")));
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
    function redraw() { if (!drawn) { drawn = true; window.requestAnimationFrame(render); } }
    function send(s) { if (ws && ws.readyState === 1 && s) ws.send(enc.encode(s)); }

    function open() {
      if (ws && ws.readyState <= 1) return;
      var sz = size();
      screen = new Screen(sz[0], sz[1]);
      dec = new TextDecoder("utf-8");
      root.setAttribute("data-state", "connecting");
      say("Connecting…", false);
      connect.disabled = true;
      var proto = location.protocol === "https:" ? "wss:" : "ws:";
      var target = proto + "//" + location.host + "/servers/" + encodeURIComponent(id) + "/terminal";
      if (wsPath) { var u = new URL(wsPath, location.href); u.protocol = proto; target = u.href; }
      opened = false;
      ws = new WebSocket(target);
      ws.binaryType = "arraybuffer";
      ws.onopen = function () { opened = true; say("Connecting to the server's console…", false); };
      ws.onmessage = function (ev) {
        if (root.getAttribute("data-state") !== "open") {
          root.setAttribute("data-state", "open");
          root.setAttribute("data-size", screen.cols + "x" + screen.rows);
          say("Connected (" + screen.cols + "×" + screen.rows + "). Type into the terminal; Ctrl+C with text selected copies it.", false);
          connect.textContent = "Disconnect"; connect.disabled = false;
        }
        screen.write(typeof ev.data === "string" ? ev.data : dec.decode(new Uint8Array(ev.data), { stream: true }));
        redraw();
      };
      ws.onclose = function (ev) {
        root.setAttribute("data-state", "closed");
        connect.textContent = "Connect"; connect.disabled = false;
        var why = ev.reason || (opened ? "the connection ended" : "the console could not be opened");
        if (ev.code === 4401 && !wsPath) { window.location = "/login?expired=1"; return; }
        var bad = ev.code >= 4000 || (ev.code !== 1000 && ev.code !== 1005);
        var msg = (bad ? "Console closed: " : "Console closed (") + why + (bad ? "" : ").");
        if (once) {
          // The URL's token was used: a new console needs a new URL.
          connect.disabled = true;
          msg += (bad ? "." : "") + " This console URL works once: ask for a new one.";
        }
        say(msg, bad);
        redraw();
      };
      input.focus();
    }
    function close() { if (ws) ws.close(1000, "closed by the user"); }

    connect.addEventListener("click", function () {
      if (ws && ws.readyState === 1) close(); else open();
    });
    // Keystrokes go to the hidden textarea; a click on the screen gives
    // it the focus unless the user is selecting text to copy.
    pre.addEventListener("mouseup", function () {
      if (!String(window.getSelection() || "")) input.focus();
    });
    input.addEventListener("keydown", function (ev) {
      if (!ws || ws.readyState !== 1) return;
      var sel = String(window.getSelection() || "");
      if ((ev.ctrlKey || ev.metaKey) && (ev.key === "c" || ev.key === "C") && (ev.shiftKey || sel)) {
        // Copy the selection rather than interrupting the shell.
        if (sel && navigator.clipboard) navigator.clipboard.writeText(sel).catch(function () {});
        ev.preventDefault();
        return;
      }
      if ((ev.ctrlKey && ev.shiftKey && (ev.key === "V" || ev.key === "v")) || (ev.metaKey && ev.key === "v") || (ev.ctrlKey && ev.key === "v")) {
        return; // the paste event below sends the clipboard
      }
      var b = keyBytes(ev);
      if (b) { ev.preventDefault(); send(b); }
    });
    input.addEventListener("paste", function (ev) {
      var t = (ev.clipboardData || window.clipboardData).getData("text");
      ev.preventDefault();
      send(t.replace(/\r?\n/g, "\r"));
    });
    // Characters typed (and text composed by an input method) arrive
    // here; Enter and Tab were sent on their key press already.
    input.addEventListener("input", function () {
      var t = input.value.replace(/[\r\n\t]/g, "");
      input.value = "";
      send(t);
    });
    copyBtn.addEventListener("click", function () {
      var t = String(window.getSelection() || "") || (screen ? screen.text().join("\n").replace(/\s+$/, "") : "");
      if (!navigator.clipboard) { say("This browser gives the page no clipboard: select the text and copy it.", true); return; }
      navigator.clipboard.writeText(t).then(function () { say("Copied " + t.length + " characters.", false); },
        function () { say("The browser refused the clipboard: select the text and press Ctrl+C.", true); });
    });
    pasteBtn.addEventListener("click", function () {
      if (!navigator.clipboard || !navigator.clipboard.readText) { say("Paste with Ctrl+V (or ⌘V) in the terminal.", false); input.focus(); return; }
      navigator.clipboard.readText().then(function (t) { send(t.replace(/\r?\n/g, "\r")); input.focus(); },
        function () { say("The browser refused the clipboard: paste with Ctrl+V in the terminal.", true); input.focus(); });
    });
    // The terminal follows its box: on a resize the screen takes the new
    // width and height (long lines the shell sends wrap at the new width).
    var pending = 0;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        if (!screen) return;
        var sz = size();
        if (sz[0] !== screen.cols || sz[1] !== screen.rows) {
          screen.resize(sz[0], sz[1]);
          root.setAttribute("data-size", sz[0] + "x" + sz[1]);
          if (ws && ws.readyState === 1) say("Connected (" + sz[0] + "×" + sz[1] + ").", false);
          redraw();
        }
      }, 150);
    });
    root.terminalScreen = function () { return screen ? screen.text().join("\n") : ""; };
    if (root.hasAttribute("data-autoconnect")) open();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".terminal[data-id]"), function (root) { Terminal(root); });
  });
})();
