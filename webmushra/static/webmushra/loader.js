/*
 * Loading a trial's stimuli: every one is fetched and decoded before the trial starts
 * (BS.1534-3 sec. 5.3: switching must be near-instantaneous), into one AudioContext opened at
 * the stimuli's sample rate (read from the first WAV header) where the browser allows it.
 *
 * An ES module (it imports t() of i18n.js, the page's language); trial.js calls loadStimuli.
 */
import { t } from "./i18n.js";

/** Sample rate from a RIFF/WAVE header ('fmt ' chunk), or null when not a WAV file. */
export function wavSampleRate(bytes) {
  var view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  function tag(at) {
    return String.fromCharCode(view.getUint8(at), view.getUint8(at + 1), view.getUint8(at + 2), view.getUint8(at + 3));
  }
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return null;
  var at = 12;
  while (at + 8 <= bytes.byteLength) {
    var size = view.getUint32(at + 4, true);
    if (tag(at) === "fmt " && at + 16 <= bytes.byteLength) return view.getUint32(at + 12, true);
    at += 8 + size + (size % 2);
  }
  return null;
}

/** Fetch with byte progress: onBytes(loaded, total|null). Resolves to a Uint8Array. */
export async function fetchBytes(url, onBytes) {
  var response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(t("could not load a sound (HTTP %(status)s)", { status: response.status }));
  var total = Number(response.headers.get("Content-Length")) || null;
  if (!response.body || !response.body.getReader) {
    var whole = new Uint8Array(await response.arrayBuffer());
    onBytes(whole.byteLength, whole.byteLength);
    return whole;
  }
  var reader = response.body.getReader();
  var chunks = [];
  var loaded = 0;
  onBytes(0, total);
  for (;;) {
    var part = await reader.read();
    if (part.done) break;
    chunks.push(part.value);
    loaded += part.value.byteLength;
    onBytes(loaded, total);
  }
  var out = new Uint8Array(loaded);
  var at = 0;
  chunks.forEach(function (c) {
    out.set(c, at);
    at += c.byteLength;
  });
  onBytes(loaded, loaded);
  return out;
}

/** An AudioContext at the stimuli's rate where the browser allows it. */
export function makeContext(rate) {
  var Ctor = window.AudioContext || window.webkitAudioContext;
  if (!Ctor) throw new Error(t("this browser has no Web Audio support"));
  if (rate) {
    try {
      return new Ctor({ sampleRate: rate, latencyHint: "interactive" });
    } catch (e) {
      /* rate refused: fall through to the device rate, and record the resampling */
    }
  }
  return new Ctor({ latencyHint: "interactive" });
}

/**
 * Fetch and decode every stimulus: items [{key, url}] -> {ctx, buffers, audio, decodeMs}.
 * onProgress(fraction 0..1): bytes count for 80 %, decoding for the rest.
 */
export async function loadStimuli(items, onProgress) {
  var loaded = items.map(function () {
    return 0;
  });
  var totals = items.map(function () {
    return null;
  });
  function report(decoded) {
    var known = totals.every(function (t) {
      return t !== null;
    });
    var bytes = 0;
    var sum = 0;
    loaded.forEach(function (b, i) {
      bytes += b;
      sum += totals[i] || 0;
    });
    var fetched = known && sum > 0 ? bytes / sum : 0;
    onProgress(0.8 * fetched + (0.2 * decoded) / items.length);
  }
  // Each file is decoded as soon as it has arrived (decodes run in parallel off the main
  // thread); the context is made once the first file's header gives the stimulus rate.
  var resolveCtx;
  var ctxPromise = new Promise(function (resolve) {
    resolveCtx = resolve;
  });
  var stimulusRate = null;
  var buffers = {};
  var decoded = 0;
  var rates = {};
  var t0 = null;
  await Promise.all(
    items.map(function (item, i) {
      return fetchBytes(item.url, function (b, t) {
        loaded[i] = b;
        totals[i] = t;
        report(decoded);
      }).then(function (bytes) {
        var r = wavSampleRate(bytes);
        if (r) rates[r] = true;
        if (i === 0) {
          stimulusRate = r;
          resolveCtx(makeContext(r));
        }
        return ctxPromise.then(function (ctx) {
          if (t0 === null) t0 = performance.now();
          // decodeAudioData detaches its argument: hand it a private copy of the bytes.
          var copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
          return ctx.decodeAudioData(copy).then(function (buffer) {
            buffers[item.key] = buffer;
            decoded += 1;
            report(decoded);
          });
        });
      });
    })
  );
  var ctx = await ctxPromise;
  var decodeMs = performance.now() - t0;
  onProgress(1);
  return {
    ctx: ctx,
    buffers: buffers,
    decodeMs: decodeMs,
    audio: {
      context_sample_rate: ctx.sampleRate,
      stimulus_sample_rate: stimulusRate,
      stimulus_rates_differ: Object.keys(rates).length > 1,
      resampled: !stimulusRate || ctx.sampleRate !== stimulusRate || Object.keys(rates).length > 1,
      base_latency: ctx.baseLatency === undefined ? null : ctx.baseLatency,
      output_latency: ctx.outputLatency === undefined ? null : ctx.outputLatency,
    },
  };
}
