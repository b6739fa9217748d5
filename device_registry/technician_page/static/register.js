/* Kotahub technician page: registering a device (catalogue choices, location, the form).
 */
import { api } from "./api.js";
import { $, enc, h, toast } from "./dom.js";
import { clearErrors, showProblem } from "./forms.js";
import { ensureMap, loadMapFeatures } from "./map.js";
import { showSecret } from "./secret.js";
import { can } from "./session.js";
import { state } from "./state.js";

async function prepareRegister() {
  const allowed = can("device.write");
  $("#register-forbidden").hidden = allowed;
  if (!allowed) return;
  if (!state.catalogue) {
    try {
      const [types, sites, teams] = await Promise.all([
        api("GET", "/device-types"), api("GET", "/sites"), api("GET", "/teams"),
      ]);
      state.catalogue = { types, sites, teams };
    } catch (err) {
      showProblem($("#register-form"), err);
      return;
    }
    const options = (items, key, label, blank) => [
      h("option", { value: "", text: blank }),
      ...items.map((item) => h("option", { value: item[key], text: label(item) })),
    ];
    $("#reg-type").replaceChildren(...options(state.catalogue.types, "name",
      (t) => t.name + " (" + t.family + ", " + t.protocol + ")", "— choose a type —"));
    $("#reg-site").replaceChildren(...options(state.catalogue.sites, "id",
      (s) => s.name + " (" + s.id + ")", "— no site —"));
    $("#reg-team").replaceChildren(...options(state.catalogue.teams, "id",
      (t) => t.name + " (" + t.id + ")", "— no team —"));
  }
  ensureMap();
}

/** Numbers go as numbers; anything else goes as typed so the API names the field. */
function coordinate(text) {
  const value = text.trim();
  return value !== "" && Number.isFinite(Number(value)) ? Number(value) : value;
}

$("#register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.type === "button" || el.type === "submit") continue;
    const value = el.value.trim();
    if (value === "") continue;
    body[el.name] = el.name === "latitude" || el.name === "longitude" ? coordinate(value) : value;
  }
  if (!body.id) body.id = "";
  try {
    const written = await api("POST", "/devices", body);
    toast("Registered " + written.device.id);
    form.reset();
    $("#reg-kota").value = "Semarang";
    $("#location-note").textContent = "Tap the map to drop a pin.";
    if (state.marker) { state.marker.remove(); state.marker = null; }
    state.searched = false;
    if (state.grid) loadMapFeatures(); // the new device is on the map next time
    location.hash = "#/device/" + enc(written.device.id);
    if (written.credentials) showSecret(written.credentials, "created");
  } catch (err) {
    showProblem(form, err);
  }
});

export { prepareRegister };
