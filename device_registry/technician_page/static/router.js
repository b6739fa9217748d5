/* Kotahub technician page: the views by address (#/find, #/device/ID, #/register, #/alerts).
 */
import { openAlerts } from "./alerts.js";
import { openDevice } from "./device.js";
import { show } from "./dom.js";
import { runSearch } from "./find.js";
import { prepareRegister } from "./register.js";
import { Superseded, loadMe, signInWith, signOut, takeLinkToken } from "./session.js";
import { state } from "./state.js";

async function route() {
  const linked = takeLinkToken(); // a sign-in link opened while the page was open
  if (linked) {
    await signInWith(linked, true);
    return;
  }
  if (!state.token) {
    show("signin");
    return;
  }
  if (!state.me) {
    try {
      await loadMe();
    } catch (err) {
      if (!(err instanceof Superseded) && state.token) signOut(err.message);
      return;
    }
  }
  const hash = location.hash || "#/find";
  const deviceMatch = hash.match(/^#\/device\/(.+)$/);
  if (deviceMatch) {
    show("device");
    await openDevice(decodeURIComponent(deviceMatch[1]));
  } else if (hash === "#/register") {
    show("register");
    await prepareRegister();
  } else if (hash === "#/alerts") {
    show("alerts");
    await openAlerts(state.token, state.me.role, state.settings, state.me.team);
  } else {
    show("find");
    if (!state.searched) await runSearch();
  }
}

window.addEventListener("hashchange", route);

export { route };
