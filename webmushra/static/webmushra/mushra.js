/*
 * The MUSHRA trial page's entry module (<script type="module">, no build step): reads
 * <script id="trial-data" type="application/json"> (see _mushra_player.html) and starts
 * a Player (trial.js) on the page's .wm element.
 *
 * The modules: engine.js (playback, fades), loader.js (fetch and decode, the WAV rate,
 * the AudioContext), savequeue.js (the retrying save), keyboard.js (the keys), trial.js
 * (the page). None sets a global. The page's player is read from outside (by the browser
 * tests) by dispatching a "mushra:inspect" CustomEvent on the .wm element with an object
 * as its detail: the player adds detail.state() (Player.state), detail.telemetry() (what a
 * save would send; null while loading) and detail.context (its AudioContext). They are
 * functions so that a look at the state does not also build the telemetry. The context's
 * outputLatency is read once, when the context is made (loader.js): read again and again,
 * it has locked up Firefox ESR on a PulseAudio null sink.
 */
import { Player } from "./trial.js";

function boot() {
  var dataNode = document.getElementById("trial-data");
  var root = document.querySelector(".wm");
  if (!dataNode || !root) return;
  var player = new Player(root, JSON.parse(dataNode.textContent));
  root.addEventListener("mushra:inspect", function (ev) {
    if (!ev.detail || typeof ev.detail !== "object") return;
    ev.detail.state = function () {
      return player.state();
    };
    ev.detail.telemetry = function () {
      return player.engine ? player.telemetry() : null;
    };
    ev.detail.context = player.ctx || null;
  });
  player.start();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
