// The console pane of one VM. It asks the gateway for a console (`vnc-connect`,
// `terminal-connect`) and says clearly when there is none: no console transport installed
// (UNKNOWN_TYPE), or a backend without consoles such as libvirt's test driver
// (CONSOLE_UNAVAILABLE).

import { $, h } from "./ui.js";

const EXPLAIN = {
  UNKNOWN_TYPE: "This gateway has no console transport installed, so no VM has a console here.",
  CONSOLE_UNAVAILABLE: "This VM's backend offers no console (for example libvirt's test driver).",
  VNC_NOT_READY: "The VM's screen is not ready yet (is it running?).",
  FORBIDDEN: "This token may not open consoles (scope console, or the vms claim).",
};

export class ConsolePane {
  constructor(conn) {
    this.conn = conn;
    this.vmId = null;
    this.canConsole = false;
  }

  start(principal) {
    this.canConsole = (principal.scopes || []).includes("console");
  }

  body() {
    return $("console-body");
  }

  message(kind, text, detail = "") {
    this.body().replaceChildren(
      h("div", { class: `console-message ${kind}`, role: "status", dataset: { kind } },
        h("p", {}, text), detail ? h("p", { class: "muted" }, detail) : null),
    );
  }

  async open(vmId) {
    this.close();
    this.vmId = vmId;
    $("console-title").textContent = `Console: ${vmId}`;
    $("console").scrollIntoView({ block: "nearest" });
    this.message("wait", `Opening the console of ${vmId}…`);
    const kinds = [
      ["vnc-connect", { vmId }],
      ["terminal-connect", { vmId, type: "serial" }],
    ];
    const failures = [];
    for (const [type, data] of kinds) {
      try {
        const reply = await this.conn.request(type, data);
        if (this.vmId !== vmId) return;
        // A console transport answered: this version of the page cannot show it yet; end
        // the session at once rather than leave it open.
        this.conn.request(type.replace("-connect", "-disconnect"), { vmId }).catch(() => {});
        failures.push({ code: "UNSUPPORTED", message: `${type} answered ${JSON.stringify(reply)}` });
      } catch (err) {
        if (this.vmId !== vmId) return;
        failures.push(err);
      }
    }
    const err = failures.find((f) => f.code !== "UNKNOWN_TYPE") || failures[0];
    const text = EXPLAIN[err.code] || `No console for ${vmId}.`;
    this.message("none", `No console for ${vmId}. ${text}`, `${err.message || ""} (${err.code})`);
    this.body().querySelector(".console-message").focus?.();
  }

  close() {
    this.vmId = null;
  }
}
