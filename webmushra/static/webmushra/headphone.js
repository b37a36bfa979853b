/*
 * Headphone screening, synthesised in the browser with the Web Audio API (no sound files).
 *
 * Two three-interval forced-choice tests:
 *  - "antiphase": Woods, Siegel, Traer & McDermott (2017), "Headphone screening to
 *    facilitate web-based auditory experiments", Atten. Percept. Psychophys. 79:2064-2072.
 *    Three 200 Hz tones; one is 6 dB softer (the answer: "which is quietest?"), one is
 *    in antiphase between the ears. Over loudspeakers the antiphase tone cancels and
 *    sounds quietest, so loudspeaker listeners tend to choose it.
 *  - "huggins": Milne, Bianco, Poole, Zhao, Oxenham, Billig & Chait (2021), "An online
 *    headphone screening test based on dichotic pitch", Behav. Res. Methods 53:1551-1562.
 *    Three 1 s white noises; in one, the band 600 Hz +/- 6 % is phase-inverted in the
 *    right ear (Huggins pitch), heard as a faint tone only over headphones.
 *
 * Reads <script id="headphone-data" type="application/json">:
 *   {"post_url", "csrf_token", "idempotency_key"?, "trials": [{"test", "target", "seed"?,
 *    "antiphase"?}], "max_plays"? (1), "duration_s"? (1.0), "gap_s"? (0.5)}
 * where target is the 1-based interval the server scores as correct. Posts
 *   {"idempotency_key", "answers": [{"test", "trial", "target", "chosen", "antiphase"?,
 *    "plays", "rt_ms"}]}
 * and follows the reply's next_url, retrying the post with postWithRetry (savequeue.js).
 *
 * An ES module (<script type="module">): it starts the check when the page has the data
 * and a .hp element; synthesise and prng are exported for the browser tests' harness.
 */
import { postWithRetry } from "./savequeue.js";

const TONE_HZ = 200;
const TONE_AMP = 0.25;
const TARGET_DB = -6;
const TONE_RAMP_S = 0.1;
const HP_CENTRE_HZ = 600;
const HP_HALF_WIDTH = 0.06;
const NOISE_RMS = 0.08;
const NOISE_RAMP_S = 0.01;

/** Small seeded PRNG (mulberry32) so a trial's noise can be reproduced from its seed. */
export function prng(seed) {
  var a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    var t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand) {
  var u = 0;
  while (u === 0) u = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Raised-cosine onset/offset ramps applied in place. */
function applyRamps(x, rampSamples) {
  var n = x.length;
  var r = Math.min(rampSamples, Math.floor(n / 2));
  for (var i = 0; i < r; i++) {
    var g = 0.5 - 0.5 * Math.cos((Math.PI * i) / r);
    x[i] *= g;
    x[n - 1 - i] *= g;
  }
}

/** One antiphase-test interval: kind "standard", "target" (-6 dB) or "antiphase" (R = -L). */
function toneInterval(kind, rate, seconds) {
  var n = Math.round(rate * seconds);
  var left = new Float32Array(n);
  var amp = kind === "target" ? TONE_AMP * Math.pow(10, TARGET_DB / 20) : TONE_AMP;
  for (var i = 0; i < n; i++) left[i] = amp * Math.sin((2 * Math.PI * TONE_HZ * i) / rate);
  applyRamps(left, Math.round(TONE_RAMP_S * rate));
  var right = new Float32Array(left);
  if (kind === "antiphase") for (var j = 0; j < n; j++) right[j] = -left[j];
  return [left, right];
}

/**
 * One Huggins-test interval: Gaussian white noise, diotic, or with the DFT bins of
 * 600 Hz +/- 6 % negated in the right ear (dichotic: Huggins pitch). The band is
 * removed and re-added by a direct DFT over those bins only, so both ears carry the
 * same magnitude spectrum and differ only by the 180-degree phase in the band.
 */
function noiseInterval(dichotic, rate, seconds, rand) {
  var n = Math.round(rate * seconds);
  var left = new Float32Array(n);
  var sum = 0;
  for (var i = 0; i < n; i++) {
    left[i] = gaussian(rand);
    sum += left[i] * left[i];
  }
  var scale = NOISE_RMS / Math.sqrt(sum / n);
  for (var s = 0; s < n; s++) left[s] *= scale;
  var right = new Float32Array(left);
  if (dichotic) {
    var kLo = Math.ceil((HP_CENTRE_HZ * (1 - HP_HALF_WIDTH) * n) / rate);
    var kHi = Math.floor((HP_CENTRE_HZ * (1 + HP_HALF_WIDTH) * n) / rate);
    var band = new Float64Array(n);
    for (var k = kLo; k <= kHi; k++) {
      var w = (2 * Math.PI * k) / n;
      var cw = Math.cos(w);
      var sw = Math.sin(w);
      // Rotate a unit phasor sample by sample instead of calling cos/sin n times.
      var c = 1;
      var si = 0;
      var re = 0;
      var im = 0;
      for (var m = 0; m < n; m++) {
        re += left[m] * c;
        im -= left[m] * si;
        var c2 = c * cw - si * sw;
        si = si * cw + c * sw;
        c = c2;
      }
      c = 1;
      si = 0;
      for (var q = 0; q < n; q++) {
        band[q] += (2 / n) * (re * c - im * si);
        var c3 = c * cw - si * sw;
        si = si * cw + c * sw;
        c = c3;
      }
    }
    for (var p = 0; p < n; p++) right[p] = left[p] - 2 * band[p];
  }
  var rampN = Math.round(NOISE_RAMP_S * rate);
  applyRamps(left, rampN);
  applyRamps(right, rampN);
  return [left, right];
}

/**
 * The three intervals of one trial as [[left, right] x 3] Float32Arrays.
 * target is 1-based; antiphase (1-based, antiphase test only), when not given, is
 * drawn from the two other intervals with the trial's seed and written back.
 */
export function synthesise(trial, rate, seconds) {
  seconds = seconds || 1.0;
  var target = trial.target;
  if (!(target >= 1 && target <= 3)) throw new Error("a headphone trial needs target 1, 2 or 3");
  var rand = prng(trial.seed === undefined ? Math.floor(Math.random() * 4294967296) : trial.seed);
  var out = [];
  if (trial.test === "antiphase") {
    var anti = trial.antiphase;
    if (!(anti >= 1 && anti <= 3) || anti === target) {
      var others = [1, 2, 3].filter(function (i) {
        return i !== target;
      });
      anti = others[Math.floor(rand() * 2)];
    }
    trial.antiphase = anti;
    for (var i = 1; i <= 3; i++) out.push(toneInterval(i === target ? "target" : i === anti ? "antiphase" : "standard", rate, seconds));
  } else if (trial.test === "huggins") {
    for (var j = 1; j <= 3; j++) out.push(noiseInterval(j === target, rate, seconds, rand));
  } else {
    throw new Error("unknown headphone test '" + trial.test + "' (expected antiphase or huggins)");
  }
  return out;
}

const QUESTIONS = {
  antiphase: "Which sound was the quietest: 1, 2 or 3?",
  huggins: "Which noise contained a faint tone: 1, 2 or 3?",
};

function Check(root, data) {
  this.root = root;
  this.data = data;
  this.trials = (data.trials || []).map(function (t) {
    return Object.assign({}, t);
  });
  if (!this.trials.length) throw new Error("the headphone check has no trials");
  this.maxPlays = data.max_plays || 1;
  this.seconds = data.duration_s || 1.0;
  this.gap = data.gap_s === undefined ? 0.5 : data.gap_s;
  this.index = -1;
  this.answers = [];
  this.plays = 0;
  this.chosen = null;
  this.sounding = false;
  this.$ = function (sel) {
    return root.querySelector(sel);
  };
}

Check.prototype.init = function () {
  var self = this;
  this.$(".hp-begin").addEventListener("click", function () {
    self.ctx = self.ctx || new (window.AudioContext || window.webkitAudioContext)();
    self.ctx.resume();
    self.$(".hp-intro").hidden = true;
    self.$(".hp-task").hidden = false;
    self.next();
  });
  this.$(".hp-play").addEventListener("click", function () {
    self.play();
  });
  Array.prototype.forEach.call(intervalButtons(this), function (btn) {
    btn.addEventListener("click", function () {
      self.choose(Number(btn.getAttribute("data-interval")));
    });
  });
  this.$(".hp-next").addEventListener("click", function () {
    self.commit();
  });
};

function intervalButtons(check) {
  return check.root.querySelectorAll(".hp-interval");
}

Check.prototype.next = function () {
  this.index += 1;
  if (this.index >= this.trials.length) {
    this.finish();
    return;
  }
  var trial = this.trials[this.index];
  this.intervals = synthesise(trial, this.ctx.sampleRate, this.seconds);
  this.plays = 0;
  this.chosen = null;
  this.shownAt = performance.now();
  this.$(".hp-progress").textContent = "Question " + (this.index + 1) + " of " + this.trials.length;
  this.$(".hp-question").textContent = QUESTIONS[trial.test];
  this.render();
  this.$(".hp-play").focus();
};

Check.prototype.render = function () {
  var self = this;
  var heard = this.plays > 0 && !this.sounding;
  this.$(".hp-play").disabled = this.sounding || this.plays >= this.maxPlays;
  Array.prototype.forEach.call(intervalButtons(this), function (btn) {
    var i = Number(btn.getAttribute("data-interval"));
    btn.disabled = !heard;
    btn.setAttribute("aria-pressed", self.chosen === i ? "true" : "false");
  });
  this.$(".hp-next").disabled = this.chosen === null || this.sounding;
};

Check.prototype.play = function () {
  if (this.sounding || this.plays >= this.maxPlays) return;
  var self = this;
  var ctx = this.ctx;
  var start = ctx.currentTime + 0.1;
  this.plays += 1;
  this.sounding = true;
  this.render();
  var buttons = intervalButtons(this);
  this.intervals.forEach(function (pair, i) {
    var buffer = ctx.createBuffer(2, pair[0].length, ctx.sampleRate);
    buffer.copyToChannel(pair[0], 0);
    buffer.copyToChannel(pair[1], 1);
    var src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(ctx.destination);
    var at = start + i * (self.seconds + self.gap);
    src.start(at);
    var lead = (at - ctx.currentTime) * 1000;
    setTimeout(function () {
      buttons[i].classList.add("sounding");
    }, lead);
    setTimeout(function () {
      buttons[i].classList.remove("sounding");
    }, lead + self.seconds * 1000);
  });
  var total = (start - ctx.currentTime + 3 * this.seconds + 2 * this.gap) * 1000;
  setTimeout(function () {
    self.sounding = false;
    self.render();
    buttons[0].focus();
  }, total);
};

Check.prototype.choose = function (i) {
  if (this.sounding || this.plays === 0) return;
  this.chosen = i;
  this.render();
};

Check.prototype.commit = function () {
  if (this.chosen === null) return;
  var t = this.trials[this.index];
  var answer = {
    test: t.test,
    trial: this.index + 1,
    target: t.target,
    chosen: this.chosen,
    plays: this.plays,
    rt_ms: Math.round(performance.now() - this.shownAt),
  };
  if (t.test === "antiphase") answer.antiphase = t.antiphase;
  this.answers.push(answer);
  this.next();
};

Check.prototype.finish = async function () {
  this.$(".hp-task").hidden = true;
  var status = this.$(".hp-status");
  status.textContent = "Saving\u2026";
  var body = { answers: this.answers };
  if (this.data.idempotency_key) body.idempotency_key = this.data.idempotency_key;
  try {
    var reply = await postWithRetry(this.data.post_url, body, this.data.csrf_token, function (text) {
      status.textContent = text;
    });
    status.textContent = "Saved.";
    if (reply.next_url) window.location.assign(reply.next_url);
  } catch (e) {
    status.textContent = "Not saved: " + e.message;
    status.classList.add("error");
  }
};

function boot() {
  var node = document.getElementById("headphone-data");
  var root = document.querySelector(".hp");
  if (!node || !root) return;
  var check = new Check(root, JSON.parse(node.textContent));
  check.init();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
