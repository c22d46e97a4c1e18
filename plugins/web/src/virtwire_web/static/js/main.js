// The page: sign-in, then the panes on one /ws connection plus the log endpoint.

import "./csp.js";
import { Connection } from "./connection.js";
import { ConsolePane } from "./console.js";
import { HostPanel } from "./host.js";
import { LogPane } from "./logs.js";
import { addEvent, notifyError } from "./notices.js";
import { claims, forgetToken, storeToken, storedToken, takeTokenFromUrl } from "./token.js";
import { $ } from "./ui.js";
import { VmList } from "./vms.js";

takeTokenFromUrl();

let conn = null;
let bannerTimer = null;
let host = null;
let vms = null;
let consolePane = null;
const logs = new LogPane(storedToken);

// -- theme: auto (the system's), light, dark; the choice is kept in localStorage ------------
const THEMES = ["auto", "light", "dark"];
function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $("theme").textContent = `Theme: ${theme}`;
  localStorage.setItem("virtwire.theme", theme);
  if (host) host.restyle();
}
$("theme").addEventListener("click", () => {
  const now = localStorage.getItem("virtwire.theme") || "auto";
  applyTheme(THEMES[(THEMES.indexOf(now) + 1) % THEMES.length]);
});

// -- confirmation dialog -------------------------------------------------------------------
function confirm(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function showSignin(error) {
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("banner").hidden = true;
  $("whoami").textContent = "";
  $("signin-error").textContent = error || "";
  $("token-input").value = "";
  $("token-input").focus();
}

function showBanner(detail) {
  clearInterval(bannerTimer);
  const banner = $("banner");
  banner.hidden = false;
  const tick = () => {
    const left = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
    $("banner-text").textContent = detail.wasOnline || detail.attempt > 1
      ? `Disconnected from the gateway. Reconnecting in ${left} s (attempt ${detail.attempt})…`
      : `Cannot reach the gateway. Retrying in ${left} s…`;
  };
  tick();
  bannerTimer = setInterval(tick, 500);
}

function onState(event) {
  const detail = event.detail;
  const label = $("conn-state");
  label.dataset.state = detail.state;
  label.textContent = {
    connecting: "connecting…", online: "connected", waiting: "disconnected",
    "signed-out": "signed out", idle: "not connected",
  }[detail.state];
  if (detail.state === "online") {
    clearInterval(bannerTimer);
    $("banner").hidden = true;
    const principal = detail.principal;
    const token = storedToken();
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("whoami").textContent = `${principal.userId} · ${(principal.scopes || []).join(" ")}`;
    vms.start(principal, claims(token));
    host.start(principal);
    consolePane.start(principal);
    if ((principal.scopes || []).includes("logs:read")) {
      if (!logs.ws && !logs.timer) logs.open($("log-file").value.trim());
    } else {
      logs.state("This token has no logs:read scope.");
    }
  } else if (detail.state === "waiting") {
    // what is on screen is no longer live
    for (const tr of document.querySelectorAll("#vm-rows tr")) tr.classList.add("stale");
    showBanner(detail);
  } else if (detail.state === "signed-out") {
    const err = detail.error || {};
    forgetToken();
    logs.stop();
    const reason = err.details && err.details.reason ? ` (${err.details.reason})` : "";
    const code = err.code ? ` [${err.code}]` : "";
    showSignin(`Sign-in failed: ${err.message || "the token was refused"}${reason}${code}`);
  }
}

function signIn(token) {
  if (conn) conn.close();
  conn = new Connection(token);
  vms = new VmList(conn, { onConsole: (vmId) => consolePane.open(vmId), confirm });
  host = host || new HostPanel();
  host.conn = conn;
  conn.on("system-monitor", (data) => host.sample(data));
  if (consolePane) consolePane.close();
  consolePane = new ConsolePane(conn);
  conn.on("system-event", (data, frame) => {
    addEvent(data, frame);
    if (data.event === "vm-deleted") vms.remove(data.vmId);
  });
  conn.addEventListener("error-frame", (e) => notifyError(e.detail));
  conn.addEventListener("state", onState);
  conn.open();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  storeToken(token);
  $("signin-error").textContent = "";
  signIn(token);
});

$("signout").addEventListener("click", () => {
  forgetToken();
  logs.stop();
  if (consolePane) consolePane.close(true);
  if (conn) conn.close();
  conn = null;
  $("vm-rows").replaceChildren();
  showSignin("");
});

$("banner-retry").addEventListener("click", () => conn && conn.reconnectNow());

fetch("config.json", { cache: "no-store" })
  .then((r) => r.json())
  .then((config) => logs.setFiles(config.logFiles || []))
  .catch(() => {});

applyTheme(localStorage.getItem("virtwire.theme") || "auto");
const token = storedToken();
if (token) signIn(token);
else showSignin("");
