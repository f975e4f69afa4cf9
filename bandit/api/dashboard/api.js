// The service's JSON API, as the dashboard uses it: same origin, the operator's API key as a
// bearer token on every request, errors as ApiError. The key is kept in sessionStorage: it
// lasts while the tab is open and is gone when it closes, so a key typed on a shared machine
// does not stay on its disk as it would in localStorage.

const KEY_STORAGE = "bandit.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** Refused for lack of a key (401) or of a scope (403). */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled (private mode): the key then lasts for this page only.
  }
  sessionKey = key;
}

let sessionKey = null;

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionKey ?? apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the service did not answer (${error.message})`);
  }
  let document = null;
  try {
    document = await response.json();
  } catch {
    // Not JSON (a proxy's error page, say): reported with the status below.
  }
  if (!response.ok) {
    const error = document && document.error;
    throw new ApiError(response.status, error?.code || `http_${response.status}`,
      error?.message || `${response.status} ${response.statusText}`);
  }
  return document;
}

const experimentPath = (id) => `/v1/experiments/${encodeURIComponent(id)}`;

export const api = {
  whoami: () => request("GET", "/v1/whoami"),
  openapi: () => request("GET", "/openapi.json"),
  // The first page of experiments in id order (the list answers a page at a time), each with
  // its summary: leader, winner, lift, health flags, traffic.
  list: () => request("GET", "/v1/experiments?limit=1000&summary=true"),
  show: (id) => request("GET", experimentPath(id)),
  stats: (id) => request("GET", `${experimentPath(id)}/stats`),
  history: (id, since) => request("GET",
    `${experimentPath(id)}/history${since ? `?since=${since}` : ""}`),
  audit: (id) => request("GET", `${experimentPath(id)}/audit`),
  advise: (id, body) => request("POST", `${experimentPath(id)}/advise`, body),
  patch: (id, body) => request("PATCH", experimentPath(id), body),
  layers: () => request("GET", "/v1/layers"),
  layerAudit: (id) => request("GET", `/v1/layers/${encodeURIComponent(id)}/audit`),
};
