/*
 * The answer of a trial of a paradigm other than MUSHRA (webmushra/paradigms.py), on the page
 * _paradigm_player.html. The trial page's Player (trial.js) loads, plays (one playhead for every
 * signal, switched with short fades, looped), times, remembers and saves the trial as for
 * MUSHRA; this module draws the signals' play buttons and the paradigm's answer, and says what
 * is still missing and what the save sends:
 *
 *   bs1116   Reference (A), B, C; B and C graded 1.0-5.0 (0.1 steps) -> {grades: {b, c}}
 *   abx      A, B, X; "X is A" / "X is B"                             -> {choice: "a"|"b"}
 *   ab, abn  A, B; A or B (abn: or no preference)                     -> {choice: "a"|"b"|"none"}
 *   acr, dcr A (dcr: and the reference); one category of data.scale    -> {score: 1..n}
 *   ranking  every signal in a list, ordered by drag or by its buttons -> {ranks: {key: 1..n}}
 *
 * makeAnswer(player, data) returns the answer object the Player calls: build(strip), render(),
 * missing() (texts), value() (the save's answer; also what a reload restores), restore(value),
 * name(key) (a signal in the Player's messages: a letter, or a number for a ranking). Every
 * text comes translated from the page (.wm-texts, by data-text name) or from the trial JSON
 * (the scale's labels), or from i18n.js; no signal is ever named by its condition.
 */
import { t } from "./i18n.js";

function el(tag, attrs, text) {
  var node = document.createElement(tag);
  if (attrs) for (var k in attrs) node.setAttribute(k, attrs[k]);
  if (text !== undefined) node.textContent = text;
  return node;
}

var uid = 0;

/** The common part: the texts, the play buttons, the state the answer is kept in. */
function Answer(player, data) {
  this.player = player;
  this.data = data;
  this.keys = data.signals.map(function (s) {
    return s.key;
  });
  this.buttons = {};
  this.id = "wm-ans-" + ++uid;
  var box = player.root.querySelector(".wm-texts");
  this.text = function (name) {
    var node = box ? box.querySelector('[data-text="' + name + '"]') : null;
    return node ? node.textContent.trim() : name;
  };
}

/** A play button for a key ("ref" too), shown as `label`. */
Answer.prototype.playButton = function (key, label) {
  var player = this.player;
  var n = this.keys.indexOf(key) + 1;
  var aria =
    key === "ref"
      ? this.text("play_reference")
      : n <= 10
        ? t("Play signal %(n)s (key %(key)s)", { n: this.name(key), key: n % 10 })
        : t("Play signal %(n)s", { n: this.name(key) });
  var btn = el("button", { type: "button", class: "btn wm-play", "data-key": key, "aria-pressed": "false", "aria-label": aria });
  btn.appendChild(el("span", { class: "wm-icon", "aria-hidden": "true" }, "\u25B7"));
  btn.appendChild(el("span", { class: "wm-num" }, label));
  var status = el("span", { class: "wm-status", "aria-hidden": "true" }, this.text("not_played"));
  btn.appendChild(status);
  btn.addEventListener("click", function () {
    player.toggle(key);
  });
  this.buttons[key] = { btn: btn, status: status };
  // Training trials name the signals (the display names the server sends, never a label).
  var shown = this.data.labels && key !== "ref" ? this.data.labels[key] : "";
  if (!shown) return btn;
  var wrap = el("span", { class: "wm-play-named" });
  wrap.appendChild(btn);
  wrap.appendChild(el("span", { class: "wm-label" }, shown));
  return wrap;
};

/** The row of play buttons: the reference first when the trial has one, then the signals. */
Answer.prototype.playRow = function (strip, refLabel) {
  var self = this;
  var row = el("div", { class: "wm-plays", role: "group" });
  if (this.data.reference) row.appendChild(this.playButton("ref", refLabel || this.text("reference")));
  this.keys.forEach(function (k) {
    row.appendChild(self.playButton(k, self.label(k)));
  });
  strip.appendChild(row);
  return row;
};

Answer.prototype.renderButtons = function () {
  var p = this.player;
  var e = p.engine;
  for (var k in this.buttons) {
    var b = this.buttons[k];
    var playing = e.playing && e.current === k;
    b.btn.setAttribute("aria-pressed", playing ? "true" : "false");
    b.btn.classList.toggle("playing", playing);
    b.btn.classList.toggle("selected", e.current === k);
    b.btn.classList.toggle("played", p.played[k] === true);
    b.btn.querySelector(".wm-icon").textContent = playing ? "\u275A\u275A" : p.played[k] ? "\u2713" : "\u25B7";
    b.status.textContent = this.text(p.played[k] ? "played" : "not_played");
  }
};

Answer.prototype.name = function (key) {
  return key.toUpperCase();
};

Answer.prototype.label = function (key) {
  return this.name(key);
};

Answer.prototype.changed = function () {
  this.player.render();
};

/** A group of radio buttons; onPick(value) when one is chosen. Returns {inputs, set(value)}. */
Answer.prototype.radios = function (strip, legend, options, onPick) {
  var self = this;
  var set = el("fieldset", { class: "wm-choice" });
  set.appendChild(el("legend", null, legend));
  var inputs = [];
  options.forEach(function (o, i) {
    var id = self.id + "-" + i;
    var label = el("label", { class: "wm-option", for: id });
    var input = el("input", { type: "radio", id: id, name: self.id, value: String(o.value) });
    input.addEventListener("change", function () {
      if (input.checked) onPick(o.value);
    });
    label.appendChild(input);
    label.appendChild(el("span", null, o.label));
    set.appendChild(label);
    inputs.push(input);
  });
  strip.appendChild(set);
  return {
    set: function (value) {
      inputs.forEach(function (input) {
        input.checked = value !== null && input.value === String(value);
      });
    },
  };
};

// ---------------------------------------------------------------------------- the paradigms

/** ITU-R BS.1116-3: A the open reference; B and C graded on the 1.0-5.0 impairment scale. */
function bs1116(a, strip) {
  var scale = a.data.scale || [];
  a.grades = { b: null, c: null };
  a.playRow(strip, a.text("reference_a"));
  var box = el("div", { class: "wm-grades" });
  var labelOf = function (g) {
    var best = null;
    scale.forEach(function (s) {
      if (best === null || Math.abs(s.value - g) < Math.abs(best.value - g)) best = s;
    });
    return best ? best.label : "";
  };
  var rows = {};
  ["b", "c"].forEach(function (k) {
    var id = a.id + "-" + k;
    var row = el("div", { class: "wm-grade-row" });
    row.appendChild(el("label", { for: id, class: "wm-grade-label" }, a.text("grade_of") + " " + a.name(k)));
    var input = el("input", { type: "range", id: id, class: "wm-grade unrated", min: "1", max: "5", step: "0.1", value: "3" });
    input.setAttribute("aria-valuetext", a.text("not_graded"));
    var out = el("output", { for: id, class: "wm-grade-value" }, "\u2013");
    var touched = false;
    var take = function () {
      a.grades[k] = Math.round(Number(input.value) * 10) / 10;
      a.changed();
    };
    input.addEventListener("input", take);
    input.addEventListener("change", take);
    input.addEventListener("pointerdown", function () {
      touched = true;
    });
    input.addEventListener("pointerup", function () {
      if (touched && a.grades[k] === null) take();
      touched = false;
    });
    row.appendChild(input);
    row.appendChild(out);
    box.appendChild(row);
    rows[k] = { input: input, out: out };
  });
  var legend = el("ul", { class: "wm-legend", "aria-label": a.text("scale") });
  scale
    .slice()
    .reverse()
    .forEach(function (s) {
      var item = el("li");
      item.appendChild(el("span", { class: "wm-legend-value" }, Number(s.value).toFixed(1)));
      item.appendChild(el("span", null, " " + s.label));
      legend.appendChild(item);
    });
  box.appendChild(legend);
  strip.appendChild(box);
  a.value = function () {
    return { grades: { b: a.grades.b, c: a.grades.c } };
  };
  a.missing = function () {
    var need = ["b", "c"].filter(function (k) {
      return a.grades[k] === null;
    });
    if (!need.length) return [];
    return [a.text(need.length === 2 ? "need_b_c" : "need_" + need[0])];
  };
  a.restore = function (v) {
    var g = v && v.grades;
    if (!g) return;
    ["b", "c"].forEach(function (k) {
      if (typeof g[k] === "number" && g[k] >= 1 && g[k] <= 5) {
        a.grades[k] = Math.round(g[k] * 10) / 10;
        rows[k].input.value = String(a.grades[k]);
      }
    });
  };
  a.render = function () {
    a.renderButtons();
    ["b", "c"].forEach(function (k) {
      var g = a.grades[k];
      var r = rows[k];
      r.input.classList.toggle("unrated", g === null);
      r.out.textContent = g === null ? "\u2013" : g.toFixed(1);
      r.input.setAttribute("aria-valuetext", g === null ? a.text("not_graded") : g.toFixed(1) + ", " + labelOf(g));
    });
  };
}

/** One choice among options ({value, label}); the answer is {<field>: value}. */
function choiceAnswer(a, strip, legend, options, field) {
  a.choice = null;
  var group = a.radios(strip, legend, options, function (value) {
    a.choice = value;
    a.changed();
  });
  a.value = function () {
    var out = {};
    out[field] = a.choice;
    return out;
  };
  a.missing = function () {
    return a.choice === null ? [a.text("need_choice")] : [];
  };
  a.restore = function (v) {
    var got = v ? v[field] : undefined;
    if (
      options.some(function (o) {
        return o.value === got;
      })
    ) {
      a.choice = got;
      group.set(got);
    }
  };
  a.render = function () {
    a.renderButtons();
  };
}

/** ABX: X is A or B. */
function abx(a, strip) {
  a.playRow(strip);
  var options = [
    { value: "a", label: a.text("x_is_a") },
    { value: "b", label: a.text("x_is_b") },
  ];
  choiceAnswer(a, strip, a.text("which_x"), options, "choice");
}

/** AB preference (ABN: with no preference). */
function ab(a, strip) {
  a.playRow(strip);
  var options = [
    { value: "a", label: "A" },
    { value: "b", label: "B" },
  ];
  if (a.data.paradigm === "abn") options.push({ value: "none", label: a.text("none") });
  choiceAnswer(a, strip, a.text("prefer"), options, "choice");
}

/** ITU-T P.800 ACR (one signal) and DCR (against the open reference): the scale's categories (P.800's five or an ACR block's own), best first. */
function category(a, strip) {
  a.playRow(strip);
  var options = (a.data.scale || [])
    .map(function (s) {
      return { value: Number(s.value), label: s.label };
    })
    .reverse();
  var legend = a.text(a.data.paradigm === "dcr" ? "degradation" : "quality");
  choiceAnswer(a, strip, legend, options, "score");
}

/** Ranking: every signal in a list, best first; reordered by dragging a row or by its buttons. */
function ranking(a, strip) {
  var player = a.player;
  a.order = a.keys.slice();
  a.name = function (key) {
    return String(a.keys.indexOf(key) + 1);
  };
  a.label = function (key) {
    return t("Signal %(n)s", { n: a.name(key) });
  };
  var heading = el("p", { class: "wm-rank-heading", id: a.id + "-h" }, a.text("order"));
  strip.appendChild(heading);
  var list = el("ol", { class: "wm-rank-list", "aria-labelledby": a.id + "-h" });
  var rows = {};
  a.keys.forEach(function (k) {
    var row = el("li", { class: "wm-rank-row", "data-key": k });
    var num = el("span", { class: "wm-rank-num" });
    var grip = el("span", { class: "wm-grip", title: a.text("drag"), "aria-hidden": "true" }, "\u2630");
    var up = el("button", { type: "button", class: "btn wm-up", "aria-label": a.text("move_up") + ": " + a.label(k) }, "\u25B2");
    var down = el("button", { type: "button", class: "btn wm-down", "aria-label": a.text("move_down") + ": " + a.label(k) }, "\u25BC");
    up.addEventListener("click", function () {
      move(k, -1, up, down);
    });
    down.addEventListener("click", function () {
      move(k, 1, down, up);
    });
    row.appendChild(num);
    row.appendChild(grip);
    row.appendChild(a.playButton(k, a.label(k)));
    var moves = el("span", { class: "wm-moves" });
    moves.appendChild(up);
    moves.appendChild(down);
    row.appendChild(moves);
    rows[k] = { row: row, num: num, up: up, down: down };
    dragging(row, grip, k);
    list.appendChild(row);
  });
  strip.appendChild(list);

  var place = function () {
    a.order.forEach(function (k) {
      list.appendChild(rows[k].row);
    });
  };
  var announce = function (k) {
    player.showHint(null, a.label(k) + ": " + a.text("rank") + " " + (a.order.indexOf(k) + 1));
  };
  function move(k, delta, pressed, other) {
    var i = a.order.indexOf(k);
    var j = i + delta;
    if (j < 0 || j >= a.order.length) return;
    a.order.splice(i, 1);
    a.order.splice(j, 0, k);
    place();
    a.render();
    // Moving the row takes the focus off its button in some engines: give it back (to the
    // other button once the row reached the end of the list).
    (pressed.getAttribute("aria-disabled") === "true" ? other : pressed).focus();
    announce(k);
    a.changed();
  }
  function dragging(row, grip, k) {
    // Followed on the window, not by pointer capture: re-placing the rows moves this one in
    // the document, which would release a capture (and lose the pointerup).
    var follow = function (ev) {
      var others = a.order.filter(function (o) {
        return o !== k;
      });
      var at = 0;
      others.forEach(function (o) {
        var r = rows[o].row.getBoundingClientRect();
        if (ev.clientY > r.top + r.height / 2) at += 1;
      });
      if (a.order.indexOf(k) !== at) {
        others.splice(at, 0, k);
        a.order = others;
        place();
        a.render();
      }
    };
    var release = function () {
      window.removeEventListener("pointermove", follow);
      window.removeEventListener("pointerup", release);
      window.removeEventListener("pointercancel", release);
      row.classList.remove("dragging");
      announce(k);
      a.changed();
    };
    grip.addEventListener("pointerdown", function (ev) {
      ev.preventDefault();
      row.classList.add("dragging");
      window.addEventListener("pointermove", follow);
      window.addEventListener("pointerup", release);
      window.addEventListener("pointercancel", release);
    });
  }
  a.value = function () {
    var ranks = {};
    a.order.forEach(function (k, i) {
      ranks[k] = i + 1;
    });
    return { ranks: ranks };
  };
  a.missing = function () {
    return [];
  };
  a.restore = function (v) {
    var r = v && v.ranks;
    if (!r) return;
    var ok =
      a.keys.every(function (k) {
        return typeof r[k] === "number";
      }) && Object.keys(r).length === a.keys.length;
    if (!ok) return;
    a.order = a.keys.slice().sort(function (x, y) {
      return r[x] - r[y];
    });
    place();
  };
  a.render = function () {
    a.renderButtons();
    a.order.forEach(function (k, i) {
      var r = rows[k];
      r.num.textContent = String(i + 1);
      r.row.setAttribute("aria-label", a.text("rank") + " " + (i + 1) + ": " + a.label(k));
      r.up.setAttribute("aria-disabled", i === 0 ? "true" : "false");
      r.down.setAttribute("aria-disabled", i === a.order.length - 1 ? "true" : "false");
    });
  };
}

/** One renderer per paradigm: renderer(answer, strip) fills in the answer's methods. */
export var RENDERERS = { bs1116: bs1116, abx: abx, ab: ab, abn: ab, acr: category, dcr: category, ranking: ranking };

export function makeAnswer(player, data) {
  var render = RENDERERS[data.paradigm];
  if (!render) throw new Error("unknown paradigm " + data.paradigm);
  var a = new Answer(player, data);
  a.build = function (strip) {
    render(a, strip);
  };
  return a;
}
