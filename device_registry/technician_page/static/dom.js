/* Kotahub technician page: DOM helpers (query, build elements as text, never HTML), the
 * toast, and which view is shown.
 */

const $ = (selector, root) => (root || document).querySelector(selector);
const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

/** Build an element; children are nodes or strings (added as text, never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const enc = encodeURIComponent;

let toastTimer = null;
function toast(message, isError) {
  const el = $("#toast");
  el.textContent = message;
  el.classList.toggle("error", Boolean(isError));
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

function show(name) {
  for (const view of $$(".view")) view.hidden = view.id !== "view-" + name;
  $("#tab-find").classList.toggle("current", name === "find" || name === "device");
  $("#tab-register").classList.toggle("current", name === "register");
  $("#tab-alerts").classList.toggle("current", name === "alerts");
  window.scrollTo(0, 0);
}

export { $, $$, h, enc, toast, show };
