/* Kotahub technician page: an API problem's errors shown at the field they name, in plain
 * words, and cleared as the field is edited.
 */
import { ApiProblem } from "./api.js";
import { $, $$, toast } from "./dom.js";

/** The form field a problem's `field` names: "body.serial" -> "serial", "body" -> form. */
function fieldKey(field) {
  if (!field) return "_form";
  const key = String(field).replace(/^(body|query|path)(\.|$)/, "");
  return key ? key.split(".")[0] : "_form";
}

function clearErrors(root) {
  for (const el of $$("[data-error-for]", root)) {
    el.textContent = "";
    el.hidden = true;
  }
  for (const el of $$("[aria-invalid]", root)) el.removeAttribute("aria-invalid");
}

// How each field is named in a message, and what its rules mean in plain words. The API
// stays the one source of the rules; this only says them the way a technician reads.
const FIELD_WORDS = {
  id: { name: "a device id", rule: "Use letters, digits, dots, dashes or underscores, starting with a letter or digit (no spaces)." },
  device_type: { name: "a device type", choose: true },
  serial: { name: "the serial number from the label" },
  latitude: { name: "the latitude", example: "-6.990400", range: [-90, 90] },
  longitude: { name: "the longitude", example: "110.422900", range: [-180, 180] },
  kota: { name: "the kota" },
  kecamatan: { name: "the kecamatan" },
  kelurahan: { name: "the kelurahan" },
  rw: { name: "the RW", rule: "Enter the RW as a number of 1 to 3 digits, e.g. 3." },
  rt: { name: "the RT", rule: "Enter the RT as a number of 1 to 3 digits, e.g. 7." },
  site_id: { name: "a site", choose: true },
  team_id: { name: "a team", choose: true },
  vendor: { name: "the vendor" },
  model: { name: "the model" },
  firmware_version: { name: "the firmware version" },
  gateway_id: { name: "the gateway id" },
  parent_id: { name: "the parent device id" },
  protocol_address: { name: "the protocol address" },
  reason: { name: "a reason" },
  token: { name: "your API token" },
};

function capital(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
}

/** A message in plain words for one field (pydantic's and the service's wording in). */
function plainWords(key, detail, input) {
  const words = FIELD_WORDS[key] || { name: "this value" };
  const text = String(detail).replace(/^Value error, /, "");
  let m;
  if (/^Field required$/.test(text) || /should have at least 1 character/.test(text)) {
    return (words.choose ? "Choose " : "Enter ") + words.name + ".";
  }
  if ((m = text.match(/should have at most (\d+) characters?/))) {
    const length = input && typeof input.value === "string" ? input.value.trim().length : 0;
    return "Too long: at most " + m[1] + " characters" + (length ? " (this has " + length + ")" : "") + ".";
  }
  if (/should match pattern/.test(text)) {
    return words.rule || capital(words.name) + " has characters that are not allowed.";
  }
  if (/valid number/.test(text)) {
    return "Enter " + words.name + " as a number" + (words.example ? ", e.g. " + words.example : "") + ".";
  }
  if (/(less|greater) than( or equal to)? -?[\d.]+/.test(text) && words.range) {
    return capital(words.name) + " must be between " + words.range[0] + " and " + words.range[1] + ".";
  }
  if ((m = text.match(/^unknown device '(.*)'$/))) return "No device “" + m[1] + "” is registered: check the id.";
  if ((m = text.match(/^unknown (site|team|device type) '(.*)'$/))) return "No " + m[1] + " “" + m[2] + "” is registered: choose one from the list.";
  if ((m = text.match(/^device '(.*)' is not a gateway$/))) return "“" + m[1] + "” is not a gateway: give the gateway or agent it reports through.";
  if ((m = text.match(/^device '(.*)' is retired$/))) return "“" + m[1] + "” is retired: give a device in service.";
  if (/ids starting with 'kotahub' are reserved/.test(text)) return "Ids starting with “kotahub” are kept for the hub itself: choose another id.";
  if (/already exists/.test(text) && key === "id") return "A device with this id is already registered: choose another id.";
  if (/unknown or revoked token/.test(text)) return "This token is unknown or was revoked: ask your admin for a new one.";
  return capital(text);
}

/** Cross-field rules name "body"; say them at the field that is missing. */
function relocate(key, detail) {
  const text = String(detail).replace(/^Value error, /, "");
  let m = text.match(/^(\w+) is set but (\w+) is not/);
  if (m) return { key: m[2], message: "Enter " + (FIELD_WORDS[m[2]] || { name: m[2] }).name + ": a " + m[1] + " needs it." };
  m = text.match(/^(\w+) is given but (\w+) is not/);
  if (m) return { key: m[2], message: "Enter " + (FIELD_WORDS[m[2]] || { name: m[2] }).name + " too: latitude and longitude come together." };
  return { key, message: null };
}

function showProblem(root, err) {
  clearErrors(root);
  const problem = err instanceof ApiProblem ? err.problem : { detail: String(err && err.message || err) };
  const items = Array.isArray(problem.errors) && problem.errors.length
    ? problem.errors
    : [{ field: problem.field, detail: problem.detail || problem.title }];
  let firstInput = null;
  for (const item of items) {
    let message = String(item.detail || problem.title || "Refused");
    const prefix = String(item.field || "") + ": ";
    if (item.field && message.startsWith(prefix)) message = message.slice(prefix.length);
    const moved = relocate(fieldKey(item.field).split(",")[0], message);
    const key = $('[data-error-for="' + CSS.escape(moved.key) + '"]', root) ? moved.key : fieldKey(item.field).split(",")[0];
    const named = key === "_form" ? null : $('[name="' + CSS.escape(key) + '"]', root);
    if (key !== "_form") message = moved.message || plainWords(key, message, named);
    let target = $('[data-error-for="' + CSS.escape(key) + '"]', root);
    if (!target) {
      target = $('[data-error-for="_form"]', root);
      if (key !== "_form") message = key + ": " + message;
    }
    const input = named;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      firstInput = firstInput || input;
    }
    if (target) {
      target.textContent = target.textContent ? target.textContent + " " + message : message;
      target.hidden = false;
    } else {
      toast(message, true);
    }
  }
  if (firstInput) firstInput.focus({ preventScroll: false });
}

// A message goes as soon as its field is edited: it described the old value, and a
// technician fixing one field should not keep reading an error about it.
function clearFieldError(event) {
  const input = event.target;
  if (!input || !input.name || !input.form) return;
  const box = $('[data-error-for="' + CSS.escape(input.name) + '"]', input.form);
  if (box && !box.hidden) {
    box.textContent = "";
    box.hidden = true;
  }
  input.removeAttribute("aria-invalid");
}
document.addEventListener("input", clearFieldError);
document.addEventListener("change", clearFieldError);

export { clearErrors, clearFieldError, showProblem };
