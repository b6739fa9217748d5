/* Kotahub technician page: find, register, replace, maintain and retire devices; open alerts.
 *
 * Plain JavaScript modules, no build step and no network beyond the registry itself (and the
 * hub's alert server): the page is used on phones in the field that may reach the registry
 * but not the internet. Every value from the API is put into the page with textContent, never
 * as HTML. This entry module loads the settings and the token, then routes; each view's
 * module wires its own controls when imported:
 *
 *   state.js    constants and the page's state      dom.js      element helpers, toast, views
 *   api.js      the registry API client             forms.js    errors at their field
 *   session.js  sign-in, /me, permissions           router.js   the views by address
 *   find.js     search and badges                   scan.js     serial from the camera
 *   device.js   one device and its actions          secret.js   credentials shown once
 *   register.js the register form                   map.js      the register map
 *   alerts.js   the hub's open alerts
 */
import { route } from "./router.js";
import { signInWith, takeLinkToken } from "./session.js";
import { SETTINGS_URL, TOKEN_KEY, state } from "./state.js";

async function loadSettings() {
  try {
    const response = await fetch(SETTINGS_URL, { cache: "no-store" });
    if (response.ok) Object.assign(state.settings, await response.json());
  } catch (_err) {
    // No settings: the coordinate grid needs none.
  }
}

async function start() {
  // First of all, before any request: the link's token leaves the address bar at once. The
  // stored one is read at once too: a sign-in link opened while the settings load (a
  // hashchange, the router signs in with it) must not be overwritten by it afterwards.
  const linked = takeLinkToken();
  const stored = localStorage.getItem(TOKEN_KEY);
  state.token = stored;
  await loadSettings();
  document.body.dataset.ready = "true";
  if (linked) await signInWith(linked, true);
  else if (state.token === stored) await route(); // else that sign-in has routed, or says why
}

start();
