// Written for this book (not vendored). Loaded after require.js and before embed-amd.js on
// every page with widgets (see nb_ipywidgets_js in _config.yml and _vendor/README.md).
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) return;
  // This folder, as an absolute URL (the ?v= checksum Sphinx appends is dropped).
  var here = new URL(".", script.src).href;

  // 1. The widget CSS (Font Awesome, for icons on buttons) loads its fonts relative to
  //    webpack's public path. html-manager derives that path from where RequireJS would load
  //    its module from (by default the page's own folder, where nothing is) unless
  //    __jupyter_widgets_assets_path__ is set. Point both at this folder, which holds the fonts.
  window.__jupyter_widgets_assets_path__ = here;
  if (window.requirejs && window.requirejs.config) {
    window.requirejs.config({ paths: { "@jupyter-widgets/html-manager/dist": here.replace(/\/$/, "") } });
  }

  // 2. html-manager typesets widget descriptions and HTML widgets with the MathJax 2 API
  //    (MathJax.Hub.Queue) whenever window.MathJax exists; the book loads MathJax 3, which has
  //    no Hub, so every widget label threw a TypeError. Give MathJax 3 a Hub.Queue that
  //    typesets the element with MathJax 3 (a no-op where MathJax itself is not loaded).
  //    DOMContentLoaded comes after MathJax's deferred script and before the widgets render.
  document.addEventListener("DOMContentLoaded", function () {
    var M = window.MathJax;
    if (!M || M.Hub) return;
    M.Hub = {
      Queue: function (job) {
        var el = job && job[2];
        if (!M.typesetPromise || !M.startup) return;
        M.startup.promise
          .then(function () { return M.typesetPromise(el ? [el] : undefined); })
          .catch(function (err) { console.warn("MathJax could not typeset a widget:", err); });
      },
    };
  });
})();
