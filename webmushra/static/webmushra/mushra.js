/*
 * MUSHRA trial player (ITU-R BS.1534-3): open reference, blinded signals, 0-100 sliders.
 *
 * Audio: every stimulus of the trial is fetched and decoded before the trial starts
 * (BS.1534-3 sec. 5: switching must be instantaneous). One shared playhead for all
 * stimuli; every switch, seek, pause and loop wrap is a 5 ms raised-cosine fade-out of
 * the old source followed by a 5 ms raised-cosine fade-in of the new one at the same
 * playhead -- never a cross-fade, which would mix two conditions.
 *
 * Reads <script id="trial-data" type="application/json"> (see _mushra_player.html).
 * No dependencies, no build step: one IIFE. window.WebMushra exposes the engine for
 * tests; window.mushra exposes the state of the page's player.
 */
(function () {
  "use strict";
  if (window.WebMushra) return;

  var FADE_S = 0.005;
  var CURVE_POINTS = 256;
  var BANDS = [
    { min: 80, name: "Excellent" },
    { min: 60, name: "Good" },
    { min: 40, name: "Fair" },
    { min: 20, name: "Poor" },
    { min: 0, name: "Bad" },
  ];

  /** Raised-cosine gain curve from 0 to 1 (rising) or 1 to 0 (falling). */
  function raisedCosine(points, rising) {
    var curve = new Float32Array(points);
    for (var i = 0; i < points; i++) {
      var g = 0.5 - 0.5 * Math.cos((Math.PI * i) / (points - 1));
      curve[i] = rising ? g : 1 - g;
    }
    return curve;
  }
  var FADE_IN = raisedCosine(CURVE_POINTS, true);
  var FADE_OUT = raisedCosine(CURVE_POINTS, false);

  /** Sample rate from a RIFF/WAVE header ('fmt ' chunk), or null when not a WAV file. */
  function wavSampleRate(bytes) {
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

  function bandName(value) {
    for (var i = 0; i < BANDS.length; i++) if (value >= BANDS[i].min) return BANDS[i].name;
    return "Bad";
  }

  /* ------------------------------------------------------------------ engine */

  /**
   * Playback engine over decoded AudioBuffers sharing one timeline.
   *
   * The schedule is a list of runs {key, t0, t1, pos0, pos1}: a source node playing
   * buffer[key] from pos0 (s) starting at context time t0 until t1, with a fade-in at
   * t0 and a fade-out ending at t1. Loops are further runs scheduled ahead (not
   * AudioBufferSourceNode.loop) so that each wrap gets its fades.
   * options: duration (s, the timeline), destination, fade (s), lead (s scheduling
   * margin), horizon (s scheduled ahead), minLoop (s).
   */
  function Engine(ctx, buffers, options) {
    options = options || {};
    this.ctx = ctx;
    this.buffers = buffers;
    this.destination = options.destination || ctx.destination;
    var dur = options.duration;
    if (!dur) {
      dur = Infinity;
      for (var k in buffers) dur = Math.min(dur, buffers[k].duration);
    }
    this.duration = dur;
    this.fade = options.fade || FADE_S;
    this.lead = options.lead === undefined ? 0.01 : options.lead;
    this.horizon = options.horizon || 2.0;
    this.minLoop = options.minLoop || 0.5;
    this.loop = { start: 0, end: dur, enabled: true };
    this.runs = [];
    this.current = null;
    this.playing = false;
    this.pausedAt = 0;
    this.listened = {};
    this.plays = {};
    this.onended = null;
  }

  Engine.prototype._fadeLen = function (t0, t1) {
    return Math.min(this.fade, (t1 - t0) / 2);
  };

  Engine.prototype._startRun = function (key, t0, pos0, pos1) {
    var buffer = this.buffers[key];
    if (!buffer) throw new Error("no decoded audio for stimulus '" + key + "'");
    var t1 = t0 + (pos1 - pos0);
    var src = this.ctx.createBufferSource();
    src.buffer = buffer;
    var gain = this.ctx.createGain();
    gain.gain.value = 0;
    var f = this._fadeLen(t0, t1);
    gain.gain.setValueCurveAtTime(FADE_IN, t0, f);
    gain.gain.setValueCurveAtTime(FADE_OUT, t1 - f, f);
    src.connect(gain);
    gain.connect(this.destination);
    src.start(t0, pos0);
    src.stop(t1);
    src.onended = function () {
      gain.disconnect();
    };
    var run = { key: key, t0: t0, t1: t1, pos0: pos0, pos1: pos1, fadeIn: f, fadeOut: f, src: src, gain: gain };
    this.runs.push(run);
    return run;
  };

  Engine.prototype._dropRun = function (run) {
    try {
      run.src.stop();
    } catch (e) {
      /* never started: nothing to stop */
    }
    run.gain.disconnect();
  };

  /** Where a run starting at pos must end: the loop end, or the end of the timeline. */
  Engine.prototype._segmentEnd = function (pos) {
    return this.loop.enabled && pos < this.loop.end ? this.loop.end : this.duration;
  };

  /** A playable start position: inside the loop region and not in its last two fades. */
  Engine.prototype._normalise = function (pos) {
    var f2 = 2 * this.fade;
    if (this.loop.enabled) {
      if (pos < this.loop.start || pos > this.loop.end - f2) return this.loop.start;
    } else if (pos < 0 || pos > this.duration - f2) {
      return 0;
    }
    return pos;
  };

  Engine.prototype._activeRun = function (t) {
    for (var i = 0; i < this.runs.length; i++) {
      var r = this.runs[i];
      if (t < r.t1) return r;
    }
    return null;
  };

  Engine.prototype._credit = function (run, until) {
    var s = Math.max(0, Math.min(until, run.t1) - run.t0);
    this.listened[run.key] = (this.listened[run.key] || 0) + s;
  };

  /** Seconds of audible playback per key so far. */
  Engine.prototype.listenSeconds = function () {
    var now = this.ctx.currentTime;
    var out = {};
    for (var k in this.listened) out[k] = this.listened[k];
    this.runs.forEach(function (r) {
      out[r.key] = (out[r.key] || 0) + Math.max(0, Math.min(now, r.t1) - r.t0);
    });
    return out;
  };

  /** Position on the shared timeline (s). */
  Engine.prototype.position = function () {
    if (!this.playing) return this.pausedAt;
    var now = this.ctx.currentTime;
    var r = this._activeRun(now);
    if (!r) return this.runs.length ? this.runs[this.runs.length - 1].pos1 : this.pausedAt;
    return r.pos0 + Math.max(0, now - r.t0);
  };

  /**
   * End the schedule at the earliest point after `now` where the active run can fade
   * out; drop every later run. Returns {time, pos}: when silence is reached and the
   * playhead position there (null when the timeline ran out).
   */
  Engine.prototype._cut = function () {
    var now = this.ctx.currentTime;
    var T = now + this.lead;
    var last = this.runs.length ? this.runs[this.runs.length - 1] : null;
    var R = this._activeRun(T);
    if (!R) {
      return { time: Math.max(T, last ? last.t1 : T), pos: null };
    }
    if (T < R.t0 + R.fadeIn) T = R.t0 + R.fadeIn;
    var F = this.fade;
    var cut;
    if (T + F <= R.t1 - R.fadeOut) {
      // Replace the run's own fade-out by one starting now.
      R.gain.gain.cancelScheduledValues(T);
      R.gain.gain.setValueCurveAtTime(FADE_OUT, T, F);
      R.src.stop(T + F);
      R.t1 = T + F;
      R.pos1 = R.pos0 + (R.t1 - R.t0);
      R.fadeOut = F;
      cut = { time: R.t1, pos: R.pos1 };
    } else {
      // Its fade-out has begun (or is due sooner than a new one could end): let it finish.
      var wraps = this.loop.enabled && R.pos1 >= this.loop.end - 1e-9;
      cut = { time: R.t1, pos: wraps ? this.loop.start : R.pos1 >= this.duration - 1e-9 ? null : R.pos1 };
    }
    var keep = [];
    for (var i = 0; i < this.runs.length; i++) {
      var r = this.runs[i];
      if (r.t0 >= cut.time - 1e-9 && r !== R) this._dropRun(r);
      else keep.push(r);
    }
    this.runs = keep;
    return cut;
  };

  Engine.prototype._begin = function (key, when, pos) {
    pos = this._normalise(pos);
    if (key !== this.current || !this.playing) this.plays[key] = (this.plays[key] || 0) + 1;
    this.current = key;
    this.playing = true;
    this._startRun(key, when, pos, this._segmentEnd(pos));
    this.tick();
  };

  /** Start playing `key` (at `pos`, default the paused position); switches when playing. */
  Engine.prototype.play = function (key, pos) {
    key = key || this.current;
    if (this.playing) {
      if (pos === undefined && key === this.current) return;
      this.switchTo(key, pos);
      return;
    }
    var now = this.ctx.currentTime;
    var when = now + this.lead;
    this.runs.forEach(function (r) {
      when = Math.max(when, r.t1);
    });
    this._begin(key, when, pos === undefined ? this.pausedAt : pos);
  };

  /** Switch to `key` at the shared playhead (or seek to `pos`): fade out, then fade in. */
  Engine.prototype.switchTo = function (key, pos) {
    if (!this.playing) {
      this.current = key;
      if (pos !== undefined) this.pausedAt = this._normalise(pos);
      return;
    }
    var cut = this._cut();
    if (cut.pos === null && pos === undefined) {
      this._finish(cut.time);
      this.current = key;
      return;
    }
    this._begin(key, cut.time, pos === undefined ? cut.pos : pos);
  };

  Engine.prototype.seek = function (pos) {
    pos = Math.max(0, Math.min(this.duration, pos));
    if (this.playing) this.switchTo(this.current, pos);
    else this.pausedAt = this._normalise(pos);
  };

  Engine.prototype._finish = function (when) {
    this.playing = false;
    this.pausedAt = this.loop.enabled ? this.loop.start : 0;
    if (this.onended) this.onended(when);
  };

  Engine.prototype.pause = function () {
    if (!this.playing) return;
    var cut = this._cut();
    this.playing = false;
    this.pausedAt = cut.pos === null ? 0 : this._normalise(cut.pos);
  };

  Engine.prototype.stop = function () {
    if (this.playing) this._cut();
    this.playing = false;
    this.pausedAt = this.loop.enabled ? this.loop.start : 0;
  };

  /** Set the loop region (s); enforces minLoop. Replans with a fade when playing. */
  Engine.prototype.setLoop = function (start, end, enabled) {
    var d = this.duration;
    var min = Math.min(this.minLoop, d);
    start = Math.max(0, Math.min(start, d - min));
    end = Math.min(d, Math.max(end, start + min));
    var changed = start !== this.loop.start || end !== this.loop.end || enabled !== this.loop.enabled;
    this.loop = { start: start, end: end, enabled: !!enabled };
    if (!changed) return;
    if (this.playing) this.switchTo(this.current);
    else this.pausedAt = this._normalise(this.pausedAt);
  };

  /** Bank finished runs, schedule loop runs up to the horizon, detect the end. */
  Engine.prototype.tick = function () {
    var now = this.ctx.currentTime;
    var self = this;
    var live = [];
    this.runs.forEach(function (r) {
      if (r.t1 <= now) self._credit(r, r.t1);
      else live.push(r);
    });
    this.runs = live;
    if (!this.playing) return;
    var last = this.runs[this.runs.length - 1];
    if (!last) {
      this._finish(now);
      return;
    }
    while (this.loop.enabled && last.t1 < now + this.horizon && last.pos1 >= this.loop.end - 1e-9) {
      last = this._startRun(last.key, last.t1, this.loop.start, this.loop.end);
    }
  };

  /* ----------------------------------------------------------------- loading */

  /** Fetch with byte progress: onBytes(loaded, total|null). Resolves to a Uint8Array. */
  async function fetchBytes(url, onBytes) {
    var response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error("could not load a sound (HTTP " + response.status + ")");
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
  function makeContext(rate) {
    var Ctor = window.AudioContext || window.webkitAudioContext;
    if (!Ctor) throw new Error("this browser has no Web Audio support");
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
  async function loadStimuli(items, onProgress) {
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

  /* ------------------------------------------------------------------ saving */

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
  async function postWithRetry(url, body, csrfToken, onStatus) {
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
        if (response.ok) throw new Error("the server's answer was not understood (HTTP " + response.status + ")");
        var busy = response.status === 409 || response.status === 429;
        if (response.status >= 400 && response.status < 500 && !(busy && limitedRetries < 5)) {
          var reason = data && data.error ? data.error : "the server refused the answer (HTTP " + response.status + ")";
          var err = new Error(reason);
          err.status = response.status;
          throw err;
        }
        if (busy) limitedRetries += 1;
      }
      var wait = delay;
      var retryAfter = response && Number(response.headers.get("Retry-After"));
      if (retryAfter > 0) wait = Math.min(retryAfter, 30);
      onStatus("Saving\u2026 retrying in " + wait.toFixed(1) + " s (attempt " + (attempt + 1) + ")");
      await sleep(wait * 1000);
      delay = Math.min(delay * 2, 8);
      onStatus("Saving\u2026");
    }
  }

  /* ---------------------------------------------------------------------- UI */

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmtTime(s) {
    var m = Math.floor(s / 60);
    var r = s - 60 * m;
    return m + ":" + (r < 10 ? "0" : "") + r.toFixed(1);
  }

  function Player(root, data) {
    this.root = root;
    this.data = data;
    this.rules = Object.assign(
      { must_play_all: true, only_playing_slider_moves: true, require_one_100: true, loop_min_seconds: 0.5 },
      data.rules || {}
    );
    this.signals = data.signals || [];
    if (this.signals.length < 1 || this.signals.length > 12) throw new Error("a trial needs 1 to 12 signals");
    this.keys = this.signals.map(function (s) {
      return s.key;
    });
    this.ratings = {};
    this.played = {};
    var self = this;
    this.keys.forEach(function (k) {
      self.ratings[k] = null;
      self.played[k] = false;
    });
    this.played.ref = false;
    this.moves = [];
    this.loopUsed = false;
    this.pageStart = performance.now();
    this.loadLog = [];
    this.ready = false;
    this.saving = false;
    this.$ = function (sel) {
      return root.querySelector(sel);
    };
  }

  Player.prototype.start = async function () {
    var self = this;
    var bar = this.$(".wm-progress");
    var label = this.$(".wm-progress-label");
    var items = [{ key: "ref", url: this.data.reference.url }].concat(this.signals);
    try {
      var result = await loadStimuli(items, function (fraction) {
        var pct = Math.round(fraction * 100);
        if (pct === self.loadLog[self.loadLog.length - 1]) return;
        bar.value = pct;
        label.textContent = pct + " %";
        self.loadLog.push(pct);
      });
    } catch (e) {
      this.$(".wm-loading-status").textContent = "The sounds could not be loaded: " + e.message + ". Please reload the page.";
      this.$(".wm-loading-status").classList.add("error");
      return;
    }
    this.ctx = result.ctx;
    this.audioInfo = result.audio;
    this.decodeMs = result.decodeMs;
    this.master = this.ctx.createGain();
    this.master.gain.value = Math.pow(10, (Number(this.data.gain_db) || 0) / 20);
    this.master.connect(this.ctx.destination);
    this.engine = new Engine(this.ctx, result.buffers, {
      duration: result.buffers.ref.duration,
      destination: this.master,
      minLoop: this.rules.loop_min_seconds,
    });
    this.engine.current = "ref";
    this.engine.onended = function () {
      self.render();
    };
    this.build();
    this.$(".wm-loading").hidden = true;
    this.$(".wm-player").hidden = false;
    this.ready = true;
    this.drawWaveform(result.buffers.ref);
    if (this.ctx.state !== "running") this.$(".wm-start").hidden = false;
    var resume = function () {
      if (self.ctx.state !== "running") self.ctx.resume();
    };
    document.addEventListener("pointerdown", resume, true);
    document.addEventListener("keydown", resume, true);
    this.ctx.onstatechange = function () {
      if (self.ctx.state === "running") self.$(".wm-start").hidden = true;
    };
    setInterval(function () {
      self.engine.tick();
    }, 100);
    var frame = function () {
      self.renderPlayhead();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    this.render();
  };

  Player.prototype.build = function () {
    var self = this;
    var d = this.data;
    this.$(".wm-title").textContent = d.trial && d.trial.title ? d.trial.title : "";
    this.$(".wm-instructions").textContent = d.instructions || "";
    if (d.trial && d.trial.training) this.$(".wm-training-note").hidden = false;

    this.$(".wm-ref").addEventListener("click", function () {
      self.toggle("ref");
    });
    this.$(".wm-playpause").addEventListener("click", function () {
      self.playPause();
    });
    this.$(".wm-stop").addEventListener("click", function () {
      self.engine.stop();
      self.render();
    });
    var loopBox = this.$(".wm-loop-enabled");
    loopBox.addEventListener("change", function () {
      self.setLoop(self.engine.loop.start, self.engine.loop.end, loopBox.checked);
    });
    this.$(".wm-start").addEventListener("click", function () {
      self.ctx.resume().then(function () {
        self.$(".wm-start").hidden = true;
      });
    });
    this.$(".wm-submit").addEventListener("click", function () {
      self.submit();
    });

    var strip = this.$(".wm-signals");
    this.columns = {};
    this.signals.forEach(function (s, i) {
      var n = i + 1;
      var col = el("div", { class: "wm-signal", "data-key": s.key, role: "group", "aria-label": "Signal " + n });
      var btn = el("button", {
        type: "button",
        class: "btn wm-play",
        "data-key": s.key,
        "aria-pressed": "false",
        "aria-label": "Play signal " + n + (n <= 10 ? " (key " + (n % 10) + ")" : ""),
      });
      btn.appendChild(el("span", { class: "wm-icon", "aria-hidden": "true" }, "\u25B7"));
      btn.appendChild(el("span", { class: "wm-num" }, String(n)));
      btn.addEventListener("click", function () {
        self.toggle(s.key);
      });
      var status = el("span", { class: "wm-status", "aria-hidden": "true" }, "not played");
      var slider = el("input", {
        type: "range",
        min: "0",
        max: "100",
        step: "1",
        value: "50",
        class: "wm-slider unrated",
        "data-key": s.key,
        "aria-label": "Signal " + n + " rating",
        "aria-valuetext": "not rated",
        disabled: "",
      });
      var value = el("output", { class: "wm-value", "aria-hidden": "true" }, "\u2013");
      slider.addEventListener("pointerdown", function () {
        slider._touched = true;
      });
      slider.addEventListener("input", function () {
        self.rate(s.key, Number(slider.value), false);
      });
      slider.addEventListener("change", function () {
        self.rate(s.key, Number(slider.value), true);
      });
      // A click at the (hidden) default value fires no input event: rate on release.
      slider.addEventListener("pointerup", function () {
        if (slider._touched && self.ratings[s.key] === null && !slider.disabled) self.rate(s.key, Number(slider.value), true);
        slider._touched = false;
      });
      slider.addEventListener("focus", function () {
        self.focusKey = s.key;
      });
      col.appendChild(btn);
      col.appendChild(status);
      var track = el("div", { class: "wm-track" });
      track.appendChild(slider);
      col.appendChild(track);
      col.appendChild(value);
      if (d.labels && d.labels[s.key]) col.appendChild(el("span", { class: "wm-label" }, d.labels[s.key]));
      strip.appendChild(col);
      self.columns[s.key] = { col: col, btn: btn, slider: slider, value: value, status: status, n: n };
    });

    this.setupWaveform();
    document.addEventListener("keydown", function (ev) {
      self.onKey(ev);
    });
    // Space activates a focused button or checkbox on keyup; it is the play/pause shortcut here.
    document.addEventListener("keyup", function (ev) {
      var t = ev.target;
      if (ev.key === " " && t && (t.tagName === "BUTTON" || (t.tagName === "INPUT" && t.type !== "text"))) ev.preventDefault();
    });
    window.addEventListener("resize", function () {
      self.drawWaveform(self.engine.buffers.ref);
    });
  };

  Player.prototype.sliderEnabled = function (key) {
    if (this.rules.must_play_all && !this.played[key]) return false;
    if (this.rules.only_playing_slider_moves && this.engine.current !== key) return false;
    return true;
  };

  Player.prototype.markPlayed = function (key) {
    this.played[key] = true;
  };

  /** Click on a stimulus button: play it (switching at the playhead), or pause it. */
  Player.prototype.toggle = function (key) {
    if (this.engine.playing && this.engine.current === key) {
      this.engine.pause();
    } else {
      this.engine.play(key);
      this.markPlayed(key);
    }
    this.render();
  };

  Player.prototype.playPause = function () {
    if (this.engine.playing) this.engine.pause();
    else {
      this.engine.play(this.engine.current || "ref");
      this.markPlayed(this.engine.current);
    }
    this.render();
  };

  Player.prototype.setLoop = function (start, end, enabled) {
    this.engine.setLoop(start, end, enabled);
    var l = this.engine.loop;
    if (l.enabled && (l.start > 0.01 || l.end < this.engine.duration - 0.01)) this.loopUsed = true;
    this.render();
  };

  Player.prototype.rate = function (key, value, commit) {
    var c = this.columns[key];
    if (c.slider.disabled) return;
    value = Math.max(0, Math.min(100, Math.round(value)));
    var changed = this.ratings[key] !== value;
    this.ratings[key] = value;
    c.slider.value = String(value);
    if (changed || commit) {
      var last = this.moves[this.moves.length - 1];
      var t = Math.round(performance.now() - this.pageStart);
      // A drag fires many input events: keep one entry per value run of one key.
      if (!commit && last && last.key === key && t - last.t_ms < 150) {
        last.value = value;
        last.t_ms = t;
      } else if (changed || !last || last.key !== key || last.value !== value) {
        this.moves.push({ key: key, value: value, t_ms: t });
      }
    }
    this.render();
  };

  Player.prototype.missing = function () {
    var self = this;
    var msgs = [];
    var unplayed = this.keys.filter(function (k) {
      return !self.played[k];
    });
    var unrated = this.keys.filter(function (k) {
      return self.ratings[k] === null;
    });
    var nums = function (ks) {
      return ks
        .map(function (k) {
          return self.columns[k].n;
        })
        .join(", ");
    };
    if (this.rules.must_play_all && unplayed.length) msgs.push("Play signal" + (unplayed.length > 1 ? "s " : " ") + nums(unplayed) + ".");
    if (unrated.length) msgs.push("Rate signal" + (unrated.length > 1 ? "s " : " ") + nums(unrated) + ".");
    if (
      this.rules.require_one_100 &&
      !this.keys.some(function (k) {
        return self.ratings[k] === 100;
      })
    )
      msgs.push("Rate at least one signal 100 (the one identical to the reference).");
    return msgs;
  };

  Player.prototype.render = function () {
    var self = this;
    var e = this.engine;
    var refBtn = this.$(".wm-ref");
    var refPlaying = e.playing && e.current === "ref";
    refBtn.setAttribute("aria-pressed", refPlaying ? "true" : "false");
    refBtn.classList.toggle("playing", refPlaying);
    refBtn.classList.toggle("selected", e.current === "ref");
    refBtn.querySelector(".wm-icon").textContent = refPlaying ? "\u275A\u275A" : "\u25B6";
    this.keys.forEach(function (k) {
      var c = self.columns[k];
      var playing = e.playing && e.current === k;
      c.btn.setAttribute("aria-pressed", playing ? "true" : "false");
      c.col.classList.toggle("playing", playing);
      c.col.classList.toggle("selected", e.current === k);
      c.col.classList.toggle("played", self.played[k]);
      c.col.classList.toggle("rated", self.ratings[k] !== null);
      c.btn.querySelector(".wm-icon").textContent = playing ? "\u275A\u275A" : self.played[k] ? "\u2713" : "\u25B7";
      c.status.textContent = playing ? "playing" : self.played[k] ? "played" : "not played";
      c.slider.disabled = !self.sliderEnabled(k);
      var r = self.ratings[k];
      c.slider.classList.toggle("unrated", r === null);
      c.value.textContent = r === null ? "\u2013" : String(r);
      c.slider.setAttribute("aria-valuetext", r === null ? "not rated" : r + ", " + bandName(r));
    });
    this.$(".wm-playpause").textContent = e.playing ? "Pause" : "Play";
    this.$(".wm-playpause").setAttribute("aria-pressed", e.playing ? "true" : "false");
    this.$(".wm-loop-enabled").checked = e.loop.enabled;
    this.renderLoop();
    var missing = this.missing();
    this.$(".wm-missing").textContent = missing.join(" ");
    this.$(".wm-submit").disabled = missing.length > 0 || this.saving;
  };

  Player.prototype.renderPlayhead = function () {
    if (!this.engine) return;
    var pos = this.engine.position();
    var d = this.engine.duration;
    this.$(".wm-time").textContent = fmtTime(pos) + " / " + fmtTime(d);
    this.$(".wm-playhead").style.left = (100 * pos) / d + "%";
  };

  Player.prototype.renderLoop = function () {
    var l = this.engine.loop;
    var d = this.engine.duration;
    var region = this.$(".wm-loop-region");
    region.style.left = (100 * l.start) / d + "%";
    region.style.width = (100 * (l.end - l.start)) / d + "%";
    region.classList.toggle("off", !l.enabled);
    var hs = this.$(".wm-handle-start");
    var he = this.$(".wm-handle-end");
    hs.style.left = (100 * l.start) / d + "%";
    he.style.left = (100 * l.end) / d + "%";
    hs.setAttribute("aria-valuenow", l.start.toFixed(2));
    hs.setAttribute("aria-valuetext", "loop starts at " + l.start.toFixed(1) + " seconds");
    he.setAttribute("aria-valuenow", l.end.toFixed(2));
    he.setAttribute("aria-valuetext", "loop ends at " + l.end.toFixed(1) + " seconds");
    hs.setAttribute("aria-valuemax", d.toFixed(2));
    he.setAttribute("aria-valuemax", d.toFixed(2));
  };

  Player.prototype.drawWaveform = function (buffer) {
    var canvas = this.$(".wm-wave");
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.floor(canvas.clientWidth * dpr));
    var h = Math.max(1, Math.floor(canvas.clientHeight * dpr));
    canvas.width = w;
    canvas.height = h;
    var g = canvas.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#4a4a4a";
    var x = buffer.getChannelData(0);
    var step = x.length / w;
    for (var i = 0; i < w; i++) {
      var lo = 1;
      var hi = -1;
      var a = Math.floor(i * step);
      var b = Math.min(x.length, Math.floor((i + 1) * step) + 1);
      for (var j = a; j < b; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
      }
      if (hi < lo) continue;
      var y0 = ((1 - hi) / 2) * h;
      var y1 = ((1 - lo) / 2) * h;
      g.fillRect(i, y0, 1, Math.max(1, y1 - y0));
    }
  };

  Player.prototype.setupWaveform = function () {
    var self = this;
    var box = this.$(".wm-wavebox");
    var timeAt = function (clientX) {
      var rect = box.getBoundingClientRect();
      var f = Math.max(0, Math.min(1, (clientX - rect.left) / rect.width));
      return f * self.engine.duration;
    };
    var dragging = null;
    var pending = null;
    [".wm-handle-start", ".wm-handle-end"].forEach(function (sel, which) {
      var handle = self.$(sel);
      handle.addEventListener("pointerdown", function (ev) {
        ev.preventDefault();
        ev.stopPropagation();
        dragging = which === 0 ? "start" : "end";
        pending = { start: self.engine.loop.start, end: self.engine.loop.end };
        handle.setPointerCapture(ev.pointerId);
      });
      handle.addEventListener("pointermove", function (ev) {
        if (!dragging) return;
        var t = timeAt(ev.clientX);
        var min = self.rules.loop_min_seconds;
        if (dragging === "start") pending.start = Math.max(0, Math.min(t, pending.end - min));
        else pending.end = Math.min(self.engine.duration, Math.max(t, pending.start + min));
        // Show the region while dragging; the audio replans once, on release.
        var d = self.engine.duration;
        var region = self.$(".wm-loop-region");
        region.style.left = (100 * pending.start) / d + "%";
        region.style.width = (100 * (pending.end - pending.start)) / d + "%";
        handle.style.left = (100 * (dragging === "start" ? pending.start : pending.end)) / d + "%";
      });
      var release = function () {
        if (!dragging) return;
        dragging = null;
        self.setLoop(pending.start, pending.end, true);
      };
      handle.addEventListener("pointerup", release);
      handle.addEventListener("pointercancel", release);
      handle.addEventListener("keydown", function (ev) {
        var l = self.engine.loop;
        var stepS = ev.shiftKey ? 1 : 0.1;
        var delta = { ArrowLeft: -stepS, ArrowDown: -stepS, ArrowRight: stepS, ArrowUp: stepS }[ev.key];
        if (delta === undefined) return;
        ev.preventDefault();
        ev.stopPropagation();
        if (which === 0) self.setLoop(l.start + delta, l.end, true);
        else self.setLoop(l.start, l.end + delta, true);
      });
    });
    box.addEventListener("pointerdown", function (ev) {
      if (ev.target.closest(".wm-handle")) return;
      self.engine.seek(timeAt(ev.clientX));
      self.render();
    });
  };

  Player.prototype.onKey = function (ev) {
    if (!this.ready || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    var key = ev.key;
    if (key === "r" || key === "R") {
      this.toggle("ref");
    } else if (/^[0-9]$/.test(key)) {
      var n = key === "0" ? 10 : Number(key);
      if (n > this.keys.length) return;
      this.toggle(this.keys[n - 1]);
    } else if (key === " " || key === "Spacebar") {
      this.playPause();
    } else if (key === "l" || key === "L") {
      this.setLoop(this.engine.loop.start, this.engine.loop.end, !this.engine.loop.enabled);
    } else {
      var delta = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[key];
      if (delta === undefined) return;
      var k = this.activeSliderKey(t);
      if (!k) return;
      var c = this.columns[k];
      if (!c.slider.disabled) {
        var base = this.ratings[k] === null ? 50 : this.ratings[k];
        this.rate(k, base + delta, true);
      }
    }
    ev.preventDefault();
  };

  /** The slider the arrow keys move: the focused one, else the selected signal's. */
  Player.prototype.activeSliderKey = function (target) {
    if (target && target.classList && target.classList.contains("wm-slider")) return target.getAttribute("data-key");
    var cur = this.engine.current;
    return cur && cur !== "ref" ? cur : null;
  };

  Player.prototype.telemetry = function () {
    var self = this;
    var listen = this.engine.listenSeconds();
    var signals = {};
    this.keys.forEach(function (k) {
      signals[k] = { plays: self.engine.plays[k] || 0, listen_ms: Math.round(1000 * (listen[k] || 0)) };
    });
    var l = this.engine.loop;
    return {
      signals: signals,
      reference: { plays: this.engine.plays.ref || 0, listen_ms: Math.round(1000 * (listen.ref || 0)) },
      loop: { used: this.loopUsed, enabled: l.enabled, start_s: l.start, end_s: l.end },
      slider_moves: this.moves.slice(),
      time_on_page_ms: Math.round(performance.now() - this.pageStart),
      user_agent: navigator.userAgent,
      audio: Object.assign({}, this.audioInfo, { output_latency: this.ctx.outputLatency === undefined ? null : this.ctx.outputLatency }),
      screen: { width: window.screen.width, height: window.screen.height, dpr: window.devicePixelRatio || 1 },
      viewport: { width: window.innerWidth, height: window.innerHeight },
      decode_ms: Math.round(this.decodeMs),
    };
  };

  Player.prototype.submit = async function () {
    if (this.saving || this.missing().length) return;
    var self = this;
    var status = this.$(".wm-save-status");
    status.classList.remove("error");
    this.engine.pause();
    this.saving = true;
    this.render();
    status.textContent = "Saving\u2026";
    var ratings = {};
    this.keys.forEach(function (k) {
      ratings[k] = self.ratings[k];
    });
    var body = { idempotency_key: this.data.idempotency_key, ratings: ratings, telemetry: this.telemetry() };
    try {
      var answer = await postWithRetry(this.data.save_url, body, this.data.csrf_token, function (text) {
        status.textContent = text;
      });
      status.textContent = "Saved.";
      this.saved = answer;
      if (answer.next_url) window.location.assign(answer.next_url);
    } catch (e) {
      this.saving = false;
      status.textContent = "Not saved: " + e.message;
      status.classList.add("error");
      this.render();
    }
  };

  Player.prototype.state = function () {
    var e = this.engine;
    if (!e) return { ready: false, progress: this.loadLog[this.loadLog.length - 1] || 0 };
    return {
      ready: this.ready,
      playing: e.playing,
      current: e.current,
      position_s: e.position(),
      context_time: this.ctx.currentTime,
      context_state: this.ctx.state,
      loop: { start: e.loop.start, end: e.loop.end, enabled: e.loop.enabled },
      ratings: Object.assign({}, this.ratings),
      played: Object.assign({}, this.played),
      progress_log: this.loadLog.slice(),
    };
  };

  window.WebMushra = {
    Engine: Engine,
    raisedCosine: raisedCosine,
    wavSampleRate: wavSampleRate,
    bandName: bandName,
    postWithRetry: postWithRetry,
    FADE_S: FADE_S,
  };

  function boot() {
    var dataNode = document.getElementById("trial-data");
    var root = document.querySelector(".wm");
    if (!dataNode || !root) return;
    var player = new Player(root, JSON.parse(dataNode.textContent));
    window.mushra = {
      player: player,
      state: function () {
        return player.state();
      },
      telemetry: function () {
        return player.engine ? player.telemetry() : null;
      },
    };
    player.start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
