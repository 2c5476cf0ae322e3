"""The page's JavaScript model, run from Python by V8 (the ``mini-racer`` package), so the book's
appendix "The live model" and the tests can hold each JavaScript piece next to its PyTorch twin.

V8 alone is the language without a browser: the few browser functions ``live_model.js`` uses
(``atob``, ``TextEncoder``, ``TextDecoder``, ``performance.now``) are given plain definitions here.
The explorer's own checks run in Chromium (tests/test_web_browser.py).
"""
from __future__ import annotations

import html
import inspect
import json
import re
from typing import Any

import numpy as np

from .exporter import payload, static_dir

__all__ = ["LiveJS", "js_source", "side_by_side"]

_BROWSER_BITS = r"""
globalThis.performance = { now: () => Date.now() };
globalThis.atob = (s) => {
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const value = new Uint8Array(128); for (let i = 0; i < 64; i++) value[abc.charCodeAt(i)] = i;
  s = s.replace(/=+$/, ""); let out = "", bits = 0, n = 0;
  for (let i = 0; i < s.length; i++) {
    bits = (bits << 6) | value[s.charCodeAt(i)]; n += 6;
    if (n >= 8) { n -= 8; out += String.fromCharCode((bits >> n) & 255); }
  }
  return out;
};
globalThis.TextEncoder = class { encode(s) {
  const out = [];
  for (const ch of s) {
    let c = ch.codePointAt(0);
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;  // a lone surrogate
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
} };
globalThis.TextDecoder = class { decode(b) {  // enough for whole characters; U+FFFD for any broken one
  let out = "";
  for (let i = 0; i < b.length;) {
    const n = b[i] < 0x80 ? 1 : b[i] >= 0xf0 ? 4 : b[i] >= 0xe0 ? 3 : b[i] >= 0xc0 ? 2 : 0;
    let c = n === 1 ? b[i] : b[i] & (0xff >> (n + 1)), ok = n > 0 && i + n <= b.length;
    for (let k = 1; ok && k < n; k++) { ok = (b[i + k] & 0xc0) === 0x80; c = (c << 6) | (b[i + k] & 63); }
    if (ok) { out += String.fromCodePoint(c); i += n; } else { out += "\ufffd"; i += 1; }
  }
  return out;
} };
globalThis.__gptlearnCall = (name, args) => {
  const num = (v) => (Number.isFinite(v) ? v : String(v));  // JSON has no -Infinity (masked scores)
  const plain = (r) => ArrayBuffer.isView(r) ? Array.from(r, num) : Array.isArray(r) ? r.map(plain)
    : r && typeof r === "object" ? Object.fromEntries(Object.entries(r).map(([k, v]) => [k, plain(v)])) : r;
  const typed = args.map((a) => (Array.isArray(a) ? Float32Array.from(a) : a === "@weights" ? gptlearn.live.model().weights : a));
  return JSON.stringify(plain(gptlearn.live.pieces[name](...typed)));
};
"""  # noqa: E501 (the JavaScript V8 runs, as written)


def js_source(name: str) -> str:
    """The source of the function ``name`` in live_model.js, e.g. ``js_source("layerNorm")``."""
    text = (static_dir() / "live_model.js").read_text(encoding="utf-8")
    m = re.search(rf"^( *)function {re.escape(name)}\(.*?^\1\}}$", text, re.M | re.S)
    if m is None:
        raise KeyError(f"live_model.js has no function {name!r}")
    return re.sub(rf"^{m.group(1)}", "", m.group(0), flags=re.M)


def side_by_side(js_name: str, python: Any, *, title_js: str = "live_model.js", title_py: str = "gptlearn (Python)"):
    """An HTML table: the JavaScript function ``js_name`` beside a Python function or source text."""
    from IPython.display import HTML

    py = python if isinstance(python, str) else inspect.getsource(python)
    cell = "<td style='vertical-align: top; width: 50%'><b>{}</b><pre style='font-size: 0.75rem'>{}</pre></td>"
    return HTML("<table style='width: 100%; table-layout: fixed'><tr>"
                + cell.format(title_js, html.escape(js_source(js_name)))
                + cell.format(title_py, html.escape(inspect.cleandoc(py) if not isinstance(python, str) else py))
                + "</tr></table>")


class LiveJS:
    """live_model.js loaded in V8 with ``model``'s exported data.

    >>> js = LiveJS(gptlearn.load_model("gptlearn-mini"))          # doctest: +SKIP
    >>> js.forward("Hello")["ids"]                                  # doctest: +SKIP
    [72, 303]
    >>> js.call("layerNorm", x, T, w, b, 1e-5)                        # doctest: +SKIP
    """

    weights = "@weights"  # pass as an argument of call() for the model's weights object (w in live_model.js)

    def __init__(self, model, **export_options: Any) -> None:
        try:
            from py_mini_racer import MiniRacer
        except ImportError:
            raise ImportError("LiveJS needs the mini-racer package (V8 for Python): pip install mini-racer") from None
        self.ctx = MiniRacer()
        self.ctx.eval(_BROWSER_BITS)
        self.ctx.eval((static_dir() / "live_model.js").read_text(encoding="utf-8"))
        self.ctx.eval((static_dir() / "live_fast.js").read_text(encoding="utf-8"))
        data = payload(model, **export_options)
        self.ctx.eval("globalThis.gptlearnLiveData = " + json.dumps(data) + ";")
        self.config = model.config

    @property
    def simd(self) -> bool:
        """Whether this V8 runs the WebAssembly SIMD Linear (live_fast.js); ``set_fast(False)`` turns it off."""
        return bool(self.ctx.eval("gptlearn.live.fast()"))

    def set_fast(self, on: bool) -> None:
        self.ctx.eval(f"gptlearn.live.setFast({str(bool(on)).lower()})")

    def eval(self, code: str) -> Any:
        """Evaluate JavaScript and return its value decoded from JSON."""
        return json.loads(self.ctx.eval(f"JSON.stringify({code})"))

    def call(self, name: str, *args: Any) -> Any:
        """Call ``gptlearn.live.pieces[name]``: tensors, arrays and lists go in as Float32Arrays (flattened),
        numbers as numbers, ``LiveJS.weights`` as the model's weights; typed arrays come back as flat
        numpy float32 arrays (in dicts and lists too)."""
        def to_js(a: Any) -> Any:
            if hasattr(a, "detach"):
                a = a.detach().cpu().numpy()
            if isinstance(a, np.ndarray):
                return a.astype(np.float32).ravel().tolist()
            if isinstance(a, tuple):
                return list(a)
            return a

        out = json.loads(self.ctx.call("__gptlearnCall", name, [to_js(a) for a in args]))
        return _arrays(out)

    def forward(self, text: str, options: Any = None) -> dict[str, Any]:
        """``window.gptlearn.live.forward(text[, options])``, as the page returns it (options: e.g.
        ``{"ablate": [[0, 2]], "lens": True}``, passed as JSON)."""
        if options is None:
            return self.eval(f"gptlearn.live.forward({json.dumps(text)})")
        return self.eval(f"gptlearn.live.forward({json.dumps(text)}, {json.dumps(options)})")

    def weight(self, name: str) -> np.ndarray:
        """A weight as the JavaScript model holds it (flat float32)."""
        return np.asarray(self.eval(f"Array.from(gptlearn.live.model().weights[{json.dumps(name)}])"), dtype=np.float32)


def _arrays(x: Any) -> Any:
    if isinstance(x, list) and x and all(isinstance(v, (int, float, str)) for v in x):
        return np.asarray([float(v) for v in x], dtype=np.float32)  # "-Infinity" -> -inf
    if isinstance(x, dict):
        return {k: _arrays(v) for k, v in x.items()}
    return x
