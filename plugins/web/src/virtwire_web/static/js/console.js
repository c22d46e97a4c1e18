// The console pane of one VM: its screen through noVNC on the gateway's ticket URL
// (`vnc-connect`), a terminal (serial console, or SSH with credentials) through xterm.js on the
// ticket URL of `terminal-connect`, and a clear message where there is no console (no
// transport installed: UNKNOWN_TYPE; a backend without consoles such as libvirt's test
// driver: CONSOLE_UNAVAILABLE).

import { wsUrl } from "./connection.js";
import { $, h } from "./ui.js";

const VENDOR = "../../vendor";
const EXPLAIN = {
  UNKNOWN_TYPE: "This gateway has no console transport for it installed.",
  CONSOLE_UNAVAILABLE: "This VM's backend offers no such console (libvirt's test driver has none).",
  CONSOLE_BUSY: "Another client holds the serial console.",
  VNC_NOT_READY: "The VM's screen is not ready yet (is it running?).",
  FORBIDDEN: "This token may not open consoles (scope console, or the vms claim).",
  TERMINAL_AUTH_FAILED: "The SSH server refused the credentials.",
  TERMINAL_HOST_KEY_CHANGED: "The SSH server's host key changed: refused.",
  TERMINAL_HOST_KEY_UNKNOWN: "The SSH server's host key is not known to the gateway.",
  RATE_LIMITED: "Too many terminals open.",
};
const SESSIONS = "virtwire.terminals"; // sessionStorage: vmId -> {sessionId, type}

let xterm = null;
async function loadXterm() {
  xterm = xterm || Promise.all([
    import(`${VENDOR}/@xterm/xterm/lib/xterm.mjs`),
    import(`${VENDOR}/@xterm/addon-attach/lib/addon-attach.mjs`),
    import(`${VENDOR}/@xterm/addon-fit/lib/addon-fit.mjs`),
  ]).then(([x, a, f]) => ({ Terminal: x.Terminal, AttachAddon: a.AttachAddon, FitAddon: f.FitAddon }));
  return xterm;
}

let novnc = null;
async function loadNovnc() {
  novnc = novnc || import(`${VENDOR}/@novnc/novnc/core/rfb.js`).then((m) => m.default);
  return novnc;
}

function savedSessions() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSIONS) || "{}");
  } catch {
    return {};
  }
}

function saveSession(vmId, value) {
  const all = savedSessions();
  if (value) all[vmId] = value;
  else delete all[vmId];
  sessionStorage.setItem(SESSIONS, JSON.stringify(all));
}

export class ConsolePane {
  constructor(conn) {
    this.conn = conn;
    this.vmId = null;
    this.canConsole = false;
    this.session = null; // {term, ws, sessionId, observer, vmId}
    this.screen = null; // {rfb, vmId}
    conn.on("vnc-closed", (data) => {
      if (this.screen && data.vmId === this.screen.vmId) this.status(`Screen closed: ${data.reason}`);
    });
    conn.on("terminal-closed", (data) => {
      if (this.session && data.sessionId === this.session.sessionId) {
        saveSession(data.vmId, null);
        this.status(`Terminal closed: ${data.reason}${data.exitStatus !== undefined ? ` (exit status ${data.exitStatus})` : ""}`);
      }
    });
  }

  start(principal) {
    this.canConsole = (principal.scopes || []).includes("console");
  }

  view() {
    return $("console-body").querySelector(".console-view");
  }

  status(text) {
    const line = $("console-body").querySelector(".console-status");
    if (line) line.textContent = text;
  }

  message(kind, text, detail = "") {
    this.view().replaceChildren(
      h("div", { class: `console-message ${kind}`, role: "status", dataset: { kind } },
        h("p", {}, text), detail ? h("p", { class: "muted" }, detail) : null),
    );
  }

  open(vmId) {
    this.close();
    this.vmId = vmId;
    $("console-title").textContent = `Console: ${vmId}`;
    const form = h(
      "form",
      { class: "ssh-form", hidden: true, autocomplete: "off",
        onsubmit: (e) => { e.preventDefault(); this.submitSsh(form); } },
      h("label", {}, "User ", h("input", { name: "username", required: true, size: 10, spellcheck: "false" })),
      h("label", {}, "Password ", h("input", { name: "password", type: "password", size: 12 })),
      h("label", {}, "or private key ", h("textarea", { name: "privateKey", rows: 1, cols: 18, spellcheck: "false" })),
      h("button", { type: "submit" }, "Connect"),
    );
    $("console-body").replaceChildren(
      h("div", { class: "console-toolbar", role: "toolbar", "aria-label": `console of ${vmId}` },
        h("button", { type: "button", dataset: { open: "screen" }, onclick: () => this.openScreen() }, "Screen"),
        h("button", { type: "button", dataset: { open: "serial" }, onclick: () => this.openTerminal("serial") }, "Serial terminal"),
        h("button", { type: "button", dataset: { open: "ssh" }, onclick: () => {
          form.hidden = !form.hidden;
          if (!form.hidden) form.elements.username.focus();
        } }, "SSH terminal…"),
        h("button", { type: "button", onclick: () => this.closePane() }, "Close"),
        h("span", { class: "console-status muted", role: "status" }),
      ),
      form,
      h("div", { class: "console-view" }),
    );
    $("console").scrollIntoView({ block: "nearest" });
    const saved = savedSessions()[vmId];
    if (saved) this.openTerminal(saved.type, undefined, saved.sessionId);
    else this.openScreen(true);
  }

  /** The VM's screen (noVNC on the ticket URL). `fallback`: without a screen, try the
   * serial console, and say why neither is there. */
  async openScreen(fallback = false) {
    const vmId = this.vmId;
    this.stopTerminal(true);
    this.stopScreen();
    this.message("wait", `Opening the screen of ${vmId}…`);
    let reply;
    try {
      reply = await this.conn.request("vnc-connect", { vmId });
    } catch (err) {
      if (this.vmId !== vmId) return;
      if (fallback) {
        this.openTerminal("serial", undefined, undefined, err);
        return;
      }
      this.message("none", `No screen for ${vmId}. ${EXPLAIN[err.code] || ""}`, `${err.message || ""} (${err.code})`);
      return;
    }
    const RFB = await loadNovnc();
    if (this.vmId !== vmId) {
      this.conn.request("vnc-disconnect", { vmId }).catch(() => {});
      return;
    }
    const target = h("div", { class: "screen", tabindex: "-1" });
    const scale = h("button", { type: "button", "aria-pressed": "true", onclick: () => {
      rfb.scaleViewport = !rfb.scaleViewport;
      scale.setAttribute("aria-pressed", String(rfb.scaleViewport));
    } }, "Scale to fit");
    const tools = h("div", { class: "console-toolbar screen-tools", role: "toolbar", "aria-label": "screen" },
      h("button", { type: "button", onclick: () => { rfb.sendCtrlAltDel(); rfb.focus(); } }, "Ctrl-Alt-Del"),
      scale,
      h("button", { type: "button", onclick: () => {
        if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
        else target.requestFullscreen().then(() => rfb.focus()).catch(() => {});
      } }, "Full screen"),
    );
    this.view().replaceChildren(tools, target);
    const rfb = new RFB(target, wsUrl(reply.url), { shared: true });
    rfb.scaleViewport = true;
    rfb.focusOnClick = true;
    this.screen = { rfb, vmId, target };
    target.dataset.state = "connecting";
    rfb.addEventListener("connect", () => {
      target.dataset.state = "open";
      this.status(`Screen of ${vmId} (${reply.width}×${reply.height}): click it to type`);
      rfb.focus();
    });
    rfb.addEventListener("disconnect", (e) => {
      target.dataset.state = "closed";
      if (this.screen && this.screen.rfb === rfb) {
        this.status(e.detail.clean ? "Screen closed" : "Screen connection lost");
      }
    });
  }

  stopScreen() {
    const screen = this.screen;
    this.screen = null;
    if (!screen) return;
    screen.rfb.disconnect();
    this.conn.request("vnc-disconnect", { vmId: screen.vmId }).catch(() => {});
  }

  submitSsh(form) {
    const credentials = { username: form.elements.username.value.trim() };
    if (form.elements.privateKey.value.trim()) credentials.privateKey = form.elements.privateKey.value;
    else credentials.password = form.elements.password.value;
    form.elements.password.value = "";
    form.elements.privateKey.value = "";
    form.hidden = true;
    this.openTerminal("ssh", credentials);
  }

  async openTerminal(type, credentials, sessionId, screenError) {
    const vmId = this.vmId;
    this.stopTerminal(true);
    this.stopScreen();
    const label = type === "ssh" ? "SSH terminal" : type === "serial" ? "serial console" : `${type} terminal`;
    this.message("wait", `Opening the ${label} of ${vmId}…`);
    const { Terminal, AttachAddon, FitAddon } = await loadXterm();
    if (this.vmId !== vmId) return;
    const box = h("div", { class: "terminal-box", dataset: { type } });
    this.view().replaceChildren(box);
    const dark = getComputedStyle(document.documentElement).colorScheme === "dark";
    const term = new Terminal({
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      theme: dark ? {} : { background: "#1d2430", foreground: "#e6e9ef" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    // F6 leaves the terminal (it takes every other key, Tab included)
    term.attachCustomKeyEventHandler((e) => {
      if (e.key === "F6" && e.type === "keydown") {
        $("console-body").querySelector(".console-toolbar button").focus();
        return false;
      }
      return true;
    });
    const session = { term, fit, ws: null, sessionId: null, vmId, observer: null };
    this.session = session;
    const request = sessionId
      ? { vmId, sessionId, output: false }
      : { vmId, type, cols: term.cols, rows: term.rows, output: false, ...(credentials ? { credentials } : {}) };
    let reply;
    try {
      reply = await this.conn.request("terminal-connect", request);
    } catch (err) {
      if (this.session !== session) return;
      this.stopTerminal(false);
      if (sessionId) {
        saveSession(vmId, null); // gone (detach timeout): open a new one
        this.openTerminal(type, credentials);
        return;
      }
      const text = EXPLAIN[err.code] || "";
      if (screenError) {
        this.message(
          "none",
          `No console for ${vmId}: no screen and no serial console. ${text}`,
          `screen: ${screenError.message || ""} (${screenError.code}); serial: ${err.message || ""} (${err.code})`,
        );
      } else {
        this.message("none", `No ${label} for ${vmId}. ${text}`, `${err.message || ""} (${err.code})`);
      }
      return;
    }
    if (this.session !== session) return;
    session.sessionId = reply.sessionId;
    saveSession(vmId, { sessionId: reply.sessionId, type: reply.type || type });
    const url = `${reply.url}?cols=${term.cols}&rows=${term.rows}`;
    const ws = new WebSocket(wsUrl(url));
    session.ws = ws;
    term.loadAddon(new AttachAddon(ws, { bidirectional: reply.mode !== "observer" }));
    ws.addEventListener("open", () => {
      box.dataset.state = "open";
      this.status(`${label}, ${reply.mode}: F6 leaves the terminal`);
    });
    ws.addEventListener("close", (e) => {
      if (this.session !== session) return;
      box.dataset.state = "closed";
      this.status(`Terminal closed${e.reason ? `: ${e.reason}` : ""}`);
    });
    term.onResize(({ cols, rows }) => {
      this.conn.request("terminal-resize", { vmId, sessionId: session.sessionId, cols, rows }).catch(() => {});
    });
    session.observer = new ResizeObserver(() => {
      if (box.clientWidth > 0) fit.fit();
    });
    session.observer.observe(box);
    term.focus();
  }

  /** End the terminal on screen; `disconnect` also ends it on the gateway. */
  stopTerminal(disconnect) {
    const session = this.session;
    this.session = null;
    if (!session) return;
    if (session.observer) session.observer.disconnect();
    if (disconnect && session.sessionId) {
      saveSession(session.vmId, null);
      this.conn.request("terminal-disconnect", { vmId: session.vmId, sessionId: session.sessionId }).catch(() => {});
    }
    if (session.ws) session.ws.close(1000);
    session.term.dispose();
  }

  closePane() {
    this.close(true);
    $("console-title").textContent = "Console";
    $("console-body").replaceChildren(h("p", { class: "muted" }, "Choose “Console” on a VM."));
  }

  /** Leave the pane; `disconnect`: end the terminal too (else it can be reattached). */
  close(disconnect = false) {
    this.stopTerminal(disconnect);
    this.stopScreen();
    this.vmId = null;
  }
}
