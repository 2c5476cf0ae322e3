"""Assemble gptlearn/web/static/linear.wat and write its bytes (base64) into live_fast.js.

    python scripts/build_live_wasm.py            # rewrite the WASM line of live_fast.js
    python scripts/build_live_wasm.py --check    # exit 1 if live_fast.js does not hold linear.wat's bytes

A page opened from file:// cannot fetch a .wasm file, so the module travels inside the script. Needs
``wasmtime`` (requirements-dev.txt) for its ``wat2wasm``; tests/test_web_js.py runs ``--check``.
"""
from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "gptlearn" / "web" / "static"
LINE = re.compile(r'^  const WASM = "[A-Za-z0-9+/=]*";.*$', re.M)


def assembled() -> str:
    import wasmtime

    return base64.b64encode(wasmtime.wat2wasm((STATIC / "linear.wat").read_text())).decode()


def main(argv: list[str]) -> int:
    js_path = STATIC / "live_fast.js"
    js = js_path.read_text(encoding="utf-8")
    line = f'  const WASM = "{assembled()}";  // linear.wat, assembled'
    if not LINE.search(js):
        print(f"{js_path} has no 'const WASM = \"...\";' line", file=sys.stderr)
        return 1
    if "--check" in argv:
        ok = LINE.search(js).group(0) == line
        print("live_fast.js holds linear.wat's bytes" if ok
              else "live_fast.js is stale: run scripts/build_live_wasm.py",
              file=sys.stderr)
        return 0 if ok else 1
    js_path.write_text(LINE.sub(line, js), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
