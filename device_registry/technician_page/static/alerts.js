/* Kotahub technician page: the "Open alerts" view (#/alerts).
 *
 * It calls the hub's alert API (settings.json `alerts_url`, another origin: the hub answers
 * CORS for this page) with the same registry token the page signed in with. Viewers read;
 * technicians, provisioners and admins may also acknowledge and resolve. The team filter
 * starts at the signed-in token's team (/me), if it has one. Every value is put into the
 * page with textContent, never as HTML.
 */
import { $, h } from "./dom.js";

const TIMEOUT_MS = 15000;
const ACT_ROLES = new Set(["technician", "provisioner", "admin"]);
// team: the filter chosen; ownTeam: the token's team, always offered even with no alerts.
const view = { base: "", token: null, role: "", alerts: [], team: "", ownTeam: "" };

/** One call to the alert API; throws an Error whose message a technician can act on. */
async function call(method, path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(view.base + "/alerts/api/v1/alerts" + path, {
      method,
      headers: { Authorization: "Bearer " + view.token },
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (err) {
    throw new Error("The hub's alert server did not answer (" + err.message + ").");
  } finally {
    clearTimeout(timer);
  }
  let body = {};
  try {
    body = await response.json();
  } catch (err) {
    body = { error: "HTTP " + response.status };
  }
  if (response.status === 403) {
    throw new Error("Not allowed: your token may not do this (" + body.error + ").");
  }
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

function message(text, isError) {
  const box = $("#alerts-message");
  box.textContent = text;
  box.className = isError ? "form-error" : "summary";
  box.hidden = !text;
}

function since(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

async function act(alert, action) {
  try {
    await call("POST", "/" + encodeURIComponent(alert.key) + "/" + action);
    message((action === "ack" ? "Acknowledged " : "Resolved ") + alert.key + ".", false);
  } catch (err) {
    message(err.message, true);
    return;
  }
  await load(false);
}

function row(alert) {
  const canAct = ACT_ROLES.has(view.role);
  const buttons = [];
  if (canAct && alert.acked_ms === null) {
    buttons.push(h("button", { type: "button", class: "primary", "data-action": "ack",
      text: "Ack", onclick: () => act(alert, "ack") }));
  }
  if (canAct) {
    buttons.push(h("button", { type: "button", class: "secondary", "data-action": "resolve",
      text: "Resolve", onclick: () => act(alert, "resolve") }));
  }
  return h("li", { class: "alert-item", "data-key": alert.key },
    h("p", {},
      h("span", { class: "badge severity severity-" + alert.severity, text: alert.severity }),
      " ", h("b", { class: "alert-device", text: alert.device_id }),
      " ", h("span", { class: "note", text: alert.kecamatan || "–" }),
      " · ", h("span", { class: "alert-team", text: alert.team || "no team" })),
    h("p", { class: "alert-message", text: alert.message }),
    h("p", { class: "note alert-since" }, "since " + since(alert.raised_ms),
      alert.acked_ms !== null ? " · acknowledged by " + (alert.acked_by || "?") : ""),
    h("div", { class: "row" }, buttons));
}

function render() {
  const teams = Array.from(new Set([...view.alerts.map((a) => a.team || ""), view.ownTeam])).sort();
  const select = $("#alerts-team");
  const chosen = teams.includes(view.team) ? view.team : "";
  select.replaceChildren(h("option", { value: "", text: "All teams" }),
    ...teams.filter((t) => t).map((t) => h("option", { value: t, text: t })));
  select.value = chosen;
  view.team = chosen;
  const shown = view.alerts.filter((a) => !chosen || a.team === chosen);
  $("#alerts-summary").textContent = shown.length + " open alert" + (shown.length === 1 ? "" : "s");
  $("#alerts-list").replaceChildren(...shown.map(row));
}

async function load(clearMessage) {
  if (clearMessage) message("", false);
  try {
    view.alerts = (await call("GET", "")).alerts;
  } catch (err) {
    view.alerts = [];
    message(err.message, true);
  }
  render();
}

$("#alerts-team").addEventListener("change", (event) => {
  view.team = event.target.value;
  render();
});
$("#alerts-refresh").addEventListener("click", () => load(true));

/** Show the view; the router calls this with the signed-in token, its role, settings, team. */
async function openAlerts(token, role, settings, team) {
  if (token !== view.token) {
    // A new sign-in: start at that person's team; within one, keep what they chose.
    view.ownTeam = team || "";
    view.team = view.ownTeam;
  }
  view.token = token;
  view.role = role;
  view.base = (settings.alerts_url || "").replace(/\/+$/, "");
  const configured = Boolean(view.base);
  $("#alerts-body").hidden = !configured;
  $("#alerts-off").hidden = configured;
  $("#alerts-readonly").hidden = !configured || ACT_ROLES.has(role);
  if (configured) await load(true);
}

export { openAlerts };
