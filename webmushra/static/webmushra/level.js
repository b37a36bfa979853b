/*
 * The level page: plays its calibration signal in a loop through a gain set by the page's
 * volume slider (the range comes from webmushra/rules.py LEVEL_GAIN_DB through the page).
 * The form posts the slider's value as gain_db; every later page plays through a master gain
 * of that value (headphone.js, trial.js).
 *
 * Reads <script id="level-data" type="application/json">: {"url", "min_db", "max_db", "gain_db"}.
 * The page's state is read from outside (by the browser tests) as the player's is: dispatch a
 * "mushra:inspect" CustomEvent on the form with an object as its detail; detail.state() gives
 * {ready, playing, gain_db} (gain_db: the gain applied now, or the slider's while silent).
 *
 * An ES module; imports the fetch helpers of loader.js and t() of i18n.js (the page's language).
 */
import { t } from "./i18n.js";
import { fetchBytes, makeContext } from "./loader.js";

function dbToGain(db) {
  return Math.pow(10, db / 20);
}

function boot() {
  var node = document.getElementById("level-data");
  var form = document.querySelector("form.level");
  if (!node || !form) return;
  var data = JSON.parse(node.textContent);
  var slider = form.querySelector("#gain-db");
  var output = form.querySelector("#gain-db-value");
  var button = form.querySelector(".level-play");
  var status = form.querySelector(".level-status");
  var ctx = null;
  var gain = null;
  var buffer = null;
  var source = null;
  var failed = null;
  var bytes = data.url
    ? fetchBytes(data.url, function () {}).catch(function (e) {
        failed = e;
        return null;
      })
    : null;

  function show() {
    var db = Number(slider.value);
    var text = (db > 0 ? "+" : db < 0 ? "\u2212" : "") + Math.abs(db) + " dB";
    output.textContent = text;
    slider.setAttribute("aria-valuetext", text);
    // Set at once (the value reads back as set; an automation event reads back only once the
    // audio thread has run it, which lags on a busy machine).
    if (gain) gain.gain.value = dbToGain(db);
  }

  function stop() {
    if (source) {
      source.stop();
      source.disconnect();
      source = null;
    }
    if (!button) return;
    button.textContent = t("Play the example");
    button.setAttribute("aria-pressed", "false");
  }

  async function start() {
    if (!ctx) {
      // Made in the click itself: browsers let a page start sound only from a user action.
      ctx = makeContext(null);
      gain = ctx.createGain();
      gain.gain.value = dbToGain(Number(slider.value));
      gain.connect(ctx.destination);
    }
    ctx.resume();
    if (!buffer) {
      status.textContent = t("Loading the example\u2026");
      var raw = await bytes;
      if (!raw) throw failed || new Error(t("no example to play"));
      buffer = await ctx.decodeAudioData(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      status.textContent = "";
    }
    if (source) return;
    source = ctx.createBufferSource();
    source.buffer = buffer;
    source.loop = true;
    source.connect(gain);
    source.start();
    button.textContent = t("Stop the example");
    button.setAttribute("aria-pressed", "true");
  }

  slider.min = data.min_db;
  slider.max = data.max_db;
  slider.addEventListener("input", show);
  show();
  if (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      if (source) stop();
      else
        start().catch(function (e) {
          status.textContent = t("The example could not be played: %(reason)s", { reason: e.message });
          status.classList.add("error");
        });
    });
  }
  form.addEventListener("submit", stop);
  form.addEventListener("mushra:inspect", function (ev) {
    if (!ev.detail || typeof ev.detail !== "object") return;
    ev.detail.state = function () {
      return {
        ready: buffer !== null,
        playing: source !== null,
        gain_db: gain ? 20 * Math.log10(gain.gain.value) : Number(slider.value),
      };
    };
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
