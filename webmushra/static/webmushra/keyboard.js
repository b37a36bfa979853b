/*
 * The MUSHRA player's keys (listed on the page under "Keyboard shortcuts"):
 *   R the reference; 1-9, 0 signals 1-10 (play, or pause the playing one);
 *   Space play or pause; L loop on or off;
 *   Up/Right and Down/Left move the selected (or focused) signal's slider by 1,
 *   Page Up/Page Down by 10 (the first press rates an unrated slider from 50);
 *   on a focused loop handle, the arrows move that end of the loop by 0.1 s (1 s with Shift).
 *
 * An ES module with no imports; trial.js binds these to its Player.
 */

/** Listen for the player's shortcuts on the whole document. */
export function bindKeys(player) {
  document.addEventListener("keydown", function (ev) {
    onKey(player, ev);
  });
  // Space activates a focused button or checkbox on keyup; it is the play/pause shortcut here.
  document.addEventListener("keyup", function (ev) {
    var t = ev.target;
    if (ev.key === " " && t && (t.tagName === "BUTTON" || (t.tagName === "INPUT" && t.type !== "text"))) ev.preventDefault();
  });
}

/** Arrow keys on a loop handle (which: 0 the start, 1 the end) move that end of the loop. */
export function bindHandleKeys(player, handle, which) {
  handle.addEventListener("keydown", function (ev) {
    var l = player.engine.loop;
    var stepS = ev.shiftKey ? 1 : 0.1;
    var delta = { ArrowLeft: -stepS, ArrowDown: -stepS, ArrowRight: stepS, ArrowUp: stepS }[ev.key];
    if (delta === undefined) return;
    ev.preventDefault();
    ev.stopPropagation();
    if (which === 0) player.setLoop(l.start + delta, l.end, true);
    else player.setLoop(l.start, l.end + delta, true);
  });
}

function onKey(player, ev) {
  if (!player.ready || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  var t = ev.target;
  if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
  var key = ev.key;
  if (key === "r" || key === "R") {
    player.toggle("ref");
  } else if (/^[0-9]$/.test(key)) {
    var n = key === "0" ? 10 : Number(key);
    if (n > player.keys.length) return;
    player.toggle(player.keys[n - 1]);
  } else if (key === " " || key === "Spacebar") {
    player.playPause();
  } else if (key === "l" || key === "L") {
    player.setLoop(player.engine.loop.start, player.engine.loop.end, !player.engine.loop.enabled);
  } else {
    var delta = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[key];
    if (delta === undefined) return;
    var k = activeSliderKey(player, t);
    // No MUSHRA slider (a page of another paradigm): the arrows keep their own meaning.
    if (!k || !player.columns[k]) return;
    var c = player.columns[k];
    if (!c.slider.disabled) {
      var base = player.ratings[k] === null ? 50 : player.ratings[k];
      player.rate(k, base + delta, true);
    } else player.explainLocked(k);
  }
  ev.preventDefault();
}

/** The slider the arrow keys move: the focused one, else the selected signal's. */
function activeSliderKey(player, target) {
  if (target && target.classList && target.classList.contains("wm-slider")) return target.getAttribute("data-key");
  var cur = player.engine.current;
  return cur && cur !== "ref" ? cur : null;
}
