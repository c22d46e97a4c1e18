// The console pane of one VM: a terminal (serial console, or SSH with credentials) through
// xterm.js on the gateway's ticket URL, and a clear message where there is no console (no
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
    this.openTerminal(saved ? saved.type : "serial", undefined, saved && saved.sessionId);
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

  async openTerminal(type, credentials, sessionId) {
    const vmId = this.vmId;
    this.stopTerminal(true);
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
      this.message("none", `No ${label} for ${vmId}. ${text}`, `${err.message || ""} (${err.code})`);
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
    this.vmId = null;
  }
}
