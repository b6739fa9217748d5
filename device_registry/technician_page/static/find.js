/* Kotahub technician page: finding devices (search, scanned serial) and their badges.
 */
import { api } from "./api.js";
import { $, enc, h } from "./dom.js";
import { clearErrors, showProblem } from "./forms.js";
import { scanSerial } from "./scan.js";
import { SEARCH_LIMIT, state } from "./state.js";

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

export { onlineBadge, runSearch, stateBadge };
