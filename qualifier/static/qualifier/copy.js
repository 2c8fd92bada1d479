// A "Copy" button copies the text of the element its data-copy names (the new API token).
// Without clipboard access (a page served over plain HTTP from another host), the text is
// selected instead, ready for Ctrl-C.
(function () {
  "use strict";

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    select(source);
    if (!navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
    }, function () { /* selected above: the user copies by hand */ });
  });
})();
