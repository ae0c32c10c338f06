// MathJax 2 (bundled with the site, see docs/hooks/mathjax.py) for pymdownx.arithmatex's
// generic output: \( \) inline and \[ \] display math inside elements of class "arithmatex".
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    ignoreClass: ".*|",
    processClass: "arithmatex"
  },
  // the bundled MathJax carries the STIX-Web fonts only (as Jupyter's)
  "HTML-CSS": { availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null },
  SVG: { font: "STIX-Web" },
  messageStyle: "none",
  showMathMenu: false
};
