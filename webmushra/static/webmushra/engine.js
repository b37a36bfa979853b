/*
 * The MUSHRA player's playback engine (ITU-R BS.1534-3): decoded stimuli on one shared
 * timeline. Every switch, seek, pause and loop wrap is a 5 ms raised-cosine fade-out of
 * the old source followed by a 5 ms raised-cosine fade-in of the new one at the same
 * playhead -- never a cross-fade, which would mix two conditions.
 *
 * An ES module with no imports; trial.js drives it, and the browser tests render it
 * offline from their harness page (tests/browser/harness/engine.html).
 */

/** Length of every fade in and out (s). */
export const FADE_S = 0.005;
const CURVE_POINTS = 256;

/** Raised-cosine gain curve from 0 to 1 (rising) or 1 to 0 (falling). */
export function raisedCosine(points, rising) {
  var curve = new Float32Array(points);
  for (var i = 0; i < points; i++) {
    var g = 0.5 - 0.5 * Math.cos((Math.PI * i) / (points - 1));
    curve[i] = rising ? g : 1 - g;
  }
  return curve;
}
const FADE_IN = raisedCosine(CURVE_POINTS, true);
const FADE_OUT = raisedCosine(CURVE_POINTS, false);

/**
 * Playback engine over decoded AudioBuffers sharing one timeline.
 *
 * The schedule is a list of runs {key, t0, t1, pos0, pos1}: a source node playing
 * buffer[key] from pos0 (s) starting at context time t0 until t1, with a fade-in at
 * t0 and a fade-out ending at t1. Loops are further runs scheduled ahead (not
 * AudioBufferSourceNode.loop) so that each wrap gets its fades.
 * options: duration (s, the timeline), destination, fade (s), lead (s scheduling
 * margin), horizon (s scheduled ahead), minLoop (s, the shortest loop: the trial page passes
 * its rule loop_min_seconds; without it, four fades: 20 ms).
 */
export function Engine(ctx, buffers, options) {
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
  this.minLoop = options.minLoop || 4 * this.fade;
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
    // The switch found the timeline run out (the last signal ended before a tick noticed):
    // a press of play still plays, from where a stopped timeline starts.
    if (this.playing) return;
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
