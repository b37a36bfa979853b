/* Settings page, blocks section: move a block up or down (its order numbers follow) and add
   rows for more blocks. Without this script the plain form works the same way: order numbers,
   and one empty row per save. */
(function () {
  "use strict";

  var form = document.getElementById("blocks-form");
  if (!form || form.querySelector("fieldset[disabled]")) return;
  var total = form.querySelector("input[name='blocks-TOTAL_FORMS']");
  var save = document.getElementById("save-blocks");
  if (!total || !save) return;

  function rows() {
    return Array.prototype.slice.call(form.querySelectorAll("fieldset.block-row"));
  }

  function renumber() {
    rows().forEach(function (row, i) {
      var order = row.querySelector("input[name$='-order']");
      if (order) order.value = String(i + 1);
    });
  }

  function move(row, step, button) {
    var all = rows();
    var at = all.indexOf(row) + step;
    if (at < 0 || at >= all.length) return;
    var other = all[at];
    if (step < 0) other.parentNode.insertBefore(row, other);
    else other.parentNode.insertBefore(row, other.nextSibling);
    renumber();
    button.focus();
  }

  function addButtons(row) {
    var legend = row.querySelector("legend");
    if (!legend || legend.querySelector(".block-move")) return;
    [["Move up", -1], ["Move down", 1]].forEach(function (spec) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "linklike block-move";
      button.textContent = spec[0];
      button.addEventListener("click", function () { move(row, spec[1], button); });
      legend.appendChild(document.createTextNode(" "));
      legend.appendChild(button);
    });
  }

  /* A new empty row: a copy of the last one with the next form index and empty values. */
  function addRow() {
    var all = rows();
    var last = all[all.length - 1];
    var index = parseInt(total.value, 10);
    var row = last.cloneNode(true);
    row.id = "block-row-" + (index + 1);
    Array.prototype.forEach.call(row.querySelectorAll("[name], [id], [for], [aria-describedby]"), function (el) {
      ["name", "id", "for", "aria-describedby"].forEach(function (attr) {
        var value = el.getAttribute(attr);
        if (value) el.setAttribute(attr, value.replace(/blocks-\d+-/g, "blocks-" + index + "-"));
      });
    });
    Array.prototype.forEach.call(row.querySelectorAll(".errorlist, .block-errors"), function (el) {
      el.parentNode.removeChild(el);
    });
    row.querySelector("select[name$='-paradigm']").value = "";
    row.querySelector("textarea[name$='-instructions']").value = "";
    row.querySelector("textarea[name$='-scale']").value = "";
    row.querySelector("textarea[name$='-gold']").value = "";
    row.querySelector("textarea[name$='-de_instructions']").value = "";
    row.querySelector("textarea[name$='-de_scale']").value = "";
    row.querySelector("input[name$='-trapping']").value = "";
    row.querySelector("input[name$='-repetitions']").value = "1";
    row.querySelector("input[name$='-training']").checked = true;
    row.querySelector("input[name$='-with_reference']").checked = false;
    var remove = row.querySelector("input[name$='-remove']");
    if (remove) remove.checked = false;
    var legend = row.querySelector("legend");
    Array.prototype.forEach.call(legend.querySelectorAll(".block-move"), function (b) { legend.removeChild(b); });
    legend.textContent = "Add a block";
    last.parentNode.insertBefore(row, last.nextSibling);
    total.value = String(index + 1);
    addButtons(row);
    renumber();
    row.querySelector("select[name$='-paradigm']").focus();
  }

  rows().forEach(addButtons);
  var add = document.createElement("button");
  add.type = "button";
  add.className = "btn";
  add.id = "add-block-row";
  add.textContent = "Add another block";
  add.addEventListener("click", addRow);
  save.parentNode.insertBefore(add, save);
  save.parentNode.insertBefore(document.createTextNode(" "), save);
})();
