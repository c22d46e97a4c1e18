// Small DOM helpers shared by the panes.

/** h("button", {class: "x", onclick}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

export function formatRate(bytesPerSecond) {
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let value = Number(bytesPerSecond) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso) {
  const date = iso ? new Date(iso) : new Date();
  return date.toLocaleTimeString([], { hour12: false });
}

export function percent(value) {
  const n = Number(value);
  return Number.isFinite(n) ? Math.max(0, Math.min(100, n)) : 0;
}

/** A meter element (native: screen readers announce the value) with a text label. */
export function meter(value, label) {
  const v = percent(value);
  return h(
    "span",
    { class: "bar" },
    h("meter", { min: 0, max: 100, low: 70, high: 90, optimum: 0, value: v, "aria-label": label }),
    h("span", { class: "bar-text" }, `${v.toFixed(1)} %`),
  );
}
