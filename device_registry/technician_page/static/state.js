/* Kotahub technician page: settings, constants and the page's state, shared by its modules.
 */

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

export { TOKEN_KEY, REQUEST_TIMEOUT_MS, SEARCH_LIMIT, SCAN_INTERVAL_MS, SEMARANG, API_BASE, SETTINGS_URL, state };
