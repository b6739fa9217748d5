/* Kotahub technician page: a device's new MQTT credentials, shown once and then forgotten.
 */
import { $ } from "./dom.js";

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

export { showSecret };
