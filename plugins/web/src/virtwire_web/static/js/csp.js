// The page's Content-Security-Policy allows no inline style, except <style> elements that
// carry this page load's nonce. xterm.js creates such elements to size and colour its rows:
// give every <style> created through document.createElement the nonce.

const meta = document.querySelector('meta[name="csp-nonce"]');
const nonce = meta ? meta.content : "";
if (nonce && !document.createElement.withNonce) {
  const create = document.createElement.bind(document);
  const withNonce = (tag, options) => {
    const element = create(tag, options);
    if (String(tag).toLowerCase() === "style") element.nonce = nonce;
    return element;
  };
  withNonce.withNonce = true;
  document.createElement = withNonce;
}
if (meta) meta.remove();
