#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

    python tests/browser_check.py [_build/html] [--screenshots DIR] [--full-page]

Run after the book is built (``make test`` does). For each HTML page it fails on

- a visible Python traceback or error output: a cell output of class ``traceback``/``error``,
  a ``stderr`` output that names an error or warning, "Traceback (most recent call last)" in
  any output (widget outputs included), or a Sphinx ``system-message`` left in the page;
- a missing image: an ``<img>`` whose local file does not exist or that failed to load;
- a broken internal link: an ``href`` to a local file that does not exist, or to an
  ``#anchor`` that the target page does not define;
- a widget that did not render: a widget view with no rendered controls after the page's
  JavaScript ran, or whose output areas are all empty;
- math that did not render (MathJax left ``\\(...\\)`` as text, or reported an error);
- a clipped table: a table wider than the box that holds it where that box (or the table
  itself) hides its overflow, or a table that runs past the page's right edge; a table that
  scrolls sideways in a scrolling box is readable and only noted;
- a table cell whose content is wider than the cell (the text is cut, or runs into the next cell);
- code that scrolls horizontally: a ``div.highlight pre`` (code blocks, cell inputs, stream and
  text outputs) or a cell input/output area whose content is more than a few pixels wider
  than its box, at the 1280 px window (about 77 characters of code); collapsed ``hide-input``
  cells are opened to be measured;
- a chapter whose first output ("Where this page's numbers came from") says that nothing was
  trained, computed or loaded (the count as the page started, not its final one);
- a local file the page asks for that is missing, or any request to the network: every
  ``http(s)`` request is blocked and reported, so the book is checked as it reads offline;
- an explorer (revlib.book.explore.FrameExplorer) that does not move: each of its sliders is moved
  to its other end, and the figure it shows must change to a frame that loaded;
- at phone width (390 CSS px, a mobile viewport): a page that scrolls sideways as a whole, a table
  or figure cut off by a box that hides its overflow, a figure shown smaller than on the desktop
  page (its text would be smaller; figures keep their size and scroll in their own box), or an
  explorer slider narrower than 100 px.

It saves a screenshot of every page at 1280x2000 CSS pixels to ``_build/screenshots/`` (the
page's path with ``.png``) and at 390x844 to ``_build/screenshots/390/``, prints one line per page
and a final "N passed, M failed" line, and exits 1 if any page failed.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (standard
library only, no websocket client). Where no Chromium is installed the check is skipped with
exit status 0, except when the environment says ``CI=true``: in CI it always runs.

This file is not collected by pytest (its name does not start with ``test_``).
"""
from __future__ import annotations

import argparse
import base64
import html.parser
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The flags from TOOLCHAIN.md: headless, no sandbox (containers, root), nothing in the
# background that could reach the network.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio", "--window-size=1280,2000",
]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1280, 2000
PHONE_WIDTH, PHONE_HEIGHT = 390, 844
# JavaScript errors that are known and harmless, with the reason; any other uncaught error fails.
KNOWN_JS_ERRORS = {
    # sphinx-thebe 0.3.1 (under Sphinx 7.4 / Jupyter Book 1) writes its inline configuration
    # script into every page twice; the second copy's `const` declarations throw, the first
    # copy has already defined them, and the launch buttons work.
    "Identifier 'THEBE_JS_URL' has already been declared",
}
# Folders of the build that hold assets, not pages.
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads", "jupyter-widgets", "mathjax", "requirejs"}

# How many CSS pixels content may stick out of its box before it counts as cut or scrolling
# (sub-pixel rounding, a focus ring, a bold glyph's overhang).
LAYOUT_TOLERANCE_PX = 4
# Code a reader must not have to scroll sideways: code blocks, notebook cell inputs and outputs.
CODE_SELECTOR = "div.highlight pre, div.cell_input, div.cell_output, div.cell_output .output"

# Part of PROBE_JS: checkLayout() measures the page as laid out at 1280 px and returns
# {failures, notes}, each a list of strings that say which element (and where) is wrong:
# - a table cut off: its own overflow, or that of the nearest ancestor that does not let
#   overflow show, is hidden/clip and the table is wider than that box; or, with no such
#   ancestor, the table runs past the page's right edge;
# - a table cell whose content is wider than the cell (its text is cut or runs into the next cell);
# - code that scrolls sideways: an element matching CODE_SELECTOR whose scrollWidth exceeds its
#   clientWidth (only the innermost such element is reported).
# A table that scrolls sideways in a scrolling box of its own is readable: a note, not a failure.
# Collapsed <details> (hide-input cells) are opened while measuring, then closed again.
LAYOUT_JS = r"""
function checkLayout() {
  const TOL = %(tol)d, CODE = %(code)s;
  const failures = [], notes = [];
  const clips = v => v === 'hidden' || v === 'clip';
  const scrolls = v => v === 'auto' || v === 'scroll';
  const snippet = el => {
    const t = (el.innerText || el.textContent || '').split('\n').map(s => s.replace(/\s+/g, ' ').trim()).find(s => s) || '';
    return t.length > 48 ? t.slice(0, 47) + '…' : t;
  };
  const NOISE = /^(docutils|container|notranslate|highlight-[\w-]+|tex2jax_ignore|mathjax_ignore)$/;
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    [...el.classList].filter(c => !NOISE.test(c)).slice(0, 2).map(c => '.' + c).join('');
  const cells = [...document.querySelectorAll('div.cell')];
  // Where an element is: "cell 3 input in #section" (cells numbered as shown on the page), or
  // just the section outside cells; then the first line of its text.
  const where = el => {
    const cell = el.closest('div.cell'), sec = el.closest('section[id]'), d = el.closest('details');
    const part = el.closest('div.cell_input') ? ' input' : el.closest('div.cell_output') ? ' output' : '';
    const at = [cell ? `cell ${cells.indexOf(cell) + 1}${part}` : '', sec ? '#' + sec.id : ''].filter(x => x).join(' in ');
    const bits = [at, d && closed.includes(d) ? 'collapsed on the page' : ''];
    const s = snippet(el);
    if (s) bits.push(JSON.stringify(s));
    return bits.filter(x => x).join(', ');
  };
  const px = v => Math.round(v) + ' px';

  const closed = [...document.querySelectorAll('details:not([open])')];
  closed.forEach(d => { d.open = true; });
  try {
    // (a) tables cut off by a box that hides overflow, or running off the page
    for (const table of document.querySelectorAll('table')) {
      if (!table.clientWidth && !table.getBoundingClientRect().width) continue;
      const ts = getComputedStyle(table);
      const tr = table.getBoundingClientRect();
      const name = `${describe(table)} (${where(table)})`;
      if (clips(ts.overflowX) && table.scrollWidth > table.clientWidth + TOL) {
        failures.push(`clipped table: ${name} hides ${px(table.scrollWidth - table.clientWidth)} of its ${px(table.scrollWidth)} (its overflow is ${ts.overflowX})`);
        continue;
      }
      if (scrolls(ts.overflowX)) {
        if (table.scrollWidth > table.clientWidth + TOL)
          notes.push(`table scrolls sideways: ${name}, ${px(table.scrollWidth)} in a ${px(table.clientWidth)} box`);
        continue;
      }
      let a = table.parentElement;
      for (; a; a = a.parentElement) {
        const s = getComputedStyle(a);
        if (s.overflowX === 'visible') continue;
        const left = a.getBoundingClientRect().left + a.clientLeft, right = left + a.clientWidth;
        const out = Math.max(tr.right - right, left - tr.left);
        if (out > TOL) {
          if (clips(s.overflowX))
            failures.push(`clipped table: ${name} is ${px(tr.width)} wide; ${describe(a)} (overflow ${s.overflowX}) shows ${px(a.clientWidth)} and cuts ${px(out)}`);
          else if (!a.matches(CODE)) // a cell output that scrolls is reported below, as code
            notes.push(`table scrolls sideways: ${name}, ${px(tr.width)} in ${describe(a)} (${px(a.clientWidth)})`);
        }
        break;
      }
      if (!a) {
        const page = document.documentElement.clientWidth;
        if (tr.right > page + TOL)
          failures.push(`clipped table: ${name} runs ${px(tr.right - page)} past the right edge of the page`);
      }
    }
    // (a) table cells whose content does not fit their box
    for (const cell of document.querySelectorAll('td, th')) {
      if (!cell.clientWidth) continue;
      const over = cell.scrollWidth - cell.clientWidth;
      if (over <= TOL) continue;
      const s = getComputedStyle(cell);
      const row = cell.parentElement, table = cell.closest('table');
      const pos = `row ${[...table.rows].indexOf(row) + 1}, column ${[...row.cells].indexOf(cell) + 1} of ${describe(table)}`;
      const how = clips(s.overflowX) ? `cut (overflow ${s.overflowX})` : scrolls(s.overflowX) ? 'scrolls inside the cell' : 'runs into the next cell';
      failures.push(`table cell text cut: ${cell.tagName.toLowerCase()} (${pos}; ${where(cell)}) needs ${px(cell.scrollWidth)}, has ${px(cell.clientWidth)}: ${how}`);
    }
    // (b) code blocks and cell inputs/outputs that scroll sideways
    const wide = [...document.querySelectorAll(CODE)].filter(el => el.clientWidth && el.scrollWidth - el.clientWidth > TOL);
    for (const el of wide) {
      if (wide.some(o => o !== el && el.contains(o))) continue;  // report the innermost only
      const kind = el.closest('div.cell') ? 'code cell' : 'code block';
      failures.push(`${kind} scrolls horizontally: ${describe(el)} (${where(el)}) is ${px(el.scrollWidth)} wide in a ${px(el.clientWidth)} box`);
    }
  } finally {
    closed.forEach(d => { d.open = false; });
  }
  return {failures, notes};
}
""" % {"tol": LAYOUT_TOLERANCE_PX, "code": json.dumps(CODE_SELECTOR)}

# Runs inside each page after its load event: waits (up to budget ms) until every widget view
# and every formula has rendered, then reports what the page shows. Returns a JSON string.
PROBE_JS = r"""
(async (budget) => {
""" + LAYOUT_JS + r"""
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = Date.now() + budget;
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const hasState = !!document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  // html-manager renders each view into a div.widget-subarea inserted just before its script.
  const subareaOf = s => {
    const el = s.previousElementSibling;
    return el && el.classList.contains('widget-subarea') ? el : null;
  };
  const CONTROLS = 'input, select, button, textarea, [role="slider"], .noUi-handle, .slider';
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const rendered = s => { const a = subareaOf(s); return !!(a && a.children.length && visible(a)); };
  const outputsOf = s => { const a = subareaOf(s); return a ? [...a.querySelectorAll('.widget-output')] : []; };
  const filled = o => !!o.querySelector('img, svg, canvas, table, pre, .jp-RenderedText, .jp-RenderedHTMLCommon') && visible(o);
  // A widget is ready once it rendered and, if it has output areas, one of them shows something.
  const ready = s => rendered(s) && (outputsOf(s).length === 0 || outputsOf(s).some(filled));
  const maths = () => [...document.querySelectorAll('.math')];
  const mathDone = () => maths().every(m => m.querySelector('mjx-container'));
  while (Date.now() < deadline) {
    if (views.every(ready) && mathDone()) break;
    await sleep(100);
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise.catch(() => null), sleep(Math.max(0, deadline - Date.now()))]);
  }
  // Images, widget outputs' included; lazy ones load only near the viewport, so ask for all now.
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 3000);
  })));

  const text = el => (el.innerText || el.textContent || '').trim();
  const errors = [], notes = [];
  const ERRORISH = /Traceback \(most recent call last\)|\b\w*(Error|Exception|Warning)\b/;
  for (const el of document.querySelectorAll('.cell_output .output, .cell_output [data-mime-type], .widget-subarea [data-mime-type]')) {
    const cls = (el.className || '') + ' ' + (el.getAttribute('data-mime-type') || '');
    const t = text(el);
    if (/traceback|\berror\b/.test(cls)) errors.push('error output: ' + t.slice(0, 200));
    else if (/stderr/.test(cls)) {
      if (ERRORISH.test(t)) errors.push('stderr output: ' + t.slice(0, 200));
      else if (t) notes.push('stderr output (not an error): ' + t.slice(0, 80));
    }
  }
  for (const el of document.querySelectorAll('.cell_output, .widget-subarea, .output')) {
    if (text(el).includes('Traceback (most recent call last)')) {
      errors.push('traceback text in an output: ' + text(el).slice(0, 200)); break;
    }
  }
  for (const el of document.querySelectorAll('.system-message')) errors.push('Sphinx system message: ' + text(el).slice(0, 200));

  const widgets = views.map((s, k) => {
    const a = subareaOf(s);
    return {
      index: k,
      rendered: rendered(s),
      controls: a ? [...a.querySelectorAll(CONTROLS)].filter(visible).length : 0,
      outputs: outputsOf(s).length,
      nonempty_outputs: outputsOf(s).filter(filled).length,
    };
  });
  // Explorers: move every slider to its other end; the shown frame must change and have loaded.
  const explorers = [];
  for (const ex of document.querySelectorAll('.revlib-explorer')) {
    const shown = () => [...ex.querySelectorAll('img[data-frame]')].find(i => !i.hidden);
    const report = {id: ex.id, sliders: 0, moved: 0, problems: []};
    const first = shown();
    if (!first) report.problems.push('shows no frame');
    for (const input of ex.querySelectorAll('input[type=range]')) {
      report.sliders += 1;
      const before = shown(), old = input.value;
      input.value = input.value === input.max ? input.min : input.max;
      input.dispatchEvent(new Event('input', {bubbles: true}));
      await sleep(50);
      const after = shown();
      if (!after || after === before) report.problems.push(`slider "${input.getAttribute('aria-label')}" did not change the figure`);
      else if (!(after.complete && after.naturalWidth > 0)) report.problems.push(`slider "${input.getAttribute('aria-label')}" shows a frame that did not load`);
      else report.moved += 1;
      input.value = old;
      input.dispatchEvent(new Event('input', {bubbles: true}));
    }
    if (!report.sliders) report.problems.push('has no slider');
    explorers.push(report);
  }
  const figureWidths = [...document.querySelectorAll('div.cell_output img, figure img, .revlib-explorer-frames img')]
    .map(i => Math.round(i.getBoundingClientRect().width));
  const layout = checkLayout();
  const mathEls = maths();
  return JSON.stringify({
    layout,
    explorers,
    figure_widths: figureWidths,
    provenance: (document.querySelector('.revlib-provenance') || {}).textContent || null,
    title: document.title,
    has_widget_state: hasState,
    widgets,
    math_total: mathEls.length,
    math_rendered: mathEls.filter(m => m.querySelector('mjx-container')).length,
    math_errors: [...document.querySelectorAll('mjx-merror, .mjx-merror')].map(text).slice(0, 5),
    images: imgs.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.getAttribute('name')),
    errors, notes,
  });
})
"""


# Runs at phone width, after the viewport changed: what a reader of a 390-px screen would find cut
# off, shrunk or too narrow to use. ``desktop`` holds the figures' widths at 1280 px, in order.
PHONE_JS = r"""
((desktop) => {
  const TOL = %(tol)d;
  const failures = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + TOL)
    failures.push(`the page scrolls sideways at phone width: ${page.scrollWidth} px in ${page.clientWidth}`);
  const clipped = el => {
    for (let a = el.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflowX === 'visible') continue;
      const r = el.getBoundingClientRect(), b = a.getBoundingClientRect();
      const out = Math.max(r.right - (b.left + a.clientLeft + a.clientWidth), b.left - r.left);
      return (s.overflowX === 'hidden' || s.overflowX === 'clip') && out > TOL ? a : null;
    }
    return null;
  };
  const imgs = [...document.querySelectorAll('div.cell_output img, figure img, .revlib-explorer-frames img')];
  imgs.forEach((img, k) => {
    const w = Math.round(img.getBoundingClientRect().width);
    if (!w) return;  // a hidden explorer frame
    const box = clipped(img);
    if (box) failures.push(`figure cut off at phone width: ${img.alt.slice(0, 60) || img.src.slice(-40)} by ${box.tagName.toLowerCase()}.${[...box.classList].join('.')}`);
    if (k < desktop.length && desktop[k] && w < desktop[k] - TOL)
      failures.push(`figure shrinks at phone width (${w} px, ${desktop[k]} px on the desktop page): its text would be smaller: ${img.alt.slice(0, 60)}`);
  });
  for (const table of document.querySelectorAll('table')) {
    const box = clipped(table);
    if (box) failures.push(`table cut off at phone width by ${box.tagName.toLowerCase()}`);
  }
  for (const input of document.querySelectorAll('.revlib-explorer input[type=range]')) {
    const w = input.getBoundingClientRect().width;
    if (w < 100) failures.push(`explorer slider "${input.getAttribute('aria-label')}" is ${Math.round(w)} px wide at phone width`);
  }
  return JSON.stringify({failures});
})
""" % {"tol": LAYOUT_TOLERANCE_PX}


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium driven over --remote-debugging-pipe: JSON messages, NUL-terminated,
    written to the browser's fd 3 and read from its fd 4."""

    def __init__(self, exe: str, log_path: Path):
        self.profile = tempfile.mkdtemp(prefix="browser-check-")
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        res_r, res_w = os.pipe()  # Chromium writes replies and events on fd 4; we read them

        def wire_fds():  # runs in the child between fork and exec
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)  # dup2 leaves 3 and 4 inheritable; os.pipe()'s own fds are not

        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            preexec_fn=wire_fds, close_fds=False,
        )
        os.close(cmd_r)
        os.close(res_w)
        self.out = cmd_w
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, args=(res_r,), daemon=True).start()

    def _read(self, fd: int) -> None:
        buf = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.messages.put(None)  # the browser is gone
                return
            buf += chunk
            *whole, buf = buf.split(b"\0")
            for raw in whole:
                self.messages.put(json.loads(raw))

    def _next(self, deadline: float) -> dict:
        try:
            msg = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if msg is None:
            raise CDPError("Chromium exited")
        return msg

    def send(self, method: str, session: str | None = None, **params) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.out, data):]
        return self.next_id

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        """Send a command and wait for its reply; events that arrive meanwhile are kept."""
        want = self.send(method, session, **params)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for k, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(k)
        while True:
            msg = self._next(deadline)
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)

    def drain(self) -> list[dict]:
        """Every event received so far (reading what is already waiting), emptying the list."""
        while True:
            try:
                msg = self.messages.get_nowait()
            except queue.Empty:
                break
            if msg is not None and "method" in msg:
                self.events.append(msg)
        out, self.events = self.events, []
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        os.close(self.out)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class PageResult:
    page: str
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""


class _Ids(html.parser.HTMLParser):
    """Collects the anchors a page defines (id and a[name]) and a meta-refresh target."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url=(.+)", a.get("content") or "", re.I)
            self.refresh = m.group(1).strip().strip("'\"") if m else None


_parsed: dict[Path, _Ids] = {}


def parse(path: Path) -> _Ids:
    if path not in _parsed:
        p = _Ids()
        p.feed(path.read_text(encoding="utf-8", errors="replace"))
        _parsed[path] = p
    return _parsed[path]


def local_path(url: str) -> tuple[Path, str] | None:
    """(file path, fragment) for a file:// URL, None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)), unquote(parts.fragment)


def check_link(url: str, page: Path, root: Path, live_ids: set[str]) -> str | None:
    loc = local_path(url)
    if loc is None:
        return None  # external links are not followed: the check runs offline
    path, frag = loc
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return f"link leaves the built site: {url}"
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        return f"broken link: {path.relative_to(root) if path.is_relative_to(root) else path}"
    if frag and path.suffix == ".html":
        ids = parse(path).ids | (live_ids if path == page else set())
        if frag not in ids:
            return f"missing anchor: {path.relative_to(root)}#{frag}"
    return None


def check_page(browser: Chromium, session: str, page: Path, root: Path, shots: Path,
               budget_s: float, full_page: bool) -> PageResult:
    rel = page.relative_to(root).as_posix()
    res = PageResult(rel)
    t0 = time.monotonic()

    refresh = parse(page).refresh
    if refresh is not None:  # Sphinx's index.html: a redirect stub with no content of its own
        err = check_link((page.parent / refresh).resolve().as_uri(), page, root, set())
        res.failures += [err] if err else []
        res.summary = f"redirect to {refresh}"
        res.seconds = time.monotonic() - t0
        return res

    browser.drain()
    browser.call("Page.navigate", session, url=page.resolve().as_uri())
    browser.wait_event("Page.loadEventFired", timeout=budget_s + 15)
    reply = browser.call("Runtime.evaluate", session, timeout=budget_s + 30,
                         expression=f"{PROBE_JS}({int(budget_s * 1000)})",
                         awaitPromise=True, returnByValue=True)
    if "exceptionDetails" in reply:
        raise CDPError(f"probe failed: {reply['exceptionDetails'].get('text')}")
    info = json.loads(reply["result"]["value"])

    shot = shots / (rel[: -len(".html")] + ".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    if full_page:  # a viewport as tall as the page, then back to 1280x2000 for the next page
        h = browser.call("Runtime.evaluate", session, expression="document.documentElement.scrollHeight",
                         returnByValue=True)["result"]["value"]
        set_viewport(browser, session, HEIGHT if h < HEIGHT else min(h, 16000))
        time.sleep(0.5)
    try:
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", session, format="png")["data"]))
    finally:
        if full_page:
            set_viewport(browser, session, HEIGHT)

    # The same page at phone width: its own checks and a screenshot.
    set_viewport(browser, session, PHONE_HEIGHT, PHONE_WIDTH, mobile=True)
    try:
        time.sleep(0.3)
        phone = browser.call("Runtime.evaluate", session, returnByValue=True,
                             expression=f"{PHONE_JS}({json.dumps(info['figure_widths'])})")
        if "exceptionDetails" in phone:
            raise CDPError(f"phone probe failed: {phone['exceptionDetails'].get('text')}")
        phone_failures = json.loads(phone["result"]["value"])["failures"]
        phone_shot = shots / "390" / (rel[: -len(".html")] + ".png")
        phone_shot.parent.mkdir(parents=True, exist_ok=True)
        phone_shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", session, format="png")["data"]))
    finally:
        set_viewport(browser, session, HEIGHT)

    f = res.failures
    f += info["errors"]
    f += phone_failures
    for ex in info["explorers"]:
        f += [f"explorer {ex['id']} {p}" for p in ex["problems"]]
    # The first output of a chapter must give the page's final count, not the empty one it had
    # when the page started running (revlib.book.nb.provenance copies it there).
    if info.get("provenance") and re.search(r"\b0 runs trained here .*\b0 measurements computed here .*"
                                            r"\b0 results loaded from the local cache; none from", info["provenance"]):
        f.append("the first output says that nothing was trained, computed or loaded: " + info["provenance"][:80])
    res.notes = list(info["notes"])
    # Widgets: every view must render controls or content, and show a first output.
    widgets = info["widgets"]
    for w in widgets:
        if not w["rendered"]:
            f.append(f"widget {w['index']} did not render")
        elif w["outputs"] and not w["nonempty_outputs"]:
            f.append(f"widget {w['index']} rendered but its output area is empty")
    if info["has_widget_state"] and not widgets:
        f.append("widget state but no widget views in the page")
    # Math.
    if info["math_rendered"] < info["math_total"]:
        f.append(f"math not rendered: {info['math_total'] - info['math_rendered']} of {info['math_total']} formulas")
    f += [f"MathJax error: {m}" for m in info["math_errors"]]
    # Layout: tables cut off, table cells whose text is cut, code that scrolls sideways.
    f += info["layout"]["failures"]
    res.notes += info["layout"]["notes"]
    # Images.
    for img in info["images"]:
        loc = local_path(img["src"])
        if loc is not None and not loc[0].is_file():
            f.append(f"missing image: {img['src']}")
        elif not img["ok"]:
            f.append(f"image failed to load: {img['src'][:120]}")
    # Links.
    live_ids = set(info["ids"])
    broken = {e for url in set(info["links"]) if (e := check_link(url, page, root, live_ids))}
    f += sorted(broken)
    # What the browser asked for: remote requests (blocked) and local files that are missing.
    urls: dict[str, str] = {}
    for ev in browser.drain():
        p = ev.get("params", {})
        if ev["method"] == "Network.requestWillBeSent":
            urls[p["requestId"]] = url = p["request"]["url"]
            if urlsplit(url).scheme in ("http", "https", "ws", "wss"):
                f.append(f"network request (the page must work offline): {url[:150]}")
        elif ev["method"] == "Network.loadingFailed":
            url = urls.get(p["requestId"], "?")
            if urlsplit(url).scheme == "file":
                f.append(f"missing file the page loads: {url[:150]} ({p.get('errorText')})")
        elif ev["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            msg = (d.get("exception") or {}).get("description") or d.get("text", "")
            if not any(known in msg for known in KNOWN_JS_ERRORS):
                f.append(f"JavaScript error: {msg.splitlines()[0][:150] if msg else '?'}")
    # de-duplicate, keeping order
    res.failures = list(dict.fromkeys(f))

    parts = []
    if info["explorers"]:
        parts.append(f"explorers {sum(not e['problems'] for e in info['explorers'])}/{len(info['explorers'])} move")
    if widgets:
        ok = sum(w["rendered"] for w in widgets)
        parts.append(f"widgets {ok}/{len(widgets)} ({sum(w['controls'] for w in widgets)} controls)")
    if info["math_total"]:
        parts.append(f"math {info['math_rendered']}/{info['math_total']}")
    parts.append(f"{len(info['images'])} images, {len(set(info['links']))} links")
    res.summary = ", ".join(parts) + f" -> {shot.relative_to(shots.parent)}"
    res.seconds = time.monotonic() - t0
    return res


def open_tab(browser: Chromium) -> str:
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for method in ("Page.enable", "Runtime.enable", "Network.enable"):
        browser.call(method, session)
    # Offline, whatever the machine's network: every remote request fails (and is reported).
    browser.call("Network.setBlockedURLs", session, urls=["http://*", "https://*", "ws://*", "wss://*"])
    set_viewport(browser, session, HEIGHT)
    return session


def set_viewport(browser: Chromium, session: str, height: int, width: int = WIDTH, mobile: bool = False) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                 deviceScaleFactor=2 if mobile else 1, mobile=mobile)


def find_pages(root: Path) -> list[Path]:
    """Every HTML page of the build, in every folder (chapters/, appendix/, any new one) except
    the asset folders in SKIP_DIRS."""
    return sorted(p for p in root.rglob("*.html") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]))


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    return next((p for c in CANDIDATES if (p := shutil.which(c))), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", nargs="?", default="_build/html", help="the built HTML book (default: _build/html)")
    ap.add_argument("--screenshots", help="where to save screenshots (default: <build>/../screenshots)")
    ap.add_argument("--full-page", action="store_true", help="screenshot whole pages, not the first 2000 px")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds a page may take to render its widgets and math (default 15)")
    args = ap.parse_args(argv)

    root = Path(args.build).resolve()
    if not (root / "index.html").is_file() and not any(root.glob("*.html")):
        print(f"browser check: no built book in {root} (run `make book` first)", file=sys.stderr)
        return 2
    in_ci = os.environ.get("CI", "").lower() == "true"
    exe = find_chromium()
    if exe is None:
        why = f"no Chromium found (looked for $CHROMIUM, {', '.join(CANDIDATES)}); on Debian: apt-get install chromium"
        if in_ci:
            print(f"browser check FAILED: {why}. In CI (CI=true) the browser check must run.", file=sys.stderr)
            return 1
        print(f"browser check skipped: {why}.")
        return 0

    shots = Path(args.screenshots).resolve() if args.screenshots else root.parent / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)  # no stale screenshots of pages that are gone
    shots.mkdir(parents=True)
    pages = find_pages(root)
    print(f"browser check: {len(pages)} pages in {root} with {exe}")

    browser = Chromium(exe, shots / "chromium.log")
    results: list[PageResult] = []
    try:
        session = open_tab(browser)
        for page in pages:
            try:
                r = check_page(browser, session, page, root, shots, args.budget, args.full_page)
            except (TimeoutError, CDPError) as e:
                r = PageResult(page.relative_to(root).as_posix(), failures=[f"browser: {type(e).__name__} {e}"])
                if browser.proc.poll() is not None:  # it crashed: start a fresh one for the rest
                    browser.close()
                    browser = Chromium(exe, shots / "chromium.log")
                    session = open_tab(browser)
            results.append(r)
            print(f"{'PASS' if not r.failures else 'FAIL'}  {r.page}  ({r.seconds:.1f} s)  {r.summary}")
            for msg in r.failures:
                print(f"      - {' '.join(msg.split())}")
            for msg in r.notes:
                print(f"      (note) {' '.join(msg.split())}")
    finally:
        browser.close()

    failed = sum(bool(r.failures) for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
