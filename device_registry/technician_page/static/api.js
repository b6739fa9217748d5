/* Kotahub technician page: the registry API client (bearer token, timeouts, problem details).
 */
import { API_BASE, REQUEST_TIMEOUT_MS, state } from "./state.js";

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
      tokenRefused("The registry refused your token (" + problem.detail + "). Sign in again.");
    }
    throw new ApiProblem(response.status, problem);
  }
  return data;
}

// The registry refused the signed-in token: session.js signs out (set there, so that this
// module needs nothing of the sign-in).
let tokenRefused = (_message) => {};

function onTokenRefused(handler) {
  tokenRefused = handler;
}

export { ApiProblem, api, onTokenRefused };
