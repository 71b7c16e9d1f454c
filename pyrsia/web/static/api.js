// Reads the node's open API from the origin that served the page.
//
// Only read-only endpoints are used, without credentials: the dashboard can show what
// any client of the API can see, and nothing more.

const TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function request(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      signal: controller.signal,
      credentials: "omit",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const doc = await response.json();
        message = doc.errors?.[0]?.message ?? message;
      } catch {
        // the body was not the node's error JSON; keep the status line
      }
      throw new ApiError(message, response.status);
    }
    return response;
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError(error.name === "AbortError" ? "the node did not answer in time" : "the node cannot be reached", 0);
  } finally {
    clearTimeout(timer);
  }
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export async function getText(path) {
  return (await request(path)).text();
}
