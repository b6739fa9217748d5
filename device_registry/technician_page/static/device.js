/* Kotahub technician page: one device (status, readings, details, history) and its actions:
 * maintenance, replace the unit, new MQTT password, retire.
 */
import { api } from "./api.js";
import { $, enc, h, toast } from "./dom.js";
import { onlineBadge, stateBadge } from "./find.js";
import { clearErrors, showProblem } from "./forms.js";
import { scanSerial } from "./scan.js";
import { showSecret } from "./secret.js";
import { applyPermissions } from "./session.js";
import { state } from "./state.js";

function when(iso) {
  if (!iso) return "never";
  const at = new Date(iso);
  const seconds = Math.round((Date.now() - at.getTime()) / 1000);
  const ago = seconds < 90 ? seconds + " s ago"
    : seconds < 5400 ? Math.round(seconds / 60) + " min ago"
      : seconds < 172800 ? Math.round(seconds / 3600) + " h ago"
        : Math.round(seconds / 86400) + " days ago";
  return ago + " (" + at.toLocaleString() + ")";
}

function actorName(actor) {
  // Audit actors look like "token:<id>:<name>"; the name is what people recognise.
  const parts = String(actor || "").split(":");
  return parts.length >= 3 && parts[0] === "token" ? parts.slice(2).join(":") : actor;
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([label, value]) => [h("dt", { text: label }), h("dd", { text: value })]));
}

function changes(before, after) {
  if (!before) return ""; // the action ("create") already says it
  const keys = Object.keys(after || {}).filter((key) => key !== "updated_at"
    && JSON.stringify(before[key]) !== JSON.stringify(after[key]));
  return keys.map((key) => key + ": " + (before[key] ?? "–") + " → " + (after[key] ?? "–")).join(", ");
}

async function openDevice(deviceId) {
  const body = $("#device-body");
  body.replaceChildren(h("p", { class: "summary", text: "Loading " + deviceId + "…" }));
  try {
    const [device, status, history] = await Promise.all([
      api("GET", "/devices/" + enc(deviceId)),
      api("GET", "/devices/" + enc(deviceId) + "/status"),
      api("GET", "/devices/" + enc(deviceId) + "/history"),
    ]);
    let type = null;
    try {
      type = await api("GET", "/device-types/" + enc(device.device_type));
    } catch (_err) {
      type = null; // units are a nicety; the readings still show without them
    }
    state.device = device;
    renderDevice(device, status, history, type);
  } catch (err) {
    body.replaceChildren(h("p", { class: "form-error", text: err.message }));
  }
}

function renderDevice(device, status, history, type) {
  const units = {};
  for (const metric of (type && type.metrics) || []) units[metric.name] = metric.unit;
  const area = ["kota", "kecamatan", "kelurahan", "rw", "rt"]
    .filter((key) => device[key])
    .map((key) => (key === "rw" || key === "rt" ? key.toUpperCase() + " " : "") + device[key])
    .join(" › ");
  const location = device.latitude === null || device.latitude === undefined
    ? "not set"
    : device.latitude.toFixed(6) + ", " + device.longitude.toFixed(6);
  const readings = Object.entries(status.last_readings || {});
  const readingsAt = status.last_readings_at || {}; // only a live source knows the times
  const retired = device.state === "retired";

  const actions = h("section", { class: "card actions", id: "device-actions", "data-needs": "device.write" },
    h("h2", { text: "Actions" }),
    h("p", { class: "form-error", "data-error-for": "_form", hidden: true }),
    retired
      ? h("p", { class: "note", text: "This device is retired; it cannot be changed." })
      : [
        device.state === "maintenance"
          ? h("button", { type: "button", id: "maintenance-toggle", class: "primary wide", "data-target-state": "active", onclick: () => setState(device, "active"), text: "End maintenance (back to active)" })
          : h("button", { type: "button", id: "maintenance-toggle", class: "primary wide", "data-target-state": "maintenance", onclick: () => setState(device, "maintenance"), text: "Put into maintenance" }),
        h("button", { type: "button", id: "replace-open", class: "secondary wide", onclick: () => { $("#replace-form").hidden = false; $("#replace-serial").focus(); }, text: "Replace failed unit" }),
        device.mqtt_username
          ? h("button", { type: "button", id: "rotate-credentials", class: "secondary wide", "data-needs": "credentials", onclick: () => rotate(device), text: "New MQTT password" })
          : null,
        h("button", { type: "button", id: "retire-open", class: "danger wide", onclick: () => retire(device), text: "Retire device" }),
        replaceForm(device),
      ]);

  const replacements = (history.replacements || []).map((swap) => h("li", {},
    h("strong", { text: "Unit replaced: " }),
    (swap.old_unit.serial || "–") + " → " + (swap.new_unit.serial || "–"),
    h("span", { class: "when", text: " · " + when(swap.at) + " · " + actorName(swap.actor) + (swap.reason ? " · " + swap.reason : "") })));
  const audit = (history.audit || []).map((entry) => h("li", {},
    h("strong", { text: entry.action }), " ",
    h("span", { class: "change", text: changes(entry.before, entry.after) }),
    h("span", { class: "when", text: " · " + when(entry.at) + " · " + actorName(entry.actor) })));

  $("#device-body").replaceChildren(
    h("header", { class: "device-head" },
      h("h1", { id: "device-title", text: device.id }),
      h("p", { class: "result-meta", text: device.device_type + " · " + device.family }),
      h("p", { class: "badges" }, stateBadge(device.state), onlineBadge(status))),
    h("section", { class: "card", id: "device-status" },
      h("h2", { text: "Status" }),
      facts([
        ["Online", status.online === true ? "online" : status.online === false ? "offline" : "unknown"],
        ["Reason", status.reason],
        ["Last seen", when(status.last_seen)],
        ["Expected every", status.expected_interval_s + " s"],
      ])),
    h("section", { class: "card", id: "device-readings" },
      h("h2", { text: "Last readings" }),
      readings.length
        ? h("table", { class: "readings" }, h("tbody", {}, readings.map(([name, value]) =>
          h("tr", { "data-metric": name }, h("th", { text: name }),
            h("td", { class: "value", text: String(value) + (units[name] ? " " + units[name] : "") }),
            readingsAt[name]
              ? h("td", { class: "when", text: when(readingsAt[name]) })
              : null))))
        : h("p", { class: "note", text: "No readings reported yet." })),
    actions,
    h("section", { class: "card", id: "device-details" },
      h("h2", { text: "Details" }),
      facts([
        ["Serial", device.serial],
        ["Vendor / model", [device.vendor, device.model].filter(Boolean).join(" ")],
        ["Firmware", device.firmware_version],
        ["Location", location],
        ["Site", device.site_id],
        ["Area", area],
        ["Team", device.team_id],
        ["Owner", device.owner_kind],
        ["Gateway", device.gateway_id],
        ["Parent", device.parent_id],
        ["Protocol address", device.protocol_address],
        ["Installed", device.install_date],
        ["MQTT user", device.mqtt_username],
      ])),
    h("section", { class: "card", id: "device-history" },
      h("h2", { text: "History" }),
      replacements.length ? h("ul", { class: "history replacements" }, replacements) : null,
      h("ul", { class: "history audit" }, audit)));
  applyPermissions($("#device-body"));
}

function replaceForm(device) {
  const row = (label, name, extra) => [
    h("label", { for: "replace-" + name, text: label }),
    extra || h("input", { id: "replace-" + name, name, spellcheck: "false" }),
    h("p", { class: "field-error", "data-error-for": name, hidden: true }),
  ];
  const form = h("form", { id: "replace-form", class: "subform", novalidate: true, hidden: true },
    h("h3", { text: "Replace the failed unit" }),
    h("p", { class: "note", text: "The device keeps its id, location, team and history; the new unit gets new MQTT credentials and the old unit is locked out." }),
    h("p", { class: "form-error", "data-error-for": "_form", hidden: true }),
    row("New unit's serial number", "serial", h("div", { class: "row" },
      h("input", { id: "replace-serial", name: "serial", autocapitalize: "characters", spellcheck: "false" }),
      h("button", { type: "button", class: "secondary", onclick: () => scanSerial((s) => { $("#replace-serial").value = s; }), text: "Scan" }))),
    row("Vendor (if different)", "vendor"),
    row("Model (if different)", "model"),
    row("Firmware version", "firmware_version"),
    row("Why (kept in the history)", "reason"),
    h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: () => { form.hidden = true; }, text: "Cancel" }),
      h("button", { type: "submit", class: "primary", id: "replace-submit", text: "Replace unit" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    // Only the serial is sent even when blank, so the API names it when it is missing.
    const body = { serial: form.elements.serial.value };
    for (const name of ["vendor", "model", "firmware_version", "reason"]) {
      const value = form.elements[name].value.trim();
      if (value) body[name] = value;
    }
    try {
      const written = await api("POST", "/devices/" + enc(device.id) + "/replace", body);
      toast("Unit replaced: " + device.id + " is now serial " + written.device.serial);
      if (written.credentials) showSecret(written.credentials, "replaced");
      await openDevice(device.id);
    } catch (err) {
      showProblem(form, err);
    }
  });
  return form;
}

async function setState(device, next) {
  const box = $("#device-actions");
  clearErrors(box);
  try {
    await api("PATCH", "/devices/" + enc(device.id), { state: next });
    toast(device.id + (next === "maintenance" ? " is now in maintenance" : " is active again"));
    await openDevice(device.id);
  } catch (err) {
    showProblem(box, err);
  }
}

async function rotate(device) {
  const box = $("#device-actions");
  clearErrors(box);
  try {
    const written = await api("POST", "/devices/" + enc(device.id) + "/rotate-credentials");
    if (written.credentials) showSecret(written.credentials, "rotated");
    await openDevice(device.id);
  } catch (err) {
    showProblem(box, err);
  }
}

function retire(device) {
  const dialog = $("#confirm-dialog");
  const form = $("#confirm-form");
  clearErrors(form);
  $("#confirm-title").textContent = "Retire " + device.id + "?";
  $("#confirm-text").textContent = "Its MQTT identity is revoked at once and the device can no longer be changed. This cannot be undone.";
  $("#confirm-reason").value = "";
  $("#confirm-ok").textContent = "Retire " + device.id;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const reason = $("#confirm-reason").value.trim();
    try {
      await api("POST", "/devices/" + enc(device.id) + "/retire", { reason });
    } catch (err) {
      showProblem(form, err);
      return;
    }
    dialog.close();
    toast(device.id + " is retired");
    await openDevice(device.id);
  };
  dialog.showModal();
}

$("#confirm-cancel").addEventListener("click", () => $("#confirm-dialog").close());

export { openDevice };
