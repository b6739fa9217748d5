/* Kotahub technician page: reading a serial with the camera (BarcodeDetector), or typed.
 */
import { $, $$ } from "./dom.js";
import { SCAN_INTERVAL_MS } from "./state.js";

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

export { scanSerial };
