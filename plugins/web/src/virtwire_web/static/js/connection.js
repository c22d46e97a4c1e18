// The /ws connection: authenticates with an `auth` message (the token never goes into a URL),
// matches replies to requests by id, keeps the subscriptions and renews them after a
// reconnect, and reconnects by itself with exponential backoff.

const AUTH_CLOSE = 4001;

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Delays of the reconnect schedule: 0.5 s doubling up to 15 s, with ±20 % jitter. */
export function backoff(attempt) {
  const base = Math.min(15000, 500 * 2 ** attempt);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

export class Connection extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.seq = 0;
    this.pending = new Map();        // id -> {resolve, reject}
    this.subscriptions = new Map();  // key -> {data, onError}
    this.handlers = new Map();       // type -> Set(fn)
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.closedForGood = false;
    this.principal = null;
    this.state = "idle";
    addEventListener("online", () => this.state === "waiting" && this.reconnectNow());
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  open() {
    clearTimeout(this.timer);
    this.setState("connecting");
    const ws = new WebSocket(wsUrl("/ws"));
    this.ws = ws;
    ws.onopen = () => {
      this.send({ type: "auth", data: { token: this.token }, id: "auth" });
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(ws, event);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Send a frame with a fresh id; resolves with the `-response` data, rejects with the
   * `error` frame's data (or a connection error). */
  request(type, data = {}) {
    const id = `r${++this.seq}`;
    return new Promise((resolve, reject) => {
      if (!this.principal || !this.send({ type, data, id })) {
        reject({ code: "DISCONNECTED", message: "not connected to the gateway" });
        return;
      }
      this.pending.set(id, { resolve, reject });
    });
  }

  /** Subscribe now (when connected) and again after every reconnect. */
  subscribe(key, data, onError) {
    this.subscriptions.set(key, { data, onError });
    if (this.principal) this.doSubscribe(key);
  }

  unsubscribe(key) {
    const sub = this.subscriptions.get(key);
    this.subscriptions.delete(key);
    if (sub && this.principal) this.request("unsubscribe", sub.data).catch(() => {});
  }

  doSubscribe(key) {
    const sub = this.subscriptions.get(key);
    if (!sub) return;
    this.request("subscribe", sub.data).catch((err) => {
      if (err.code !== "DISCONNECTED" && sub.onError) sub.onError(err);
    });
  }

  receive(raw) {
    if (typeof raw !== "string") return;
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return; // the text "pong"
    }
    if (frame.id === "auth") {
      this.authenticated(frame);
      return;
    }
    const waiter = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (waiter) {
      this.pending.delete(frame.id);
      if (frame.type === "error") waiter.reject(frame.data || {});
      else waiter.resolve(frame.data || {});
      return;
    }
    if (frame.type === "error") {
      const code = frame.data && frame.data.code;
      if (code === "TOKEN_EXPIRED" || code === "AUTH_FAILED") this.authError = frame.data;
      this.emit("error-frame", frame.data || {});
      return;
    }
    const fns = this.handlers.get(frame.type);
    if (fns) for (const fn of fns) fn(frame.data || {}, frame);
  }

  authenticated(frame) {
    if (frame.type === "error") {
      this.authError = frame.data || {};
      return; // the server closes with 4001 next
    }
    this.principal = frame.data;
    this.attempt = 0;
    this.setState("online", { principal: this.principal });
    for (const key of this.subscriptions.keys()) this.doSubscribe(key);
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasOnline = this.principal !== null;
    this.principal = null;
    for (const { reject } of this.pending.values()) {
      reject({ code: "DISCONNECTED", message: "connection lost" });
    }
    this.pending.clear();
    if (this.closedForGood) return;
    if (event.code === AUTH_CLOSE) {
      const err = this.authError || { code: "AUTH_FAILED", message: event.reason };
      this.authError = null;
      this.closedForGood = true;
      this.setState("signed-out", { error: err });
      return;
    }
    const delay = backoff(this.attempt++);
    this.retryAt = Date.now() + delay;
    this.setState("waiting", { delay, attempt: this.attempt, code: event.code, wasOnline });
    this.timer = setTimeout(() => this.open(), delay);
  }

  reconnectNow() {
    if (this.closedForGood || this.ws) return;
    clearTimeout(this.timer);
    this.open();
  }

  close() {
    this.closedForGood = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.setState("idle");
  }
}
