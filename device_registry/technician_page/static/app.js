/* Kotahub technician page: find, register, replace, maintain and retire devices.
 *
 * Plain JavaScript, no build step and no network beyond the registry itself: the page is
 * used on phones in the field that may reach the registry but not the internet.
 * Every value from the API is put into the page with textContent, never as HTML.
 */
"use strict";

(function () {
  const TOKEN_KEY = "kotahub.registry.token";
  const REQUEST_TIMEOUT_MS = 15000;
  const SEARCH_LIMIT = 20;
  const SCAN_INTERVAL_MS = 250;
  const SEMARANG = [-6.9667, 110.4167];
  // Resolved against the page's own URL, so the app also works behind a path prefix.
  const API_BASE = new URL("../api/v1", document.baseURI).pathname;
  const SETTINGS_URL = new URL("settings.json", document.baseURI).pathname;

  const state = {
    token: null,
    me: null,
    permissions: new Set(),
    settings: { tile_url: "", tile_attribution: "", max_zoom: 19 },
    catalogue: null,
    map: null,
    grid: null,
    mapFeatures: null,
    marker: null,
    searched: false,
    device: null,
  };

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

  // -- API ------------------------------------------------------------------------------
  class ApiProblem extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || "HTTP " + status);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Accept: "application/json, application/problem+json" };
    const sentToken = state.token;
    if (sentToken) headers.Authorization = "Bearer " + sentToken;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    let text = "";
    try {
      response = await fetch(API_BASE + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
      });
      text = await response.text();
    } catch (err) {
      const detail = controller.signal.aborted
        ? "The registry did not answer within " + REQUEST_TIMEOUT_MS / 1000 + " s."
        : "Cannot reach the registry (" + err.message + "). Check the phone's connection.";
      throw new ApiProblem(0, { title: "No connection", detail });
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_err) {
        data = null;
      }
    }
    if (!response.ok) {
      const problem = data && typeof data === "object" && !Array.isArray(data)
        ? data
        : { title: "HTTP " + response.status, detail: text.slice(0, 300) };
      if (response.status === 401 && state.me && state.token === sentToken) {
        signOut("The registry refused your token (" + problem.detail + "). Sign in again.");
      }
      throw new ApiProblem(response.status, problem);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // -- errors next to the field they name --------------------------------------------------
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

  let toastTimer = null;
  function toast(message, isError) {
    const el = $("#toast");
    el.textContent = message;
    el.classList.toggle("error", Boolean(isError));
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // -- sign-in and roles -----------------------------------------------------------------
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

  // -- routing ---------------------------------------------------------------------------
  function show(name) {
    for (const view of $$(".view")) view.hidden = view.id !== "view-" + name;
    $("#tab-find").classList.toggle("current", name === "find" || name === "device");
    $("#tab-register").classList.toggle("current", name === "register");
    $("#tab-alerts").classList.toggle("current", name === "alerts");
    window.scrollTo(0, 0);
  }

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
      // alerts.js
      await window.KotahubAlerts.open(state.token, state.me.role, state.settings, state.me.team);
    } else {
      show("find");
      if (!state.searched) await runSearch();
    }
  }

  window.addEventListener("hashchange", route);

  // -- find ------------------------------------------------------------------------------
  function stateBadge(value) {
    return h("span", { class: "badge state state-" + value, "data-state": value, text: value });
  }

  function onlineBadge(status) {
    const online = status ? status.online : undefined;
    const label = online === true ? "online" : online === false ? "offline" : status ? "no status" : "…";
    const kind = online === true ? "online" : online === false ? "offline" : "unknown";
    return h("span", { class: "badge online-" + kind, "data-online": kind, text: label });
  }

  async function runSearch() {
    const form = $("#search-form");
    clearErrors(form);
    const q = $("#search-input").value.trim();
    const params = new URLSearchParams({ limit: String(SEARCH_LIMIT) });
    if (q) params.set("q", q);
    const summary = $("#search-summary");
    summary.textContent = "Searching…";
    let page;
    try {
      page = await api("GET", "/devices?" + params.toString());
    } catch (err) {
      summary.textContent = "";
      showProblem(form, err);
      return;
    }
    state.searched = true;
    const shown = page.items.length;
    summary.textContent = page.total === 0
      ? (q ? "No device matches “" + q + "”." : "No devices registered yet.")
      : page.total + (page.total === 1 ? " device" : " devices")
        + (page.total > shown ? ", showing the first " + shown : "");
    const list = $("#results");
    list.replaceChildren(...page.items.map(resultItem));
    // Online state lives on the status endpoint; fill the badges in as the answers come.
    await Promise.all(page.items.map(async (device) => {
      const slot = $('[data-online-for="' + CSS.escape(device.id) + '"]', list);
      try {
        const status = await api("GET", "/devices/" + enc(device.id) + "/status");
        if (slot) slot.replaceChildren(onlineBadge(status));
      } catch (_err) {
        if (slot) slot.replaceChildren(onlineBadge(null));
      }
    }));
  }

  function resultItem(device) {
    const meta = [device.device_type, device.serial ? "SN " + device.serial : null,
      device.kecamatan || device.site_id].filter(Boolean).join(" · ");
    return h("li", {},
      h("a", { class: "result", href: "#/device/" + enc(device.id), "data-device-id": device.id },
        h("span", { class: "result-id", text: device.id }),
        h("span", { class: "result-meta", text: meta }),
        h("span", { class: "badges" },
          stateBadge(device.state),
          h("span", { "data-online-for": device.id }, onlineBadge(undefined)))));
  }

  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });

  $("#scan-search").addEventListener("click", () => {
    scanSerial((serial) => {
      $("#search-input").value = serial;
      runSearch();
    });
  });

  // -- scanning a serial -----------------------------------------------------------------
  const scan = { stream: null, timer: null, done: null };

  function stopCamera() {
    clearInterval(scan.timer);
    scan.timer = null;
    if (scan.stream) for (const track of scan.stream.getTracks()) track.stop();
    scan.stream = null;
    const video = $("#scan-video");
    video.srcObject = null;
    video.hidden = true;
  }

  function finishScan(value) {
    const done = scan.done;
    scan.done = null;
    stopCamera();
    const dialog = $("#scan-dialog");
    if (dialog.open) dialog.close();
    const serial = (value || "").trim();
    if (done && serial) done(serial);
  }

  /** Read a serial from the camera when the browser can, otherwise let it be typed. */
  async function scanSerial(onSerial) {
    scan.done = onSerial;
    const dialog = $("#scan-dialog");
    const status = $("#scan-status");
    $("#scan-typed").value = "";
    dialog.showModal();
    if (!("BarcodeDetector" in window) || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "This browser cannot read barcodes. Type the serial from the label.";
      $("#scan-typed").focus();
      return;
    }
    status.textContent = "Starting the camera…";
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      const detector = new window.BarcodeDetector(formats && formats.length ? { formats } : undefined);
      scan.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" } },
        audio: false,
      });
      if (!scan.done) { stopCamera(); return; } // closed while the camera started
      const video = $("#scan-video");
      video.srcObject = scan.stream;
      video.hidden = false;
      await video.play();
      status.textContent = "Point the camera at the serial's barcode or QR code, or type it below.";
      let busy = false;
      scan.timer = setInterval(async () => {
        if (busy || video.readyState < 2) return;
        busy = true;
        try {
          const codes = await detector.detect(video);
          const found = codes.find((code) => code.rawValue && code.rawValue.trim());
          if (found) finishScan(found.rawValue);
        } catch (_err) {
          // One unreadable frame is normal; the next tick tries again.
        } finally {
          busy = false;
        }
      }, SCAN_INTERVAL_MS);
    } catch (err) {
      stopCamera();
      status.textContent = "Camera not available (" + (err.message || err.name) + "). Type the serial below.";
      $("#scan-typed").focus();
    }
  }

  $("#scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    finishScan($("#scan-typed").value);
  });
  $("#scan-cancel").addEventListener("click", () => { scan.done = null; finishScan(""); });
  $("#scan-dialog").addEventListener("close", () => { scan.done = null; stopCamera(); });

  for (const button of $$(".scan-into")) {
    button.addEventListener("click", () => {
      scanSerial((serial) => { $("#" + button.dataset.target).value = serial; });
    });
  }

  // -- one device ------------------------------------------------------------------------
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

  // -- credentials, shown once -----------------------------------------------------------
  // The dialog says what happened: a brand-new device has no old password to warn about.
  const SECRET_CASES = {
    created: ["MQTT password for the new device",
      "The device needs this password to connect to the broker. It is its first one."],
    rotated: ["New MQTT password",
      "The old password no longer works: the device stays offline until it has this one."],
    replaced: ["MQTT password for the new unit",
      "The failed unit's password no longer works; put this one into the new unit."],
  };

  function showSecret(credentials, why) {
    const [title, context] = SECRET_CASES[why] || SECRET_CASES.rotated;
    $("#secret-title").textContent = title;
    $("#secret-context").textContent = context;
    $("#secret-dialog").dataset.case = why;
    $("#secret-username").textContent = credentials.username;
    $("#secret-client-id").textContent = credentials.client_id;
    $("#secret-prefix").textContent = credentials.publish_prefix;
    $("#secret-password").value = credentials.password;
    $("#secret-copied").textContent = "";
    const dialog = $("#secret-dialog");
    if (!dialog.open) dialog.showModal();
  }

  function forgetSecret() {
    // The page keeps no copy: once closed, the password is gone from this phone.
    $("#secret-password").value = "";
    for (const id of ["#secret-username", "#secret-client-id", "#secret-prefix", "#secret-copied"]) {
      $(id).textContent = "";
    }
  }

  $("#secret-copy").addEventListener("click", async () => {
    const field = $("#secret-password");
    const note = $("#secret-copied");
    try {
      await navigator.clipboard.writeText(field.value);
      note.textContent = "Copied.";
    } catch (_err) {
      // Plain http on a LAN address is not a secure context: fall back to a selection.
      field.select();
      const copied = document.execCommand && document.execCommand("copy");
      note.textContent = copied ? "Copied." : "Select the password and copy it by hand.";
    }
  });
  $("#secret-done").addEventListener("click", () => {
    // Forget first: the dialog's close event comes a task later, and until then the
    // password would still sit in the (hidden) field.
    forgetSecret();
    $("#secret-dialog").close();
  });
  $("#secret-dialog").addEventListener("close", forgetSecret); // Esc closes it too

  // -- register --------------------------------------------------------------------------
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

  // A plain coordinate grid: the map is usable with no tile server at all.
  const CoordinateGrid = L.GridLayer.extend({
    createTile(coords) {
      const size = this.getTileSize();
      const tile = document.createElement("canvas");
      tile.width = size.x;
      tile.height = size.y;
      const ctx = tile.getContext("2d");
      ctx.fillStyle = "#eef2f6";
      ctx.fillRect(0, 0, size.x, size.y);
      ctx.strokeStyle = "#7d93ab";
      ctx.lineWidth = 1;
      // Quarter lines help to place a pin; the tile's own edge is drawn darker.
      ctx.strokeStyle = "#c3cfdb";
      ctx.beginPath();
      for (let i = 1; i < 4; i += 1) {
        ctx.moveTo(0, (size.y * i) / 4 + 0.5);
        ctx.lineTo(size.x, (size.y * i) / 4 + 0.5);
        ctx.moveTo((size.x * i) / 4 + 0.5, 0);
        ctx.lineTo((size.x * i) / 4 + 0.5, size.y);
      }
      ctx.stroke();
      ctx.strokeStyle = "#5f7891";
      ctx.beginPath();
      ctx.moveTo(0.5, size.y);
      ctx.lineTo(0.5, 0.5);
      ctx.lineTo(size.x, 0.5);
      ctx.stroke();
      const corner = this._map.unproject([coords.x * size.x, coords.y * size.y], coords.z);
      ctx.fillStyle = "#203040";
      ctx.font = "12px sans-serif";
      ctx.fillText(corner.lat.toFixed(4) + ", " + corner.lng.toFixed(4), 4, 14);
      drawFeatures(this._map, ctx, coords, size, tile);
      return tile;
    },
  });

  // What the registry itself knows of the ground, drawn on the grid so a pin can be placed
  // relative to something: kecamatan names, sites and the devices already registered.
  const MAP_MARGIN = 160; // px: a label near a tile's edge is drawn on its neighbour too

  function haloText(ctx, text, x, y) {
    ctx.lineWidth = 4;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeText(text, x, y);
    ctx.fillText(text, x, y);
  }

  function drawFeatures(map, ctx, coords, size, tile) {
    const features = state.mapFeatures;
    if (!features) return;
    const originX = coords.x * size.x;
    const originY = coords.y * size.y;
    const drawn = [];
    const at = (lat, lon) => {
      const point = map.project([lat, lon], coords.z);
      return [point.x - originX, point.y - originY];
    };
    const near = ([x, y]) => x > -MAP_MARGIN && y > -MAP_MARGIN && x < size.x + MAP_MARGIN && y < size.y + MAP_MARGIN;
    const inside = ([x, y]) => x >= 0 && y >= 0 && x < size.x && y < size.y;
    ctx.textBaseline = "middle";
    ctx.lineJoin = "round";
    if (coords.z <= 17) {
      ctx.font = "bold 15px sans-serif";
      ctx.textAlign = "center";
      ctx.fillStyle = "#5a4a7a";
      for (const area of features.kecamatan) {
        const xy = at(area.lat, area.lon);
        if (!near(xy)) continue;
        haloText(ctx, area.name.toUpperCase(), xy[0], xy[1]);
        if (inside(xy)) drawn.push("kecamatan:" + area.name);
      }
    }
    ctx.textAlign = "left";
    for (const device of features.devices) {
      const xy = at(device.lat, device.lon);
      if (!near(xy)) continue;
      ctx.beginPath();
      ctx.arc(xy[0], xy[1], 5, 0, 2 * Math.PI);
      ctx.fillStyle = "#1f6f4a";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      if (coords.z >= 16) {
        ctx.font = "12px sans-serif";
        ctx.fillStyle = "#1d3b2c";
        haloText(ctx, device.id, xy[0] + 9, xy[1]);
      }
      if (inside(xy)) drawn.push("device:" + device.id);
    }
    for (const site of features.sites) {
      const xy = at(site.lat, site.lon);
      if (!near(xy)) continue;
      ctx.fillStyle = "#0a2f6b";
      ctx.fillRect(xy[0] - 7, xy[1] - 7, 14, 14);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(xy[0] - 7, xy[1] - 7, 14, 14);
      ctx.font = "bold 13px sans-serif";
      ctx.fillStyle = "#0a2f6b";
      haloText(ctx, site.name, xy[0] + 11, xy[1]);
      if (inside(xy)) drawn.push("site:" + site.id);
    }
    tile.dataset.features = drawn.join("|"); // names have spaces: "kecamatan:Semarang Utara"
  }

  /** Sites, devices with a position and the kecamatan they make up, from the API. */
  async function loadMapFeatures() {
    const placed = (item) => typeof item.latitude === "number" && typeof item.longitude === "number";
    let devices = [];
    try {
      devices = (await api("GET", "/devices?limit=1000")).items.filter(placed);
    } catch (_err) {
      devices = []; // the map still shows the sites; a search error is reported elsewhere
    }
    const sites = ((state.catalogue && state.catalogue.sites) || []).filter(placed);
    const areas = new Map();
    for (const item of [...sites, ...devices]) {
      if (!item.kecamatan) continue;
      const area = areas.get(item.kecamatan) || { name: item.kecamatan, lat: 0, lon: 0, n: 0 };
      area.lat += item.latitude;
      area.lon += item.longitude;
      area.n += 1;
      areas.set(item.kecamatan, area);
    }
    state.mapFeatures = {
      sites: sites.map((site) => ({ id: site.id, name: site.name, lat: site.latitude, lon: site.longitude })),
      devices: devices.map((device) => ({ id: device.id, lat: device.latitude, lon: device.longitude })),
      kecamatan: [...areas.values()].map((a) => ({ name: a.name, lat: a.lat / a.n, lon: a.lon / a.n })),
    };
    if (state.grid) state.grid.redraw();
  }

  function ensureMap() {
    if (state.map) {
      state.map.invalidateSize();
      return;
    }
    const map = L.map("register-map", { center: SEMARANG, zoom: 15, zoomControl: true });
    if (state.settings.tile_url) {
      L.tileLayer(state.settings.tile_url, {
        maxZoom: state.settings.max_zoom || 19,
        attribution: state.settings.tile_attribution || "",
      }).addTo(map);
    } else {
      state.grid = new CoordinateGrid({ maxZoom: 22 }).addTo(map);
      map.attributionControl.addAttribution("sites, kecamatan and devices from the registry (no map tiles configured)");
      loadMapFeatures();
    }
    map.on("click", (event) => setLocation(event.latlng.lat, event.latlng.lng, "pin"));
    state.map = map;
    window.kotahubMap = map; // for debugging on a phone and for the end-to-end tests
  }

  function setLocation(lat, lon, source, accuracy) {
    // A GPS fix can arrive before the register view has loaded its catalogue and map.
    ensureMap();
    $("#reg-lat").value = lat.toFixed(6);
    $("#reg-lon").value = lon.toFixed(6);
    // Set by the pin or the GPS, not typed: clear their old messages the same way.
    for (const input of [$("#reg-lat"), $("#reg-lon")]) clearFieldError({ target: input });
    placeMarker(lat, lon);
    const note = $("#location-note");
    note.textContent = source === "gps"
      ? "GPS fix, accuracy ±" + Math.round(accuracy) + " m"
      : "Pinned on the map";
    note.dataset.source = source;
    if (source === "gps") state.map.setView([lat, lon], Math.max(state.map.getZoom(), 17));
  }

  function placeMarker(lat, lon) {
    if (!state.map) return;
    if (state.marker) state.marker.setLatLng([lat, lon]);
    else state.marker = L.marker([lat, lon], { keyboard: false }).addTo(state.map);
  }

  function typedLocation() {
    const lat = Number($("#reg-lat").value);
    const lon = Number($("#reg-lon").value);
    if ($("#reg-lat").value.trim() && $("#reg-lon").value.trim() && Number.isFinite(lat) && Number.isFinite(lon)) {
      placeMarker(lat, lon);
      $("#location-note").textContent = "Typed coordinates";
    }
  }
  $("#reg-lat").addEventListener("change", typedLocation);
  $("#reg-lon").addEventListener("change", typedLocation);

  $("#use-gps").addEventListener("click", () => {
    const note = $("#location-note");
    if (!navigator.geolocation) {
      note.textContent = "This browser has no GPS access; tap the map instead.";
      return;
    }
    note.textContent = "Waiting for a GPS fix…";
    navigator.geolocation.getCurrentPosition(
      (position) => setLocation(position.coords.latitude, position.coords.longitude, "gps", position.coords.accuracy),
      (error) => {
        note.textContent = "No GPS fix (" + error.message + "). Tap the map instead; GPS needs https or localhost.";
      },
      { enableHighAccuracy: true, timeout: REQUEST_TIMEOUT_MS, maximumAge: 0 });
  });

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

  // -- start -----------------------------------------------------------------------------
  async function loadSettings() {
    try {
      const response = await fetch(SETTINGS_URL, { cache: "no-store" });
      if (response.ok) Object.assign(state.settings, await response.json());
    } catch (_err) {
      // No settings: the coordinate grid needs none.
    }
  }

  async function start() {
    // First of all, before any request: the link's token leaves the address bar at once.
    const linked = takeLinkToken();
    await loadSettings();
    state.token = localStorage.getItem(TOKEN_KEY);
    document.body.dataset.ready = "true";
    if (linked) await signInWith(linked, true);
    else await route();
  }

  start();
})();
