/* Kotahub technician page: signing in (pasted token or sign-in link), /me and the role's
 * permissions, signing out.
 */
import { ApiProblem, api, onTokenRefused } from "./api.js";
import { $, $$, show, toast } from "./dom.js";
import { clearErrors, showProblem } from "./forms.js";
// route and session call each other (a sign-in routes; a route may sign in): only
// inside functions, so the import cycle is safe.
import { route } from "./router.js";
import { TOKEN_KEY, state } from "./state.js";

function can(permission) {
  return state.permissions.has(permission);
}

/** Hide every control whose `data-needs` permission the token lacks. */
function applyPermissions(root) {
  for (const el of $$("[data-needs]", root)) el.hidden = !can(el.dataset.needs);
}

/** A sign-in whose answer came after another token took its place: it must change nothing. */
class Superseded extends Error {}

async function loadMe() {
  const token = state.token;
  const me = await api("GET", "/me");
  // A sign-in link opened while the stored token's /me was on its way: the late answer
  // would sign the page in again under a token already dropped, and its next request
  // would go without one and sign out over the link's own message.
  if (state.token !== token) throw new Superseded("superseded by a newer sign-in");
  state.me = me;
  state.permissions = new Set(me.permissions || []);
  $("#who-name").textContent = me.name;
  $("#who-role").textContent = me.role;
  $("#who").hidden = false;
  $("#sign-out").hidden = false;
  $("#tabbar").hidden = false;
  applyPermissions(document);
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.permissions = new Set();
  state.catalogue = null;
  state.searched = false;
  $("#who").hidden = true;
  $("#sign-out").hidden = true;
  $("#tabbar").hidden = true;
  $("#results").replaceChildren();
  $("#device-body").replaceChildren();
  $("#search-summary").textContent = "";
  state.device = null;
  show("signin");
  clearErrors($("#signin-form"));
  if (message) {
    const box = $('#signin-form [data-error-for="_form"]');
    box.textContent = message;
    box.hidden = false;
  }
  if (location.hash) history.replaceState(null, "", location.pathname);
}

/** Try a token (pasted or from a sign-in link); keep it only when the registry takes it. */
async function signInWith(token, fromLink) {
  const form = $("#signin-form");
  clearErrors(form);
  state.token = token;
  state.me = null;
  try {
    await loadMe();
  } catch (err) {
    if (err instanceof Superseded || state.token !== token) return false; // a newer one won
    state.token = null;
    show("signin");
    const detail = err instanceof ApiProblem ? err.problem.detail || err.message : String(err);
    showProblem(form, new ApiProblem(0, { field: "token", detail }));
    if (fromLink) {
      const box = $('[data-error-for="_form"]', form);
      box.textContent = "The sign-in link did not work. Ask your admin for a new one, or paste a token.";
      box.hidden = false;
    }
    return false;
  }
  localStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  if (location.hash === "#/find" || !location.hash) route();
  else location.hash = "#/find";
  if (fromLink) toast("Signed in as " + state.me.name + " with the sign-in link.");
  return true;
}

/** The token of a sign-in link (`#token=...`), taken once and wiped from the address bar.
 *
 * A URL fragment never leaves the phone: it is not in a request line, a Referer or a
 * server log. replaceState drops it from the address bar and this history entry, so it
 * is not left on screen, in the back button or in a shared screenshot. */
function takeLinkToken() {
  if (!location.hash.startsWith("#token=")) return null;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname + location.search);
  return token && token.trim() ? token.trim() : null;
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const token = $("#token-input").value.trim();
  if (!token) {
    showProblem(form, new ApiProblem(0, { field: "token", detail: "Paste your API token first." }));
    return;
  }
  await signInWith(token, false);
});

$("#sign-out").addEventListener("click", () => signOut("Signed out. The token was removed from this phone."));

onTokenRefused(signOut);

export { Superseded, applyPermissions, can, loadMe, signInWith, signOut, takeLinkToken };
