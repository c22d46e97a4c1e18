// The VM list: live from `vm-status-all`, with the control buttons of `vm-control`.

import { notifyError } from "./notices.js";
import { vmAllowed } from "./token.js";
import { $, formatRate, h, meter } from "./ui.js";

const ACTIONS = [
  ["start", "Start"],
  ["stop", "Stop"],
  ["restart", "Restart"],
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["reset", "Reset"],
];
const PENDING = {
  start: "starting…", stop: "stopping…", restart: "restarting…", pause: "pausing…",
  resume: "resuming…", reset: "resetting…", "force-stop": "powering off…",
};

export class VmList {
  constructor(conn, { onConsole, confirm }) {
    this.conn = conn;
    this.onConsole = onConsole;
    this.confirm = confirm;
    this.rows = new Map(); // vmId -> {tr, status, pending}
    this.canControl = false;
    this.vmsClaim = undefined;
    conn.on("vm-status", (data) => this.update(data));
  }

  /** Called after each (re)authentication. */
  start(principal, claims) {
    this.canControl = (principal.scopes || []).includes("vm:control");
    this.vmsClaim = claims.vms;
    this.canConsole = (principal.scopes || []).includes("console");
    if (!(principal.scopes || []).includes("vm:read")) {
      this.setEmpty("This token has no vm:read scope: no VMs to show.");
      this.conn.unsubscribe("vms");
      return;
    }
    for (const row of this.rows.values()) row.tr.classList.add("stale");
    this.conn.subscribe("vms", { topic: "vm-status-all" }, (err) => notifyError(err, "VM list"));
    this.setEmpty(this.rows.size ? "" : "Waiting for the VM list…");
    for (const [vmId, row] of this.rows) this.renderActions(vmId, row);
  }

  setEmpty(text) {
    $("vms-empty").textContent = text;
    $("vms-empty").hidden = !text;
  }

  allowed(vmId) {
    return this.canControl && vmAllowed(this.vmsClaim, vmId);
  }

  update(data) {
    const vmId = data.vmId;
    if (!vmId) return;
    let row = this.rows.get(vmId);
    if (!row) {
      row = this.createRow(vmId);
      this.rows.set(vmId, row);
      const rows = [...this.rows.keys()].sort();
      const before = this.rows.get(rows[rows.indexOf(vmId) + 1]);
      $("vm-rows").insertBefore(row.tr, before ? before.tr : null);
      $("vm-table").hidden = false;
      this.setEmpty("");
      $("vm-count").textContent = `(${this.rows.size})`;
    }
    row.tr.classList.remove("stale");
    row.status = data.status || "unknown";
    const badge = row.cells.status;
    badge.textContent = row.status;
    badge.dataset.status = row.status;
    row.cells.cpu.replaceChildren(meter(data.cpu, `CPU of ${vmId}`));
    row.cells.mem.replaceChildren(meter(data.memory, `memory of ${vmId}`));
    const net = data.network || {};
    row.cells.net.textContent = `↓ ${formatRate(net.rx)}\n↑ ${formatRate(net.tx)}`;
  }

  createRow(vmId) {
    const status = h("span", { class: "badge", role: "status", "aria-label": `status of ${vmId}` });
    const cells = {
      status,
      cpu: h("td", { class: "num", dataset: { label: "CPU" } }),
      mem: h("td", { class: "num", dataset: { label: "Memory" } }),
      net: h("td", { class: "net", dataset: { label: "Network" } }),
      actions: h("div", { class: "actions", role: "group", "aria-label": `actions for ${vmId}` }),
      note: h("div", { class: "row-note", "aria-live": "polite" }),
    };
    const tr = h(
      "tr",
      { dataset: { vm: vmId } },
      h("th", { scope: "row", class: "vm-name" }, vmId),
      h("td", {}, status),
      cells.cpu,
      cells.mem,
      cells.net,
      h("td", {}, cells.actions, cells.note),
    );
    const row = { tr, cells, status: "unknown", pending: null, buttons: null };
    this.renderActions(vmId, row);
    return row;
  }

  renderActions(vmId, row) {
    if (!row.buttons) {
      row.buttons = [
        ...ACTIONS.map(([action, label]) =>
          h("button", {
            type: "button",
            dataset: { action },
            "aria-label": `${label} ${vmId}`,
            onclick: () => this.control(vmId, action),
          }, label)),
        h("button", {
          type: "button",
          class: "danger",
          dataset: { action: "force-stop" },
          "aria-label": `Force stop ${vmId}`,
          onclick: () => this.forceStop(vmId),
        }, "Force stop…"),
        h("button", {
          type: "button",
          dataset: { action: "console" },
          "aria-label": `Console of ${vmId}`,
          onclick: () => this.onConsole(vmId),
        }, "Console"),
      ];
      row.cells.actions.replaceChildren(...row.buttons);
    }
    const allowed = this.allowed(vmId);
    const why = !this.canControl
      ? "this token lacks the vm:control scope"
      : !allowed ? "this token's vms claim does not include this VM" : "";
    const consoleOk = this.canConsole && vmAllowed(this.vmsClaim, vmId);
    for (const button of row.buttons) {
      const action = button.dataset.action;
      if (action === "console") {
        button.disabled = !consoleOk;
        button.title = consoleOk ? `Open the console of ${vmId}` : "this token lacks the console scope";
        continue;
      }
      // not allowed: disabled (shown, not hidden); pending: aria-disabled, so that the
      // focus stays on the button the keyboard user pressed
      button.disabled = !allowed;
      button.title = why || button.getAttribute("aria-label");
      if (row.pending) button.setAttribute("aria-disabled", "true");
      else button.removeAttribute("aria-disabled");
    }
    row.cells.actions.setAttribute("aria-busy", row.pending ? "true" : "false");
  }

  async forceStop(vmId) {
    const row = this.rows.get(vmId);
    if (!row || row.pending) return;
    const ok = await this.confirm(
      `Power off ${vmId} at once? The guest is not asked to shut down: unsaved data in it is lost.`,
    );
    if (ok) this.control(vmId, "stop", true);
  }

  async control(vmId, action, force = false) {
    const row = this.rows.get(vmId);
    if (!row || row.pending) return;
    const key = force ? "force-stop" : action;
    row.pending = key;
    row.tr.dataset.pending = key;
    row.cells.note.className = "row-note pending";
    row.cells.note.textContent = PENDING[key];
    this.renderActions(vmId, row);
    const data = { vmId, action };
    if (force) data.force = true;
    try {
      await this.conn.request("vm-control", data);
      row.cells.note.textContent = "";
    } catch (err) {
      row.cells.note.className = "row-note error";
      row.cells.note.textContent = `${err.message || err.code}${
        typeof err.details === "string" ? `: ${err.details}` : ""
      }`;
      notifyError(err, `${key} ${vmId}`);
    } finally {
      row.pending = null;
      delete row.tr.dataset.pending;
      this.renderActions(vmId, row);
    }
  }
}

/** Forget a VM (its `vm-deleted` event). */
VmList.prototype.remove = function remove(vmId) {
  const row = this.rows.get(vmId);
  if (!row) return;
  row.tr.remove();
  this.rows.delete(vmId);
  $("vm-count").textContent = `(${this.rows.size})`;
};
