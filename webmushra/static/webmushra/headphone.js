/*
 * Headphone screening: two three-interval forced-choice tests whose sounds the server makes
 * (webmushra/headphone.py) and serves, one opaque URL per interval; the page never learns the
 * answers, and the server records each fetch (an answer to sounds never fetched counts as wrong).
 *  - "antiphase": Woods, Siegel, Traer & McDermott (2017), Atten. Percept. Psychophys.
 *    79:2064-2072: which of three 200 Hz tones is quietest (one is in antiphase between the ears).
 *  - "huggins": Milne, Bianco, Poole, Zhao, Oxenham, Billig & Chait (2021), Behav. Res. Methods
 *    53:1551-1562: which of three noises holds a faint tone (a Huggins pitch, heard only over
 *    headphones).
 *
 * Reads <script id="headphone-data" type="application/json">:
 *   {"post_url", "csrf_token", "idempotency_key"?, "trials": [{"test", "urls": [3 URLs]}],
 *    "intervals" (3), "max_plays", "gap_s", "gain_db"}
 * Each trial's intervals are fetched and decoded when its question is shown and played, in
 * order with gap_s of silence between them, through a master gain of gain_db (the level the
 * participant set on the level page). Posts
 *   {"idempotency_key"?, "answers": [{"test", "trial", "chosen", "plays", "rt_ms"}]}
 * and follows the reply's next_url, retrying the post with postWithRetry (savequeue.js).
 *
 * An ES module (<script type="module">): it starts the check when the page has the data and a
 * .hp element. Its state is read from outside (by the browser tests) as the player's is: a
 * "mushra:inspect" CustomEvent on the .hp element; detail.state() gives {index, loaded, plays,
 * gain_db} (gain_db: the master gain applied, null before Begin).
 */
import { t } from "./i18n.js";
import { fetchBytes, makeContext } from "./loader.js";
import { postWithRetry } from "./savequeue.js";

const QUESTIONS = {
  antiphase: "Which sound was the quietest: 1, 2 or 3?",
  huggins: "Which noise contained a faint tone: 1, 2 or 3?",
};

function Check(root, data) {
  this.root = root;
  this.data = data;
  this.trials = data.trials || [];
  if (!this.trials.length) throw new Error("the headphone check has no trials");
  this.maxPlays = data.max_plays || 1;
  this.gap = data.gap_s;
  this.gainDb = Number(data.gain_db) || 0;
  this.index = -1;
  this.answers = [];
  this.plays = 0;
  this.chosen = null;
  this.sounding = false;
  this.buffers = null;
  this.master = null;
  this.$ = function (sel) {
    return root.querySelector(sel);
  };
}

Check.prototype.init = function () {
  var self = this;
  this.$(".hp-begin").addEventListener("click", function () {
    if (!self.ctx) {
      // Made in the click itself: browsers let a page start sound only from a user action.
      self.ctx = makeContext(null);
      self.master = self.ctx.createGain();
      self.master.gain.value = Math.pow(10, self.gainDb / 20);
      self.master.connect(self.ctx.destination);
    }
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
  this.buffers = null;
  this.plays = 0;
  this.chosen = null;
  var count = { n: this.index + 1, total: this.trials.length };
  this.$(".hp-progress").textContent = t("Question %(n)s of %(total)s", count);
  this.$(".hp-question").textContent = t(QUESTIONS[trial.test]);
  this.render();
  this.load(this.index);
};

/** Fetch and decode one trial's intervals, one after another (the server records each fetch). */
Check.prototype.load = async function (index) {
  var status = this.$(".hp-status");
  status.textContent = t("Loading the sounds\u2026");
  var buffers = [];
  try {
    for (var i = 0; i < this.trials[index].urls.length; i++) {
      var bytes = await fetchBytes(this.trials[index].urls[i], function () {});
      var copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      buffers.push(await this.ctx.decodeAudioData(copy));
    }
  } catch (e) {
    var reason = { reason: e.message };
    status.textContent = t("The sounds could not be loaded: %(reason)s. Please reload the page.", reason);
    status.classList.add("error");
    return;
  }
  if (index !== this.index) return;
  status.textContent = "";
  this.buffers = buffers;
  this.shownAt = performance.now();
  this.render();
  this.$(".hp-play").focus();
};

/** What the check shows and plays now (read by the browser tests through the inspect event). */
Check.prototype.state = function () {
  return {
    index: this.index,
    loaded: this.buffers !== null,
    plays: this.plays,
    gain_db: this.master ? 20 * Math.log10(this.master.gain.value) : null,
  };
};

Check.prototype.render = function () {
  var self = this;
  var heard = this.plays > 0 && !this.sounding;
  this.$(".hp-play").disabled = this.buffers === null || this.sounding || this.plays >= this.maxPlays;
  Array.prototype.forEach.call(intervalButtons(this), function (btn) {
    var i = Number(btn.getAttribute("data-interval"));
    btn.disabled = !heard;
    btn.setAttribute("aria-pressed", self.chosen === i ? "true" : "false");
  });
  this.$(".hp-next").disabled = this.chosen === null || this.sounding;
};

Check.prototype.play = function () {
  if (this.buffers === null || this.sounding || this.plays >= this.maxPlays) return;
  var self = this;
  var ctx = this.ctx;
  ctx.resume();
  var start = ctx.currentTime + 0.1;
  this.plays += 1;
  this.sounding = true;
  this.render();
  var buttons = intervalButtons(this);
  var at = start;
  this.buffers.forEach(function (buffer, i) {
    var src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(self.master);
    src.start(at);
    var lead = (at - ctx.currentTime) * 1000;
    setTimeout(function () {
      buttons[i].classList.add("sounding");
    }, lead);
    setTimeout(function () {
      buttons[i].classList.remove("sounding");
    }, lead + buffer.duration * 1000);
    at += buffer.duration + (i < self.buffers.length - 1 ? self.gap : 0);
  });
  var total = (at - ctx.currentTime) * 1000;
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
  this.answers.push({
    test: t.test,
    trial: this.index + 1,
    chosen: this.chosen,
    plays: this.plays,
    rt_ms: Math.round(performance.now() - this.shownAt),
  });
  this.next();
};

Check.prototype.finish = async function () {
  this.$(".hp-task").hidden = true;
  var status = this.$(".hp-status");
  status.textContent = t("Saving\u2026");
  var body = { answers: this.answers };
  if (this.data.idempotency_key) body.idempotency_key = this.data.idempotency_key;
  try {
    var reply = await postWithRetry(this.data.post_url, body, this.data.csrf_token, function (text) {
      status.textContent = text;
    });
    status.textContent = t("Saved.");
    if (reply.next_url) window.location.assign(reply.next_url);
  } catch (e) {
    status.textContent = t("Not saved: %(reason)s", { reason: e.message });
    status.classList.add("error");
  }
};

function boot() {
  var node = document.getElementById("headphone-data");
  var root = document.querySelector(".hp");
  if (!node || !root) return;
  var check = new Check(root, JSON.parse(node.textContent));
  root.addEventListener("mushra:inspect", function (ev) {
    if (!ev.detail || typeof ev.detail !== "object") return;
    ev.detail.state = function () {
      return check.state();
    };
  });
  check.init();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
