// The log pane: an allow-listed log on /api/v1/ws/logs (last lines, then one text message per
// new line), with follow/pause, a filter, and the server's notices (truncated, rotated,
// deleted, skipped lines...) shown as notices rather than as log lines.

import { backoff, wsUrl } from "./connection.js";
import { $, h } from "./ui.js";

const MAX_LINES = 2000;
const MAX_HELD = 5000;

// The endpoint's texts in both locales (docs/logs.md). Whole-line matches only.
const NOTICES = [
  [/^日志文件被截断，重新加载\.\.\.$|^log file truncated, reloading\.\.\.$/, "truncated"],
  [/^日志文件 .+ 已轮转，继续跟踪新文件$|^log file .+ was rotated, following the new file$/, "rotated"],
  [/^日志文件 .+ 不再存在$|^log file .+ no longer exists$/, "deleted"],
  [/^日志文件 .+ 不存在$|^log file .+ does not exist$/, "not-found"],
  [/^客户端接收过慢，跳过了 \d+ 行日志$|^client too slow, skipped \d+ log lines$/, "dropped"],
  [/^不允许访问请求的文件: |^access to the requested file is not allowed: /, "forbidden"],
  [/^连接过多：|^too many connections: /, "busy"],
  [/^需要认证：|^认证失败：|^token 已过期$|^token expired$|^权限不足：/, "auth"],
];

export function classify(text) {
  for (const [re, kind] of NOTICES) if (re.test(text)) return kind;
  return null;
}

export class LogPane {
  constructor(getToken) {
    this.getToken = getToken;
    this.ws = null;
    this.paused = false;
    this.held = [];
    this.heldDropped = 0;
    this.filter = "";
    this.attempt = 0;
    this.timer = null;
    this.file = "";
    this.box = $("log-lines");
    $("log-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.open($("log-file").value.trim());
    });
    $("log-pause").addEventListener("click", () => this.setPaused(!this.paused));
    $("log-clear").addEventListener("click", () => this.box.replaceChildren());
    $("log-filter").addEventListener("input", (e) => this.setFilter(e.target.value));
  }

  setFiles(names) {
    $("log-files").replaceChildren(...names.map((n) => h("option", { value: n })));
  }

  state(text) {
    $("log-state").textContent = text;
  }

  open(file) {
    this.stop();
    this.file = file;
    this.attempt = 0;
    this.box.replaceChildren();
    this.connect();
  }

  connect() {
    const token = this.getToken();
    if (!token) return;
    const query = new URLSearchParams();
    if (this.file) query.set("file", this.file);
    query.set("token", token);
    const ws = new WebSocket(wsUrl(`/api/v1/ws/logs?${query}`));
    this.ws = ws;
    this.state(`connecting to ${this.file || "the default log"}…`);
    ws.onopen = () => {
      this.attempt = 0;
      this.state(`following ${this.file || "the default log"}`);
    };
    ws.onmessage = (event) => this.receive(String(event.data));
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      // 1000 after "does not exist" / "no longer exists", 1008 forbidden, 4001 auth,
      // 4029 too many: retrying would not help. Anything else (gateway restart, network):
      // reconnect with backoff; the server sends the last lines again.
      if ([1000, 1008, 4001, 4029].includes(event.code)) {
        this.state(`stream ended (${event.code})`);
        return;
      }
      const delay = backoff(this.attempt++);
      this.state(`disconnected; reconnecting in ${Math.round(delay / 1000)} s`);
      this.timer = setTimeout(() => {
        this.mark("reconnected", "reconnected: the last lines follow again");
        this.connect();
      }, delay);
    };
  }

  stop() {
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  receive(text) {
    if (text === "pong") return;
    const kind = classify(text);
    if (kind) {
      this.mark(kind, text);
      return;
    }
    if (this.paused) {
      this.held.push(text);
      if (this.held.length > MAX_HELD) {
        this.held.shift();
        this.heldDropped++;
      }
      this.state(`paused: ${this.held.length + this.heldDropped} new lines held`);
      return;
    }
    this.append(h("div", { class: "line" }, text));
  }

  mark(kind, text) {
    this.append(h("div", { class: `line notice ${kind}`, role: "note", dataset: { kind } }, text));
  }

  append(line) {
    if (this.filter && !line.classList.contains("notice") && !this.matches(line.textContent)) {
      line.hidden = true;
    }
    const atBottom = this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 24;
    this.box.append(line);
    while (this.box.children.length > MAX_LINES) this.box.firstElementChild.remove();
    if (!this.paused && atBottom) this.box.scrollTop = this.box.scrollHeight;
  }

  matches(text) {
    return text.toLowerCase().includes(this.filter);
  }

  setFilter(value) {
    this.filter = value.trim().toLowerCase();
    for (const line of this.box.children) {
      line.hidden = !line.classList.contains("notice") && this.filter !== "" && !this.matches(line.textContent);
    }
  }

  setPaused(paused) {
    this.paused = paused;
    const button = $("log-pause");
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "Follow" : "Pause";
    if (!paused) {
      if (this.heldDropped) this.mark("dropped", `${this.heldDropped} lines were not kept while paused`);
      const held = this.held;
      this.held = [];
      this.heldDropped = 0;
      for (const text of held) this.append(h("div", { class: "line" }, text));
      this.box.scrollTop = this.box.scrollHeight;
      this.state(`following ${this.file || "the default log"}`);
    }
  }
}
