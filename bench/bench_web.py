"""The live book's forward pass in headless Chromium (gptlearn/web/static/live_model.js) vs PyTorch's
``run_with_cache`` on the same 64 tokens of the bundled gptlearn-english, one core each (and the page without its
WebAssembly SIMD Linear: the plain loops), and the longest main-thread task while a reader types a
230-token text into the explorer (the model in a worker vs on the page).

    python bench/bench_web.py [--smoke] [--reps N] [--tokens 64] [--model NAME|FOLDER]

Needs Debian's chromium and playwright (as the browser tests). The page is opened from file://, as a
reader opens the built book. ``--device``/``--memory`` are accepted for uniformity and ignored: the
browser runs on the CPU, and its memory is not this process's.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from gptlearn.names import OFFLINE_MODEL  # noqa: E402

TYPED = ("ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. "
         "Arise, fair sun, and kill the envious moon, who is already sick and pale with grief. ") * 3

TIME_JS = """([ids, reps, warmup, fast]) => {
  const live = gptlearn.live, w = live.model().weights, times = [];
  live.setFast(fast);
  for (let r = 0; r < warmup + reps; r++) {
    const t0 = performance.now();
    live.pieces.runWithCache(ids, w);
    if (r >= warmup) times.push((performance.now() - t0) / 1000);
  }
  live.setFast(true);
  return times;
}"""

TYPE_AND_WATCH = """() => new Promise((resolve) => {
  const longest = { ms: 0 };
  new PerformanceObserver((list) => list.getEntries().forEach((e) => { longest.ms = Math.max(longest.ms, e.duration); }))
    .observe({ type: "longtask" });
  window.__longest = longest;
  resolve(true);
})"""  # noqa: E501 (the script runs in the page as written)


def flops(T: int, cfg) -> float:
    """Multiply-adds x 2 of the page's forward: 12C^2 a token a layer, attention (scores and z, causal half),
    the unembedding of the last position only."""
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    return 2.0 * (L * (12 * C * C * T + C * T * (T + 1)) + C * V)


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="tokens in the timed forward pass")
    p.add_argument("--model", default=OFFLINE_MODEL, help=f"model name or folder (default {OFFLINE_MODEL})")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.smoke else 31
    common.setup(args)
    import torch
    from playwright.sync_api import sync_playwright

    import gptlearn
    from gptlearn.web import export

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is missing (apt-get install chromium): the benchmark runs the page in it")
    torch.set_num_threads(1)  # one core each: the page's JavaScript runs on one
    model = gptlearn.load_model(args.model, verbose=False)
    cfg = model.config
    ids = model.tokenizer.encode(TYPED * 4)[: args.tokens]
    idx = torch.tensor([ids])
    gemm, gemm_flops = common.gemm_probe(torch.device("cpu"), 256 if args.smoke else 512)

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        export(model, tmp)
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.goto((Path(tmp) / "index.html").as_uri())
        page.wait_for_function("() => document.querySelector('.gl-check') && "
                               "document.querySelector('.gl-check').textContent")
        out = page.evaluate("(t) => gptlearn.live.forward(t)", model.tokenizer.decode(ids))
        with torch.no_grad():
            logits, _ = model.run_with_cache(idx)
        max_diff = (torch.tensor(out["logits"]) - logits[0, -1]).abs().max().item()

        # interleaved: one JavaScript forward (timed inside the page), one PyTorch forward, one GEMM probe
        times: dict[str, list[float]] = {"page": [], "torch": [], "gemm": []}
        page.evaluate(TIME_JS, [ids, 0, 3, True])
        for r in range(args.warmup + args.reps):
            js = page.evaluate(TIME_JS, [ids, 1, 0, True])[0]
            t = common.interleaved({"torch": lambda: model.run_with_cache(idx), "gemm": gemm}, reps=1, warmup=0)
            if r >= args.warmup:
                times["page"].append(js)
                times["torch"].append(t["torch"][0])
                times["gemm"].append(t["gemm"][0])

        plain = page.evaluate(TIME_JS, [ids, max(3, args.reps // 5), 1, False])  # no WebAssembly: the plain loops

        longest = {}
        for where in ("worker", "page"):  # type a text that fills much of the context, key by key
            ctx = browser.new_context()
            if where == "page":
                ctx.add_init_script("window.Worker = undefined;")  # what a browser without workers does
            pg = ctx.new_page()
            pg.goto((Path(tmp) / "index.html").as_uri())
            pg.wait_for_function("() => document.querySelector('.gl-check').textContent")
            pg.evaluate(TYPE_AND_WATCH)
            box = pg.locator(".gl-input")
            box.fill("")
            box.type(TYPED[: 60 if args.smoke else len(TYPED)], delay=15)
            pg.wait_for_timeout(800)
            status = pg.locator(".gl-status").inner_text()
            assert ("in a worker" in status) == (where == "worker"), status
            longest[where] = pg.evaluate("() => window.__longest.ms")
            longest[where + "_tokens"] = int(status.split()[0])
            ctx.close()
        browser.close()

    c = common.Contest(times, reps=args.reps)  # the page's times are its own clock's, PyTorch's and the GEMM's ours
    work, gemm_rate = flops(len(ids), cfg), c.rate("gemm", gemm_flops)
    row = {
        "row": "web", "shape": f"{Path(args.model).name}, {len(ids)} tokens, headless Chromium from file://, 1 core",
        "device": "cpu", "dtype": "fp32 (JavaScript adds in fp64)",
        "page_ms": 1e3 * c.med("page"), "torch_ms": 1e3 * c.med("torch"),
        "ratio_torch_faster": c.speedup("torch", "page"),
        "page_plain_js_ms": 1e3 * common.med(plain), "simd_speedup": common.med(plain) / c.med("page"),
        "page_gflops": c.rate("page", work) / 1e9, "gemm_gflops_1core": gemm_rate / 1e9,
        "page_roofline": c.roofline("page", work, gemm_rate), "torch_roofline": c.roofline("torch", work, gemm_rate),
        "max_abs_logit_diff": max_diff, "goal_ms": 100.0, "goal_ratio_torch_faster": 2.0,  # issue 24
        "longest_task_ms_worker": longest["worker"], "longest_task_ms_page": longest["page"],
        "typed_tokens": longest["worker_tokens"],
    }
    return [c.emit(row, sides={"page": "page", "torch": "torch"})]


if __name__ == "__main__":
    main()
