// Dismissable notices (errors and other things worth a look) and the event feed.

import { $, formatTime, h } from "./ui.js";

const MAX_NOTICES = 5;
const MAX_EVENTS = 200;

export function notify(text, level = "error", detail = "") {
  const box = $("notices");
  const notice = h(
    "div",
    { class: `notice ${level}`, role: level === "error" ? "alert" : "status" },
    h("span", { class: "notice-text" }, text, detail ? h("small", {}, ` ${detail}`) : null),
    h("button", {
      type: "button",
      class: "dismiss",
      "aria-label": "Dismiss notice",
      onclick: () => notice.remove(),
    }, "×"),
  );
  notice.addEventListener("keydown", (e) => e.key === "Escape" && notice.remove());
  box.append(notice);
  while (box.children.length > MAX_NOTICES) box.firstElementChild.remove();
  return notice;
}

/** A protocol `error` frame's data as a notice. */
export function notifyError(err, what = "") {
  const detail = typeof err.details === "string"
    ? err.details
    : err.details && err.details.reason ? err.details.reason : "";
  const prefix = what ? `${what}: ` : "";
  return notify(`${prefix}${err.message || err.code || "error"} (${err.code || "?"})`, "error", detail);
}

export function addEvent(data, frame) {
  const list = $("event-list");
  $("events-empty").hidden = true;
  const who = data.userId ? ` by ${data.userId}` : "";
  const item = h(
    "li",
    { class: `event ${data.level || "info"}`, dataset: { event: data.event || "" } },
    h("time", { datetime: frame.timestamp || "" }, formatTime(frame.timestamp)),
    " ",
    h("strong", {}, data.event || "event"),
    " ",
    h("span", { class: "vm" }, data.vmId || ""),
    who,
    data.message ? h("span", { class: "muted" }, ` — ${data.message}`) : null,
  );
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}
