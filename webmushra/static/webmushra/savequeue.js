/*
 * Saving an answer: POST JSON and retry until the server confirms, so that a participant's
 * answer survives a server restart or a database outage (the endpoints are idempotent on
 * the body's idempotency_key, so a retried save is stored once).
 *
 * An ES module (it imports t() of i18n.js, the page's language); the trial player (trial.js)
 * and the headphone check (headphone.js) import postWithRetry.
 */
import { t } from "./i18n.js";

function sleep(ms) {
  return new Promise(function (resolve) {
    setTimeout(resolve, ms);
  });
}

/**
 * POST JSON until the server confirms. 5xx and network errors retry for ever with
 * exponential backoff (0.5 s doubling, 8 s cap); 409 and 429 retry a few times;
 * other 4xx reject with the server's reason. onStatus(text) reports progress.
 */
export async function postWithRetry(url, body, csrfToken, onStatus) {
  var delay = 0.5;
  var limitedRetries = 0;
  for (var attempt = 1; ; attempt++) {
    var response = null;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken || "" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      response = null;
    }
    var data = null;
    if (response) {
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
      if (response.ok && data) return data;
      if (response.ok) {
        throw new Error(t("the server's answer was not understood (HTTP %(status)s)", { status: response.status }));
      }
      var busy = response.status === 409 || response.status === 429;
      if (response.status >= 400 && response.status < 500 && !(busy && limitedRetries < 5)) {
        var refused = t("the server refused the answer (HTTP %(status)s)", { status: response.status });
        var reason = data && data.error ? data.error : refused;
        var err = new Error(reason);
        err.status = response.status;
        throw err;
      }
      if (busy) limitedRetries += 1;
    }
    var wait = delay;
    var retryAfter = response && Number(response.headers.get("Retry-After"));
    if (retryAfter > 0) wait = Math.min(retryAfter, 30);
    var retrying = { seconds: wait.toFixed(1), attempt: attempt + 1 };
    onStatus(t("Saving\u2026 retrying in %(seconds)s s (attempt %(attempt)s)", retrying));
    await sleep(wait * 1000);
    delay = Math.min(delay * 2, 8);
    onStatus(t("Saving\u2026"));
  }
}
