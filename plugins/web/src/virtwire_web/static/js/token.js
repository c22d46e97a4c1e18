// The token: kept in sessionStorage (never in a URL after load), and read for what the page
// may offer (the `vms` claim; scopes come from the auth-response).

const KEY = "virtwire.token";

/** Move a `?token=` of the address into sessionStorage and drop it from the address. */
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token !== null) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    if (token) sessionStorage.setItem(KEY, token);
  }
}

export const storedToken = () => sessionStorage.getItem(KEY);
export const storeToken = (token) => sessionStorage.setItem(KEY, token);
export const forgetToken = () => sessionStorage.removeItem(KEY);

/** The token's claims (unverified: only to decide what to offer; the server decides). */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return {};
  }
}

/** fnmatch-style glob (`*`, `?`, `[...]`) as the gateway matches the `vms` claim. */
function globToRegExp(glob) {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) re += "\\[";
      else {
        let set = glob.slice(i + 1, end).replace(/\\/g, "\\\\");
        if (set[0] === "!") set = "^" + set.slice(1);
        re += `[${set}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "s");
}

export function vmAllowed(patterns, vmId) {
  if (!Array.isArray(patterns)) return true;
  return patterns.some((p) => globToRegExp(String(p)).test(vmId));
}
