/* Kotahub technician page: the register view's map (tiles or a coordinate grid with what the
 * registry knows), the pin, GPS and typed coordinates.
 */
import { api } from "./api.js";
import { $ } from "./dom.js";
import { clearFieldError } from "./forms.js";
import { REQUEST_TIMEOUT_MS, SEMARANG, state } from "./state.js";

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

export { ensureMap, loadMapFeatures };
