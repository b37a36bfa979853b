/*
 * The participant pages' texts in the participant's language. The page carries the
 * translations of every text the scripts show (webmushra/i18n.py JS_STRINGS) as data:
 * <script id="wm-i18n" type="application/json">{"English text": "translation", ...}</script>
 * (written by the js_catalog template tag; empty in English). t(text, values) returns the
 * translation of the English text, or the text itself when there is none, with every
 * %(name)s replaced by values[name].
 *
 * An ES module with no imports and no globals.
 */

var catalog = null;

function load() {
  if (catalog === null) {
    catalog = {};
    var node = typeof document !== "undefined" ? document.getElementById("wm-i18n") : null;
    if (node) {
      try {
        catalog = JSON.parse(node.textContent) || {};
      } catch (e) {
        catalog = {};
      }
    }
  }
  return catalog;
}

export function t(text, values) {
  var found = load()[text];
  var out = typeof found === "string" && found ? found : text;
  if (!values) return out;
  return out.replace(/%\((\w+)\)s/g, function (whole, name) {
    return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole;
  });
}
