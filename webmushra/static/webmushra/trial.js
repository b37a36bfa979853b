/*
 * The MUSHRA trial page (ITU-R BS.1534-3): open reference, blinded signals, 0-100 sliders,
 * a waveform with a loop region and a playhead, and the save with its telemetry.
 *
 * new Player(root, data): root is the page's .wm element (_mushra_player.html), data the
 * trial JSON the server builds (webmushra/views/participant.py trial_data): trial,
 * reference, signals, labels (training trials only), rules and max_signals (the page's
 * rules and the signal cap, from webmushra/rules.py: the player keeps no defaults of its
 * own), save_url, idempotency_key, csrf_token, instructions, block_instructions (shown by the
 * template), comments ("off", "optional" or "required": the comment box the template shows, sent
 * with the save as comment; a required one must be written before the save), gain_db. start() loads the
 * stimuli (loader.js), then plays them through the engine (engine.js); keyboard.js holds
 * the keys, savequeue.js the retrying save. The ratings, played marks and loop of the trial in
 * progress are kept in the tab's sessionStorage under the idempotency key, so a reload keeps them.
 */
import { Engine } from "./engine.js";
import { t } from "./i18n.js";
import { bindHandleKeys, bindKeys } from "./keyboard.js";
import { loadStimuli } from "./loader.js";
import { postWithRetry } from "./savequeue.js";
import { makeAnswer } from "./paradigm.js";

const BANDS = [
  { min: 80, name: "Excellent" },
  { min: 60, name: "Good" },
  { min: 40, name: "Fair" },
  { min: 20, name: "Poor" },
  { min: 0, name: "Bad" },
];

export function bandName(value) {
  for (var i = 0; i < BANDS.length; i++) if (value >= BANDS[i].min) return t(BANDS[i].name);
  return t("Bad");
}

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

export function Player(root, data) {
  this.root = root;
  this.data = data;
  // The rules and the signal cap come from the server with the trial (webmushra/rules.py).
  if (!data.rules || !(data.max_signals >= 1)) throw new Error("the trial data has no rules or signal cap");
  this.rules = data.rules;
  this.signals = data.signals || [];
  if (this.signals.length < 1 || this.signals.length > data.max_signals) {
    throw new Error("a trial needs 1 to " + data.max_signals + " signals");
  }
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
  // The interaction log the server referees the trial by (webmushra/rules.py check_trial):
  // {t_ms, type: play|stop|move, key, value}, t_ms from the page's start.
  this.events = [];
  // Listening (s) and plays per key before a reload restored this trial (restore()).
  this.listenBefore = {};
  this.playsBefore = {};
  this.loopUsed = false;
  this.pageStart = performance.now();
  this.openedAt = Date.now();
  this.loadLog = [];
  this.ready = false;
  this.saving = false;
  this.$ = function (sel) {
    return root.querySelector(sel);
  };
  // A paradigm other than MUSHRA (paradigm.js): its own answer instead of the sliders.
  this.answer = data.paradigm && data.paradigm !== "mushra" ? makeAnswer(this, data) : null;
  // The waveform's signal: the reference, or the first signal where the trial has none.
  this.shownKey = data.reference ? "ref" : this.keys[0];
}

Player.prototype.start = async function () {
  var self = this;
  var bar = this.$(".wm-progress");
  var label = this.$(".wm-progress-label");
  var items = (this.data.reference ? [{ key: "ref", url: this.data.reference.url }] : []).concat(this.signals);
  try {
    var result = await loadStimuli(items, function (fraction) {
      var pct = Math.round(fraction * 100);
      if (pct === self.loadLog[self.loadLog.length - 1]) return;
      bar.value = pct;
      label.textContent = pct + " %";
      self.loadLog.push(pct);
    });
  } catch (e) {
    var failed = t("The sounds could not be loaded: %(reason)s. Please reload the page.", { reason: e.message });
    this.$(".wm-loading-status").textContent = failed;
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
    duration: result.buffers[this.shownKey].duration,
    destination: this.master,
    minLoop: this.rules.loop_min_seconds,
  });
  this.engine.current = this.shownKey;
  this.engine.onended = function () {
    self.log("stop", self.engine.current);
    self.render();
  };
  this.build();
  this.restore();
  this.$(".wm-loading").hidden = true;
  this.$(".wm-player").hidden = false;
  this.ready = true;
  this.drawWaveform(result.buffers[this.shownKey]);
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
    // Listening time and time on the page grow while nothing happens: show what is still missing.
    if (self.missing().join(" ") !== self.$(".wm-missing").textContent) self.render();
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
  var commentBox = this.$(".wm-comment-text");
  if (commentBox) {
    commentBox.addEventListener("input", function () {
      self.render();
      self.remember();
    });
  }

  this.$(".wm-ref").addEventListener("click", function () {
    self.toggle("ref");
  });
  this.$(".wm-playpause").addEventListener("click", function () {
    self.playPause();
  });
  this.$(".wm-stop").addEventListener("click", function () {
    if (self.engine.playing) self.log("stop", self.engine.current);
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
  if (this.answer) this.answer.build(strip);
  (this.answer ? [] : this.signals).forEach(function (s, i) {
    var n = i + 1;
    var col = el("div", {
      class: "wm-signal",
      "data-key": s.key,
      role: "group",
      "aria-label": t("Signal %(n)s", { n: n }),
    });
    var btn = el("button", {
      type: "button",
      class: "btn wm-play",
      "data-key": s.key,
      "aria-pressed": "false",
      "aria-label":
        n <= 10 ? t("Play signal %(n)s (key %(key)s)", { n: n, key: n % 10 }) : t("Play signal %(n)s", { n: n }),
    });
    btn.appendChild(el("span", { class: "wm-icon", "aria-hidden": "true" }, "\u25B7"));
    btn.appendChild(el("span", { class: "wm-num" }, String(n)));
    btn.addEventListener("click", function () {
      self.toggle(s.key);
    });
    var status = el("span", { class: "wm-status", "aria-hidden": "true" }, t("not played"));
    var slider = el("input", {
      type: "range",
      min: "0",
      max: "100",
      step: "1",
      value: "50",
      class: "wm-slider unrated",
      "data-key": s.key,
      "aria-label": t("Signal %(n)s rating", { n: n }),
      "aria-valuetext": t("not rated"),
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
    // A disabled input gets no pointer events (and some engines pass none on to its parents):
    // this cover, shown while the slider is locked, catches the tap and says why.
    var lock = el("div", { class: "wm-lock", "aria-hidden": "true" });
    lock.addEventListener("click", function () {
      self.explainLocked(s.key);
    });
    track.appendChild(lock);
    col.appendChild(track);
    col.appendChild(value);
    if (d.labels && d.labels[s.key]) col.appendChild(el("span", { class: "wm-label" }, d.labels[s.key]));
    strip.appendChild(col);
    self.columns[s.key] = { col: col, btn: btn, slider: slider, value: value, status: status, n: n, lock: lock };
  });

  this.setupWaveform();
  bindKeys(this);
  window.addEventListener("resize", function () {
    self.drawWaveform(self.engine.buffers[self.shownKey]);
  });
};

Player.prototype.sliderEnabled = function (key) {
  if (this.rules.must_play_all && !this.played[key]) return false;
  if (this.rules.only_playing_slider_moves && this.engine.current !== key) return false;
  return true;
};

/** A tap on a slider that cannot move yet: say what opens it (both rules open it by playing it). */
Player.prototype.explainLocked = function (key) {
  var c = this.columns[key];
  if (!c || !c.slider.disabled) return;
  this.showHint(key, t("Play signal %(n)s to rate it.", { n: c.n }));
  c.col.classList.add("nudge");
  clearTimeout(c.nudgeTimer);
  c.nudgeTimer = setTimeout(function () {
    c.col.classList.remove("nudge");
  }, 1500);
};

/** Show (or, with an empty text, clear) the hint line of the player bar; it clears itself after 8 s. */
Player.prototype.showHint = function (key, text) {
  var self = this;
  var hint = this.$(".wm-hint");
  this.hintKey = text ? key : null;
  hint.textContent = "";
  clearTimeout(this.hintTimer);
  if (!text) return;
  // Emptied first, so that a screen reader announces a repeated message again.
  setTimeout(function () {
    if (self.hintKey === key) hint.textContent = text;
  }, 30);
  this.hintTimer = setTimeout(function () {
    self.showHint(null, "");
  }, 8000);
};

var STORE_PREFIX = "webmushra.trial:";

/**
 * Keep the trial in progress (ratings, played marks, loop) in this tab's sessionStorage under
 * its idempotency key (one per participant and trial), so that a reload restores it. The server
 * still checks every rule, plays included, from its own records on save.
 */
Player.prototype.remember = function () {
  if (!this.ready || this.saved || !this.data.idempotency_key) return;
  var l = this.engine.loop;
  var snapshot = {
    idempotency_key: this.data.idempotency_key,
    keys: this.keys,
    ratings: this.ratings,
    played: this.played,
    loop: { start: l.start, end: l.end, enabled: l.enabled },
    loop_used: this.loopUsed,
    // The interaction log and the listening so far, so that the save after a reload still
    // shows the server every play, move and second heard since the trial was first opened.
    opened_at: this.openedAt,
    events: this.events,
    listen_s: this.listenTotals(),
    plays: this.playTotals(),
    comment: this.comment(),
    answer: this.answer ? this.answer.value() : undefined,
  };
  try {
    window.sessionStorage.setItem(STORE_PREFIX + this.data.idempotency_key, JSON.stringify(snapshot));
  } catch (e) {
    // Storage blocked or full: the trial works on, only a reload forgets it.
  }
};

/** Restore what remember() kept, only for this very trial: the same key and the same signals. */
Player.prototype.restore = function () {
  var self = this;
  var snap = null;
  try {
    snap = JSON.parse(window.sessionStorage.getItem(STORE_PREFIX + this.data.idempotency_key) || "null");
  } catch (e) {
    return;
  }
  if (!snap || snap.idempotency_key !== this.data.idempotency_key || !Array.isArray(snap.keys)) return;
  var same =
    snap.keys.length === this.keys.length &&
    snap.keys.every(function (k, i) {
      return k === self.keys[i];
    });
  if (!same) return;
  var ratings = snap.ratings || {};
  var played = snap.played || {};
  this.keys.forEach(function (k) {
    var r = ratings[k];
    if (typeof r === "number" && r >= 0 && r <= 100) {
      self.ratings[k] = Math.round(r);
      self.columns[k].slider.value = String(self.ratings[k]);
    }
    if (played[k] === true) self.played[k] = true;
  });
  if (played.ref === true) this.played.ref = true;
  if (this.answer) this.answer.restore(snap.answer);
  var l = snap.loop;
  if (l && isFinite(l.start) && isFinite(l.end)) this.engine.setLoop(Number(l.start), Number(l.end), l.enabled !== false);
  this.loopUsed = snap.loop_used === true;
  var box = this.$(".wm-comment-text");
  if (box && typeof snap.comment === "string" && !box.value) box.value = snap.comment;
  var earlier = this.openedAt - Number(snap.opened_at);
  if (Array.isArray(snap.events) && earlier >= 0 && earlier < 864e5) {
    // Times count from the first opening of the trial; the log goes on from there.
    this.pageStart -= earlier;
    this.openedAt = Number(snap.opened_at);
    this.events = snap.events.filter(function (e) {
      return e && typeof e.t_ms === "number" && typeof e.type === "string" && typeof e.key === "string";
    });
    var keep = function (from, into) {
      for (var k in from || {}) if (typeof from[k] === "number" && from[k] >= 0) into[k] = from[k];
    };
    keep(snap.listen_s, this.listenBefore);
    keep(snap.plays, this.playsBefore);
  }
  this.restored = true;
};

/** Seconds each key was heard since the trial was first opened (this page and before a reload). */
Player.prototype.listenTotals = function () {
  var out = Object.assign({}, this.listenBefore);
  var now = this.engine.listenSeconds();
  for (var k in now) out[k] = (out[k] || 0) + now[k];
  return out;
};

Player.prototype.playTotals = function () {
  var out = Object.assign({}, this.playsBefore);
  for (var k in this.engine.plays) out[k] = (out[k] || 0) + this.engine.plays[k];
  return out;
};

Player.prototype.forget = function () {
  try {
    window.sessionStorage.removeItem(STORE_PREFIX + this.data.idempotency_key);
  } catch (e) {
    // Nothing was kept.
  }
};

/** The text of the trial's comment box (empty when the trial has none). */
Player.prototype.comment = function () {
  var box = this.$(".wm-comment-text");
  return box ? box.value : "";
};

Player.prototype.markPlayed = function (key) {
  this.played[key] = true;
  this.log("play", key);
};

/** Append to the interaction log (a run of slider input events of one key is one entry). */
Player.prototype.log = function (type, key, value, commit) {
  var t = Math.round(performance.now() - this.pageStart);
  var last = this.events[this.events.length - 1];
  var sameMove = last && type === "move" && last.type === "move" && last.key === key;
  if (sameMove && !commit && t - last.t_ms < 150) {
    last.value = value;
    last.t_ms = t;
    return;
  }
  if (sameMove && last.value === value) return;
  var event = { t_ms: t, type: type, key: key };
  if (type === "move") event.value = value;
  this.events.push(event);
};

/** Click on a stimulus button: play it (switching at the playhead), or pause it. */
Player.prototype.toggle = function (key) {
  if (key === "ref" && !this.data.reference) return;
  if (this.engine.playing && this.engine.current === key) {
    this.engine.pause();
    this.log("stop", key);
  } else {
    this.engine.play(key);
    this.markPlayed(key);
  }
  this.render();
};

Player.prototype.playPause = function () {
  if (this.engine.playing) {
    this.engine.pause();
    this.log("stop", this.engine.current);
  } else {
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
    this.log("move", key, value, commit);
  }
  this.render();
};

Player.prototype.missing = function () {
  var self = this;
  var msgs = [];
  var unplayed = this.keys.filter(function (k) {
    return !self.played[k];
  });
  var unrated = (this.answer ? [] : this.keys).filter(function (k) {
    return self.ratings[k] === null;
  });
  var nums = function (ks) {
    return ks
      .map(function (k) {
        return self.answer ? self.answer.name(k) : self.columns[k].n;
      })
      .join(", ");
  };
  // One text for one signal and one for several: each language words them in its own way.
  if (this.rules.must_play_all && unplayed.length) {
    var play = unplayed.length > 1 ? "Play signals %(signals)s." : "Play signal %(signals)s.";
    msgs.push(t(play, { signals: nums(unplayed) }));
  }
  var least = Number(this.rules.min_play_seconds) || 0;
  if (this.rules.must_play_all && least > 0) {
    var listen = this.listenTotals();
    var short = this.keys.filter(function (k) {
      return self.played[k] && (listen[k] || 0) < least;
    });
    if (short.length) {
      var listenMore =
        short.length > 1
          ? "Listen to signals %(signals)s for at least %(seconds)s s."
          : "Listen to signal %(signals)s for at least %(seconds)s s.";
      msgs.push(t(listenMore, { signals: nums(short), seconds: least }));
    }
  }
  if (unrated.length) {
    var rate = unrated.length > 1 ? "Rate signals %(signals)s." : "Rate signal %(signals)s.";
    msgs.push(t(rate, { signals: nums(unrated) }));
  }
  if (this.answer) msgs.push.apply(msgs, this.answer.missing());
  if (
    this.rules.require_one_100 &&
    !this.keys.some(function (k) {
      return self.ratings[k] === 100;
    })
  )
    msgs.push(t("Rate at least one signal 100 (the one identical to the reference)."));
  if (this.data.comments === "required" && !this.comment().trim()) msgs.push(t("Write a comment on this trial."));
  var wait = (Number(this.rules.min_trial_seconds) || 0) - (performance.now() - this.pageStart) / 1000;
  if (!msgs.length && wait > 0) msgs.push(t("You can submit in %(seconds)s s.", { seconds: Math.ceil(wait) }));
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
  if (this.answer) this.answer.render();
  (this.answer ? [] : this.keys).forEach(function (k) {
    var c = self.columns[k];
    var playing = e.playing && e.current === k;
    c.btn.setAttribute("aria-pressed", playing ? "true" : "false");
    c.col.classList.toggle("playing", playing);
    c.col.classList.toggle("selected", e.current === k);
    c.col.classList.toggle("played", self.played[k]);
    c.col.classList.toggle("rated", self.ratings[k] !== null);
    c.btn.querySelector(".wm-icon").textContent = playing ? "\u275A\u275A" : self.played[k] ? "\u2713" : "\u25B7";
    c.status.textContent = t(playing ? "playing" : self.played[k] ? "played" : "not played");
    c.slider.disabled = !self.sliderEnabled(k);
    c.lock.hidden = !c.slider.disabled;
    if (self.hintKey === k && !c.slider.disabled) self.showHint(null, "");
    var r = self.ratings[k];
    c.slider.classList.toggle("unrated", r === null);
    c.value.textContent = r === null ? "\u2013" : String(r);
    c.slider.setAttribute("aria-valuetext", r === null ? t("not rated") : r + ", " + bandName(r));
  });
  this.$(".wm-playpause").textContent = e.playing ? t("Pause") : t("Play");
  this.$(".wm-playpause").setAttribute("aria-pressed", e.playing ? "true" : "false");
  this.$(".wm-loop-enabled").checked = e.loop.enabled;
  this.renderLoop();
  var missing = this.missing();
  this.$(".wm-missing").textContent = missing.join(" ");
  this.$(".wm-submit").disabled = missing.length > 0 || this.saving;
  this.remember();
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
  hs.setAttribute("aria-valuetext", t("loop starts at %(seconds)s seconds", { seconds: l.start.toFixed(1) }));
  he.setAttribute("aria-valuenow", l.end.toFixed(2));
  he.setAttribute("aria-valuetext", t("loop ends at %(seconds)s seconds", { seconds: l.end.toFixed(1) }));
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
    bindHandleKeys(self, handle, which);
  });
  box.addEventListener("pointerdown", function (ev) {
    if (ev.target.closest(".wm-handle")) return;
    self.engine.seek(timeAt(ev.clientX));
    self.render();
  });
};

Player.prototype.telemetry = function () {
  var self = this;
  // Since the trial was first opened (a reload restores what came before: restore()).
  var listen = this.listenTotals();
  var plays = this.playTotals();
  var signals = {};
  this.keys.forEach(function (k) {
    signals[k] = { plays: plays[k] || 0, listen_ms: Math.round(1000 * (listen[k] || 0)) };
  });
  var l = this.engine.loop;
  return {
    signals: signals,
    reference: { plays: plays.ref || 0, listen_ms: Math.round(1000 * (listen.ref || 0)) },
    loop: { used: this.loopUsed, enabled: l.enabled, start_s: l.start, end_s: l.end },
    slider_moves: this.moves.slice(),
    events: this.events.map(function (e) {
      return Object.assign({}, e);
    }),
    time_on_page_ms: Math.round(performance.now() - this.pageStart),
    user_agent: navigator.userAgent,
    // The context facts read once when it was made (loader.js): reading AudioContext.outputLatency
    // again on every save has locked up Firefox ESR on a PulseAudio null sink.
    audio: Object.assign({}, this.audioInfo),
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
  status.textContent = t("Saving\u2026");
  var ratings = {};
  this.keys.forEach(function (k) {
    ratings[k] = self.ratings[k];
  });
  var body = { idempotency_key: this.data.idempotency_key, ratings: ratings, telemetry: this.telemetry() };
  if (this.answer) body = { idempotency_key: this.data.idempotency_key, answer: this.answer.value(), telemetry: this.telemetry() };
  if (this.data.comments === "optional" || this.data.comments === "required") body.comment = this.comment().trim();
  try {
    var answer = await postWithRetry(this.data.save_url, body, this.data.csrf_token, function (text) {
      status.textContent = text;
    });
    status.textContent = t("Saved.");
    this.saved = answer;
    this.forget();
    if (answer.next_url) window.location.assign(answer.next_url);
  } catch (e) {
    this.saving = false;
    status.textContent = t("Not saved: %(reason)s", { reason: e.message });
    status.classList.add("error");
    if (this.answer) status.setAttribute("role", "alert");
    this.render();
  }
};

/** What the page shows and plays now (read by the browser tests through mushra.js's inspect event). */
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
    duration_s: e.duration,
    decoded: Object.keys(e.buffers),
    loop: { start: e.loop.start, end: e.loop.end, enabled: e.loop.enabled },
    ratings: Object.assign({}, this.ratings),
    answer: this.answer ? this.answer.value() : null,
    played: Object.assign({}, this.played),
    listen_s: this.listenTotals(),
    progress_log: this.loadLog.slice(),
    gain_db: 20 * Math.log10(this.master.gain.value),
    restored: this.restored === true,
  };
};
