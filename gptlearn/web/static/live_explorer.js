/* gptlearn live explorer: type a sentence, watch the model think (the HTML book's explorers).
 *
 * Fills every <div class="gptlearn-live" data-parts="..."> on the page. Parts:
 *   tokens     the text's tokens and ids (chapter 1)
 *   attention  one head's pattern with a layer/head picker; hover shows the weight (chapter 3)
 *   grid       every head of every layer, as chapter 4 draws them; click one to pick it
 *   heads      each head's contribution per token, the norm of z_h W_O^h (chapter 5)
 *   next       the top 10 next tokens with a temperature slider; click one to append it (chapter 6)
 *   embedding  the sentence's embedding (chapter 8's pooling) and its cosine to data-sentences
 *   lens       the logit lens: the top tokens before each layer, at the last position or a clicked one
 *   ablate     the head grid: a click knocks a head out (its z set to zero) and the next-token bars show
 *              the knocked-out model's guesses, with the change in the top token's probability
 * Optional: data-text (the first text), data-layer, data-head, data-pooling, data-sentences ("a|b|c"),
 * data-model (which model runs: a name in window.gptlearnLiveModels, written by gptlearn.web.model_script;
 * default the page's model), data-compare (a second such model whose next-token bars are drawn beside the
 * first's, for the same text) and data-labels ("before|after": the two bar sets' titles).
 *
 * The model runs in a Web Worker made from a Blob URL (a page opened from file:// may not start a
 * worker from a file, but may from a blob), so typing never waits for it; where no worker can start,
 * it runs on the page after a pause in typing. Needs live_model.js and the exported model data.
 * Each part is drawn by its own function (drawTokens, drawLens, ...) from a run's result and a `view`
 * (the explorer's state and callbacks); the model maths they need (softmax, top-k, head norms, pooling)
 * live in live_model.js beside the model.
 */
(function () {
  "use strict";
  const DEBOUNCE_MS = 120;
  const POOLING = ["mean", "max", "last", "first", "weighted_mean"];
  const PARTS = ["tokens", "attention", "grid", "heads", "next", "embedding", "lens", "ablate"];

  // ---- running the model: a worker when possible -------------------------------------------------

  function workerMain() {
    // Runs inside the worker: load the data, then answer {id, text, options} with the arrays to draw.
    self.onmessage = (e) => {
      const msg = e.data;
      if (msg.data) { self.gptlearnLiveData = msg.data; return; }
      const r = self.gptlearn.live.run(msg.text, msg.options);
      const out = packResult(r, self.gptlearnLiveData.config.n_layer);
      self.postMessage({ id: msg.id, result: out }, transferables(out));
    };
  }

  function packResult(r, L) {
    // The arrays the explorer draws, from run()'s cache: patterns (L x (H, T, T)), contributions
    // (L x (T, H, C)) when asked for, the final hidden states (T, C) and the logit lens (L + 1 x (V,)).
    if (!r.cache) return { ids: r.ids, tokens: r.tokens, message: r.message, T: r.T, ms: 0 };
    const get = (name) => Array.from({ length: L }, (_, l) => r.cache[`blocks.${l}.attn.${name}`]).filter(Boolean);
    return { ids: r.ids, tokens: r.tokens, message: null, T: r.T, ms: r.ms, logits: r.logits,
      patterns: get("hook_pattern"), results: get("hook_result"), final: r.cache.hook_ln_final,
      lens: r.lens ? r.lens.map((row) => row.slice()) : null };  // copies: the last row is the logits' buffer
  }

  function transferables(out) {
    if (!out.logits) return [];
    return [out.logits, out.final, ...out.patterns, ...out.results, ...(out.lens || [])].map((a) => a.buffer);
  }

  function makeRunner(name) {
    // {run(text, attnResult) -> Promise of a packed result, where: "worker" | "page"} for the page's model,
    // or the model `name` of window.gptlearnLiveModels (each model runs in its own worker).
    const data = name ? window.gptlearn.live.data(name) : window.gptlearnLiveData, L = data.config.n_layer;
    let worker = null;
    try {
      const fast = typeof gptlearnFastModule === "function" ? `${gptlearnFastModule}\ngptlearnFastModule(self);\n` : "";
      const source = `${fast}${gptlearnLiveModule}\ngptlearnLiveModule(self);\n${packResult}\n${transferables}\n(${workerMain})();`;
      worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
      worker.postMessage({ data });
    } catch (e) {
      worker = null;  // no workers here: run on the page
    }
    const onPage = (text, options) => packResult(window.gptlearn.live.model(name).run(text, options), L);
    const waiting = new Map();  // id -> [resolve, text, options]
    let next = 0;
    if (worker) {
      worker.onmessage = (e) => { waiting.get(e.data.id)[0](e.data.result); waiting.delete(e.data.id); };
      worker.onerror = () => {  // the worker failed: answer what it was asked on the page, and from now on
        worker = null;
        for (const [resolve, text, options] of waiting.values()) resolve(onPage(text, options));
        waiting.clear();
      };
    }
    return {
      where: () => (worker ? "worker" : "page"),
      run(text, options = {}) {  // options: run()'s, {attnResult, ablate, lens, lensAt}
        if (!worker) return Promise.resolve(onPage(text, options));
        const id = next++;
        return new Promise((resolve) => { waiting.set(id, [resolve, text, options]); worker.postMessage({ id, text, options }); });
      },
    };
  }

  const runners = new Map();  // model name ("" for the page's model) -> its runner
  function getRunner(name = null) {
    if (!runners.has(name || "")) runners.set(name || "", makeRunner(name || null));
    return runners.get(name || "");
  }

  // ---- small helpers ----------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  const show = (s) => s.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥");  // plotting.display_token
  const pct = (p) => (p >= 0.0995 ? (100 * p).toFixed(1) : (100 * p).toPrecision(2)) + "%";

  function palette(color) {
    // color(v) for v in 0..1 -> a table of 256 RGB triples, so drawing a cell allocates nothing.
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) table.set(color(i / 255), 3 * i);
    return table;
  }

  function ramp(stops, v) {
    const x = Math.min(Math.max(v, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    return stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  }

  // 0..1 -> white..dark blue (plotly's "Blues", as the chapters' heatmaps), white..dark orange, and
  // blue..white..orange for signed values (0.5 is zero)
  const BLUE_STOPS = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const ORANGE_STOPS = [[255, 245, 235], [166, 54, 3]];
  const BLUES = palette((v) => ramp(BLUE_STOPS, v));
  const ORANGES = palette((v) => ramp(ORANGE_STOPS, v));
  const SIGNED = palette((v) => (v >= 0.5 ? ramp(ORANGE_STOPS, 2 * v - 1) : ramp(BLUE_STOPS, 1 - 2 * v)));

  function heatmap({ rows, cols, value, colors, rowLabels, colLabels, maxSize = 520, minCell = 3, tip }) {
    // A canvas of rows x cols cells coloured from a palette by value(r, c) in 0..1 (null: masked, grey);
    // hovering calls tip(r, c).
    const left = rowLabels ? 96 : 0, top = colLabels ? 70 : 0, right = colLabels ? 40 : 0;
    // A cell's size in pixels. A thumbnail (minCell <= 1) of a long text may have cells below a pixel:
    // its image then samples the cells, a pixel standing for several tokens.
    const fit = maxSize / Math.max(rows, cols);
    const cell = fit < 1 && minCell <= 1 ? fit : Math.max(minCell, Math.min(28, Math.floor(fit)));
    const W = Math.ceil(left + cell * cols + right), H = Math.ceil(top + cell * rows), dpr = window.devicePixelRatio || 1;
    const canvas = el("canvas", { class: "gl-heatmap", width: String(W * dpr), height: String(H * dpr) });
    canvas.style.width = W + "px";
    canvas.style.height = H + "px";
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.font = "11px sans-serif";
    const iw = Math.min(cols, Math.ceil(cell * cols)), ih = Math.min(rows, Math.ceil(cell * rows));
    const image = new ImageData(iw, ih), px = image.data;  // a pixel a cell (or a sample of cells), scaled up
    for (let y = 0; y < ih; y++) {
      const r = Math.floor((y * rows) / ih);
      for (let x = 0; x < iw; x++) {
        const v = value(r, Math.floor((x * cols) / iw)), at = (y * iw + x) * 4;
        if (v === null) { px[at] = px[at + 1] = px[at + 2] = 235; }
        else {
          const k = 3 * Math.round(Math.min(Math.max(v, 0), 1) * 255);
          px[at] = colors[k]; px[at + 1] = colors[k + 1]; px[at + 2] = colors[k + 2];
        }
        px[at + 3] = 255;
      }
    }
    const pixels = document.createElement("canvas");
    pixels.width = iw;
    pixels.height = ih;
    pixels.getContext("2d").putImageData(image, 0, 0);
    g.imageSmoothingEnabled = false;
    g.drawImage(pixels, left, top, cell * cols, cell * rows);
    g.fillStyle = "#333";
    if (rowLabels && cell >= 9) {
      g.textAlign = "right"; g.textBaseline = "middle";
      rowLabels.forEach((s, r) => g.fillText(s.slice(0, 14), left - 4, top + r * cell + cell / 2));
    }
    if (colLabels && cell >= 9) {
      colLabels.forEach((s, c) => {
        g.save(); g.translate(left + c * cell + cell / 2, top - 4); g.rotate(-Math.PI / 3);
        g.textAlign = "left"; g.textBaseline = "middle"; g.fillText(s.slice(0, 12), 0, 0); g.restore();
      });
    }
    const box = el("div", { class: "gl-heatbox" }, canvas);
    if (tip) {
      const tipEl = el("div", { class: "gl-tip", role: "tooltip" });
      box.append(tipEl);
      canvas.addEventListener("mousemove", (e) => {
        const rect = canvas.getBoundingClientRect();
        const c = Math.floor((e.clientX - rect.left - left) / cell), r = Math.floor((e.clientY - rect.top - top) / cell);
        if (r < 0 || c < 0 || r >= rows || c >= cols) { tipEl.style.display = "none"; return; }
        tipEl.textContent = tip(r, c);
        tipEl.style.display = "block";
        tipEl.style.left = `${e.clientX - rect.left + 12}px`;
        tipEl.style.top = `${e.clientY - rect.top + 12}px`;
      });
      canvas.addEventListener("mouseleave", () => { tipEl.style.display = "none"; });
    }
    return box;
  }

  // ---- the parts: each draws from a run's result `r` and the explorer's `view` ------------------------
  // view: {live, c (config), L, H, C, state, root, input, render(names), update(), maths (live_model.js pieces)}

  const tokenLabels = (r) => r.tokens.map((t, i) => `${i} ${show(t)}`);

  function drawTokens(r) {
    const row = el("div", { class: "gl-chips" });
    r.tokens.forEach((t, i) => row.append(el("span", { class: `gl-chip gl-c${i % 6}`, title: `token ${i}: id ${r.ids[i]}` },
      el("span", { text: show(t) }), el("small", { text: String(r.ids[i]) }))));
    return [el("h4", { text: `${r.ids.length} tokens (with their ids)` }), row];
  }

  function drawAttention(r, v) {
    const { layer, head } = v.state, p = r.patterns[layer], T = r.T, base = head * T * T, labels = tokenLabels(r);
    return [
      el("h4", { text: `Attention, layer ${layer} head ${head} (rows: the token attending; columns: the tokens it reads)` }),
      heatmap({ rows: T, cols: T, rowLabels: labels, colLabels: labels, colors: BLUES,
        value: (i, j) => (j > i ? null : p[base + i * T + j]),
        tip: (i, j) => (j > i ? `${show(r.tokens[i])} cannot see ${show(r.tokens[j])} (the future)`
          : `${show(r.tokens[i])} → ${show(r.tokens[j])}: ${p[base + i * T + j].toFixed(4)}`) }),
    ];
  }

  function drawGrid(r, v) {
    const { L, H, state } = v, T = r.T, grid = el("div", { class: "gl-grid", style: `grid-template-columns: auto repeat(${H}, auto)` });
    grid.append(el("span"), ...Array.from({ length: H }, (_, h) => el("span", { class: "gl-axis", text: `head ${h}` })));
    for (let l = 0; l < L; l++) {
      grid.append(el("span", { class: "gl-axis", text: `layer ${l}` }));
      for (let h = 0; h < H; h++) {
        const p = r.patterns[l], base = h * T * T;
        const map = heatmap({ rows: T, cols: T, maxSize: 84, minCell: 1, colors: BLUES,
          value: (i, j) => (j > i ? null : p[base + i * T + j]),
          tip: (i, j) => `${l}.${h}: ${show(r.tokens[i])} → ${show(r.tokens[j])}: ${j > i ? "masked" : p[base + i * T + j].toFixed(4)}` });
        map.classList.add("gl-cell");
        if (l === state.layer && h === state.head) map.classList.add("gl-picked");
        map.addEventListener("click", () => { state.layer = l; state.head = h; v.render(["attention", "grid", "heads"]); });
        map.title = `layer ${l}, head ${h}`;
        grid.append(map);
      }
    }
    return [el("h4", { text: "Every head: rows are layers, columns heads (click one to pick it)" }), grid];
  }

  function drawHeads(r, v) {
    const { H, C, state } = v, T = r.T, norms = v.maths.headNorms(r.results[state.layer], T, H, C);
    const max = norms.reduce((a, b) => Math.max(a, b), 0);
    return [
      el("h4", { text: `How much each head of layer ${state.layer} writes, per token: the norm of z_h W_O^h` }),
      heatmap({ rows: T, cols: H, colors: ORANGES, rowLabels: tokenLabels(r),
        colLabels: Array.from({ length: H }, (_, h) => `head ${h}`), maxSize: 360,
        value: (t, h) => norms[t * H + h] / (max || 1),
        tip: (t, h) => `${show(r.tokens[t])}, head ${h}: ‖z_h W_O^h‖ = ${norms[t * H + h].toFixed(3)}` }),
    ];
  }

  function nextList(v, p, onPick, live = v.live) {
    // The 10 likeliest next tokens of the probabilities p as bars; a click appends the token.
    const list = el("ol", { class: "gl-top" });
    for (const [prob, id] of v.maths.topK(p, 10)) {
      const text = live.tokenText(id);
      list.append(el("li", { title: `id ${id}: click to append it`, onclick: () => onPick(text) },
        el("span", { class: "gl-bar", style: `width: ${(100 * prob).toFixed(1)}%` }),
        el("code", { text: show(text) }), el("span", { class: "gl-prob", text: pct(prob) })));
    }
    return list;
  }

  const appendText = (v) => (text) => { v.input.value += text; v.update(); };

  function drawNext(r, v) {
    v.root.querySelector(".gl-temp").textContent = v.state.temperature.toFixed(2);
    const p = v.maths.softmax(r.logits, v.state.temperature);
    const title = el("h4", { text: `What comes next? The 10 likeliest of ${v.c.vocab_size} tokens (click one to append it)` });
    if (!v.compare) return [title, nextList(v, p, appendText(v))];
    // two models on the same text: the first's bars beside the second's (e.g. before and after fine-tuning)
    const [first, second] = v.labels, other = r.compare;
    const column = (label, body) => el("div", { class: "gl-column" }, el("h5", { text: label }), body);
    return [title, el("div", { class: "gl-columns" }, column(first, nextList(v, p, appendText(v))),
      column(second, other.message ? el("p", { class: "gl-note", text: other.message })
        : nextList(v, v.maths.softmax(other.logits, v.state.temperature), appendText(v), v.compare)))];
  }

  function drawEmbedding(r, v) {
    const { pool, cosine } = v.maths, { C, state } = v, vec = pool(r.final, r.T, C, state.pooling);
    let max = 0;
    for (const x of vec) max = Math.max(max, Math.abs(x));
    const list = el("ul", { class: "gl-cos" });
    for (const { text, final, T } of state.refs) {
      const cos = cosine(vec, pool(final, T, C, state.pooling));
      list.append(el("li", {}, el("span", { class: "gl-bar", style: `width: ${Math.max(0, 50 * cos).toFixed(1)}%` }),
        el("span", { class: "gl-prob", text: cos.toFixed(3) }), el("span", { class: "gl-ref", text: text })));
    }
    return [
      el("h4", { text: `The sentence's embedding: ${state.pooling} pooling of its ${r.T} token vectors after the final LayerNorm (${C} numbers)` }),
      heatmap({ rows: 1, cols: C, maxSize: 640, minCell: 2, colors: SIGNED,
        value: (_, i) => 0.5 + vec[i] / (2 * max || 1), tip: (_, i) => `channel ${i}: ${vec[i].toFixed(4)}` }),
      el("h4", { text: "Its cosine similarity to the sentences above" }), list,
    ];
  }

  function drawLens(r, v) {
    // One row per layer: the 5 likeliest tokens if the model stopped before it (the last row: its output).
    const { L, state } = v, at = state.lensAt !== null && state.lensAt < r.T ? state.lensAt : r.T - 1;
    const chips = el("div", { class: "gl-chips" });
    r.tokens.forEach((t, i) => chips.append(el("span", {
      class: `gl-chip gl-c${i % 6}${i === at ? " gl-lens-at" : ""}`, title: `read the lens at token ${i}`,
      onclick: () => { state.lensAt = i; v.update(); } }, el("span", { text: show(t) }))));
    const table = el("table", { class: "gl-lens" });
    r.lens.forEach((row, l) => {
      const label = l < L ? `before layer ${l}` : "output";
      table.append(el("tr", {}, el("th", { text: label }), ...v.maths.topK(v.maths.softmax(row), 5).map(([p, id]) =>
        el("td", { title: `id ${id}` }, el("code", { text: show(v.live.tokenText(id)) }), el("small", { text: " " + pct(p) })))));
    });
    return [el("h4", { text: `The logit lens at token ${at} (${show(r.tokens[at])}): ln_f, then the unembedding, of the ` +
      "stream entering each layer (click a token to move it)" }), chips, table];
  }

  function drawAblate(r, v) {
    const { L, H, state } = v, grid = el("div", { class: "gl-heads", style: `grid-template-columns: auto repeat(${H}, auto)` });
    grid.append(el("span"), ...Array.from({ length: H }, (_, h) => el("span", { class: "gl-axis", text: `head ${h}` })));
    for (let l = 0; l < L; l++) {
      grid.append(el("span", { class: "gl-axis", text: `layer ${l}` }));
      for (let h = 0; h < H; h++) {
        const key = `${l}.${h}`, off = state.ablated.has(key);
        grid.append(el("button", { class: `gl-head${off ? " gl-off" : ""}`, type: "button", "aria-pressed": String(off),
          title: off ? `head ${key} is knocked out: click to put it back` : `click to knock head ${key} out`, text: key,
          onclick: () => { if (off) state.ablated.delete(key); else state.ablated.add(key); v.update(); } }));
      }
    }
    const intact = v.maths.softmax(r.logits), top = v.maths.topK(intact, 1)[0][1], out = [
      el("h4", { text: "Knock heads out: a click sets a head's output z to zero before the output projection" }), grid];
    if (!state.ablated.size || !r.ablated) {
      out.push(el("p", { class: "gl-note", text: "No head is knocked out: click one. These are the intact model's guesses." }),
        nextList(v, intact, appendText(v)));
      return out;
    }
    if (r.ablated.message) return [...out, el("p", { class: "gl-note", text: r.ablated.message })];
    const knocked = v.maths.softmax(r.ablated.logits), change = knocked[top] - intact[top];
    out.push(el("p", { class: "gl-change", text: `Without ${[...state.ablated].sort().join(", ")}: the intact model's top ` +
      `token ${show(v.live.tokenText(top))} goes from ${pct(intact[top])} to ${pct(knocked[top])} ` +
      `(${change >= 0 ? "+" : "−"}${(100 * Math.abs(change)).toFixed(1)} points).` }), nextList(v, knocked, appendText(v)));
    return out;
  }

  const DRAW = { tokens: drawTokens, attention: drawAttention, grid: drawGrid, heads: drawHeads, next: drawNext,
    embedding: drawEmbedding, lens: drawLens, ablate: drawAblate };

  // ---- one explorer: its state, controls and runs; the parts above draw it -----------------------------

  function explorer(root) {
    const name = root.dataset.model || null, live = window.gptlearn.live.model(name), maths = window.gptlearn.live.pieces;
    const compareName = root.dataset.compare || null;
    const compare = compareName && window.gptlearnLiveModels && window.gptlearnLiveModels[compareName]
      ? window.gptlearn.live.model(compareName) : null;
    const labels = (root.dataset.labels || "").split("|").map((s) => s.trim());
    if (compare) labels.splice(0, 2, labels[0] || live.name, labels[1] || compare.name);
    const c = live.config, L = c.n_layer, H = c.n_head, C = c.n_embd;
    const parts = new Set((root.dataset.parts || "tokens next attention").split(/[\s,]+/).filter(Boolean));
    const state = {
      layer: Math.min(Number(root.dataset.layer || 0), L - 1), head: Math.min(Number(root.dataset.head || 0), H - 1),
      temperature: 1.0, pooling: POOLING.includes(root.dataset.pooling) ? root.dataset.pooling : "mean",
      result: null, refs: [], lensAt: null, ablated: new Set(),
    };
    const sentences = (root.dataset.sentences || "").split("|").map((s) => s.trim()).filter(Boolean);
    const layers = Array.from({ length: L }, (_, l) => String(l)), heads = Array.from({ length: H }, (_, h) => String(h));

    // Controls are made once (a slider re-made while it is dragged would stop); render() redraws the rest.
    const pickers = [];  // [select, () => value] pairs, set from state on every render
    function picker(label, options, get, set, redraw = ["attention", "grid", "heads"]) {
      const s = el("select", { "aria-label": label, onchange: () => { set(Number(s.value)); render(redraw); } },
        ...options.map((o, i) => el("option", { value: String(i), text: o })));
      pickers.push([s, get]);
      return el("label", { class: "gl-pick" }, label + " ", s);
    }
    const layerPicker = () => picker("layer", layers, () => state.layer, (v) => { state.layer = v; });
    const slider = el("input", { type: "range", min: "0.1", max: "2", step: "0.05", value: "1",
      "aria-label": "temperature", oninput: () => { state.temperature = Number(slider.value); render(["next"]); } });
    const controls = {
      attention: () => [layerPicker(), picker("head", heads, () => state.head, (v) => { state.head = v; })],
      heads: () => [layerPicker()],
      next: () => [el("label", { class: "gl-pick" }, "temperature ", slider, el("output", { class: "gl-temp", text: "1.00" }))],
      embedding: () => [picker("pooling", POOLING, () => POOLING.indexOf(state.pooling), (v) => { state.pooling = POOLING[v]; },
        ["embedding"])],
    };

    const check = el("span", { class: "gl-check" });
    const input = el("textarea", { class: "gl-input", rows: "2", spellcheck: "false", "aria-label": "text for the model" });
    input.value = root.dataset.text || "The big red car drove quickly";
    const status = el("div", { class: "gl-status", role: "status" });
    const bodies = {};
    const sections = [];
    for (const name of parts) {  // in the order data-parts gives them
      if (!PARTS.includes(name)) continue;
      bodies[name] = el("div", { class: "gl-body" });
      sections.push(el("section", { class: `gl-part gl-${name}` },
        controls[name] ? el("div", { class: "gl-controls" }, ...controls[name]()) : null, bodies[name]));
    }
    const title = el("div", { class: "gl-title" }, el("strong", { text: compare ? "Live models: " : "Live model: " }),
      el("span", { text: `${compare ? `${live.label} and ${compare.label}` : live.label}, running in your browser ` +
        "(no server, no network). " }), check);
    const missing = compareName && !compare ? el("p", { class: "gl-note", text: `This page does not carry the model ` +
      `"${compareName}" to compare with, so the explorer shows ${live.name} alone.` }) : null;
    const book = live.bookModel && live.bookModel !== live.name
      ? el("p", { class: "gl-note", text: `This book was built with ${live.bookModel}, too large to ship in a page, so ` +
          `the explorer runs ${live.name}: the same architecture and code, smaller.` }) : null;
    root.replaceChildren(...[title, book, missing, input, status, ...sections, apiNote(c)].filter(Boolean));
    root.classList.add("gl-ready");

    // render() marks parts to redraw (all, or those named: a slider needs one) and draws them one task at
    // a time, so a key press is handled between two parts; parts marked meanwhile are drawn in the same pass.
    const dirty = new Set();
    let drawing = false;
    const view = { live, c, L, H, C, state, root, input, maths, compare, labels, render: (names) => render(names),
      update: () => update() };
    function render(only = null) {
      const r = state.result;
      if (!r) return;
      for (const [s, get] of pickers) s.value = String(get());
      status.textContent = r.message ? r.message
        : `${r.T} tokens; forward pass ${r.ms.toFixed(1)} ms (${getRunner(name).where() === "worker" ? "in a worker" : "on the page"}` +
          `${window.gptlearn.live.fast() ? ", WebAssembly SIMD" : ""})`;
      status.classList.toggle("gl-error", Boolean(r.message));
      for (const name of only || Object.keys(bodies)) dirty.add(name);
      if (!drawing) drawDirty();
    }

    async function drawDirty() {
      drawing = true;
      for (let name; (name = Object.keys(bodies).find((n) => dirty.has(n)));) {
        dirty.delete(name);
        const r = state.result, body = bodies[name], blank = Boolean(r.message) && name !== "tokens";
        body.replaceChildren(...(blank ? [] : DRAW[name](r, view)));
        body.parentNode.hidden = blank;
        await new Promise((next) => setTimeout(next, 0));
      }
      drawing = false;
      root.dataset.rendered = String(Number(root.dataset.rendered || 0) + 1);  // for tests: every part is drawn
    }

    async function runAll(text) {
      // The intact run (with what the parts need), and the run with the knocked-out heads when there are any.
      const r = await getRunner(name).run(text, { attnResult: parts.has("heads"), lens: parts.has("lens"),
        lensAt: state.lensAt === null ? undefined : state.lensAt });
      if (!r.message && compare && parts.has("next")) {
        const b = await getRunner(compareName).run(text, {});
        r.compare = { logits: b.logits || null, message: b.message };
      }
      if (!r.message && parts.has("ablate") && state.ablated.size) {
        const pairs = [...state.ablated].map((key) => key.split(".").map(Number));
        const a = await getRunner(name).run(text, { ablate: pairs });
        r.ablated = { logits: a.logits || null, message: a.message };
      }
      return r;
    }

    let timer = null, latest = 0, lastText = input.value;
    function update() {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const id = ++latest;
        if (input.value !== lastText) { state.lensAt = null; lastText = input.value; }  // a new text: the lens reads its last token
        const r = await runAll(input.value);
        if (id === latest) { state.result = r; render(); }
      }, DEBOUNCE_MS);
    }
    input.addEventListener("input", update);

    (async () => {
      for (const text of parts.has("embedding") ? sentences : []) {
        const r = await getRunner(name).run(text, {});
        if (!r.message) state.refs.push({ text, final: r.final, T: r.T });
      }
      state.result = await runAll(input.value);
      render();
      setTimeout(() => selfCheck(check, compare ? [name, compareName] : [name]), 0);
    })();
  }

  function apiNote(c) {
    return el("details", { class: "gl-api" }, el("summary", { text: "Use it from the browser's console" }),
      el("pre", { text: 'gptlearn.live.forward("The big red car")\n' +
        "// -> {ids, tokens, logits, attention, message}\n" +
        "//    ids, tokens: the text's token ids and their strings\n" +
        `//    logits: the last position's ${c.vocab_size} scores for the next token\n` +
        "//    attention[layer][head][query][key]: every attention pattern\n" +
        "//    message: why the model cannot read the text (then logits and attention are null)\n" +
        'gptlearn.live.forward("The big red car", {ablate: [[0, 2]], lens: true})\n' +
        "// -> the same with head 0.2's z zeroed, and lens: the logit lens, one array of\n" +
        `//    ${c.vocab_size} logits before each of the ${c.n_layer} layers, then the output` }));
  }

  function logitGap(live) {
    // The largest difference between this browser's logits and PyTorch's, exported beside the weights.
    const chk = live.check, raw = atob(chk.logits), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const want = new Float32Array(bytes.buffer), got = live.forward(chk.text).logits;
    if (!got) return null;
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i] - got[i]));
    return worst;
  }

  function selfCheck(node, names) {
    // Compare this browser's logits with PyTorch's for each model the explorer runs (null: the page's).
    const gaps = names.map((n) => logitGap(window.gptlearn.live.model(n)));
    if (gaps.includes(null)) return;
    const worst = Math.max(...gaps), both = names.length > 1 ? " for both models" : "";
    node.textContent = worst < 1e-3 ? `✓ Same numbers as PyTorch${both} (largest logit difference ${worst.toExponential(1)}).`
      : `✗ This browser's numbers differ from PyTorch's by ${worst.toExponential(1)}.`;
    node.classList.add(worst < 1e-3 ? "gl-ok" : "gl-bad");
    names.forEach((n, i) => {
      if (n) (window.gptlearn.live.checkedModels = window.gptlearn.live.checkedModels || {})[n] = gaps[i];
      else window.gptlearn.live.checked = gaps[i];
    });
  }

  function init() {
    const roots = document.querySelectorAll(".gptlearn-live");
    if (!roots.length) return;
    if (!window.gptlearnLiveData || !window.gptlearn || !window.gptlearn.live) {
      roots.forEach((r) => { r.textContent = "The live model's scripts did not load."; });
      return;
    }
    roots.forEach((r) => {
      try { explorer(r); } catch (e) { r.textContent = `The live explorer could not start: ${e.message}`; }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
