/* gptlearn live: GPT-2 in plain JavaScript, the same computation as gptlearn/model.py and
 * gptlearn/attention.py, so the HTML book can run its model with no kernel, server or network
 * (appendix "The live model" walks it next to the Python).
 *
 * Legend: T tokens, C n_embd, H n_head, hs head size (C / H), V vocab, L layers. One text at a time,
 * so PyTorch's batch axis B is left out: cache["blocks.0.attn.hook_pattern"] is (H, T, T) here and
 * (B, H, T, T) in Python. A tensor is a Float32Array in row-major order: (T, C) means row t starts at
 * t * C. Weights keep PyTorch's names and layouts (a Linear's weight is (out, in), as in nn.Linear).
 * The model's data comes from `gptlearn.web.export(model, folder)` as a classic <script> that sets
 * `window.gptlearnLiveData` (browsers block fetch() of local files; scripts load from file://).
 *
 *   gptlearn.live.forward("The big red car")  ->  {ids, tokens, logits, attention, message}
 *   gptlearn.live.forward(text, {ablate: [[0, 2]], lens: true})  ->  the same with head 0.2 knocked out,
 *                                                                   plus lens: L + 1 arrays of V logits
 *   gptlearn.live.model("tuned").forward(text)  ->  the same from a further model the page carries
 *                                                   (window.gptlearnLiveModels; gptlearn.web.model_script)
 */
function gptlearnLiveModule(root) {  // a named function, so the explorer can start a worker from its source
  "use strict";

  // ---- the tokenizer: GPT-2's byte-level BPE (chapter 1; gptlearn/tokenizers/bpe.py) ------------------

  // GPT-2's pre-tokenisation regex (GPT2_SPLIT_PATTERN). JavaScript's \s differs from Python's
  // (it adds U+FEFF and leaves out U+0085), so whitespace is written as \p{White_Space}, which is
  // exactly the `regex` module's \s.
  const SPLIT_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

  function bytesToUnicode() {
    // Byte value -> a printable character (bytes_to_unicode): a space is "Ġ", a newline "Ċ".
    const bs = [];
    for (let b = 33; b <= 126; b++) bs.push(b);
    for (let b = 161; b <= 172; b++) bs.push(b);
    for (let b = 174; b <= 255; b++) bs.push(b);
    const table = new Array(256);
    for (const b of bs) table[b] = String.fromCharCode(b);
    let n = 0;
    for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
    return table;
  }

  function merge(parts, a, b) {
    // Replace every non-overlapping (a, b), left to right, by a + b (gptlearn.tokenizers.bpe.merge).
    const out = [];
    for (let i = 0; i < parts.length;) {
      if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) { out.push(a + b); i += 2; }
      else { out.push(parts[i]); i += 1; }
    }
    return out;
  }

  function bpe(parts, ranks) {
    // Merge the pair with the lowest rank until no learned merge applies.
    while (parts.length >= 2) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const rank = ranks.get(parts[i] + " " + parts[i + 1]);
        if (rank !== undefined && rank < bestRank) { bestRank = rank; best = i; }
      }
      if (best < 0) break;
      parts = merge(parts, parts[best], parts[best + 1]);
    }
    return parts;
  }

  function makeBPETokenizer(spec) {
    // spec: {vocab: {token: id}, merges: [[a, b], ...]} as in vocab.json + merges.txt.
    const byteEncoder = bytesToUnicode();
    const byteDecoder = new Map(byteEncoder.map((u, b) => [u, b]));
    const ranks = new Map(spec.merges.map(([a, b], rank) => [a + " " + b, rank]));
    const encoder = new Map(Object.entries(spec.vocab));
    const idBytes = [];  // id -> the bytes it stands for (a special token: its UTF-8 text)
    for (const [token, id] of encoder) {
      const chars = [...token];
      idBytes[id] = chars.every((c) => byteDecoder.has(c)) && !spec.special.includes(token)
        ? Uint8Array.from(chars, (c) => byteDecoder.get(c)) : new TextEncoder().encode(token);
    }
    const utf8 = new TextEncoder();  // a lone surrogate becomes U+FFFD, as _fix_surrogates does
    const text = new TextDecoder("utf-8");  // invalid UTF-8 becomes U+FFFD, as errors="replace"
    const cache = new Map();
    return {
      encode(s) {
        const ids = [];
        for (const word of s.match(SPLIT_PATTERN) || []) {
          let wordIds = cache.get(word);
          if (wordIds === undefined) {
            const parts = Array.from(utf8.encode(word), (b) => byteEncoder[b]);  // bytes -> characters
            wordIds = bpe(parts, ranks).map((t) => encoder.get(t));
            cache.set(word, wordIds);
          }
          ids.push(...wordIds);
        }
        return ids;
      },
      strTokens: (ids) => ids.map((i) => text.decode(idBytes[i])),
    };
  }

  function makeCharTokenizer(spec) {
    // CharTokenizer: one token per character of a known alphabet.
    const stoi = new Map(spec.chars.map((c, i) => [c, i]));
    return {
      encode(s) {
        const ids = [];
        for (const c of s) {
          if (!stoi.has(c)) throw new RangeError(`the character ${JSON.stringify(c)} is not in this model's alphabet`);
          ids.push(stoi.get(c));
        }
        return ids;
      },
      strTokens: (ids) => ids.map((i) => spec.chars[i]),
    };
  }

  // ---- the model's pieces (model.py, attention.py) ------------------------------------------------

  let useFast = true;  // gptlearn.live.setFast(false) keeps every Linear in the plain loop

  function embed(ids, w) {
    // Token + position embeddings (chapter 2): ids (T,) -> x (T, C).
    const C = w.C, T = ids.length, wte = w["wte.weight"], wpe = w["wpe.weight"];
    const x = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < C; c++) x[t * C + c] = wte[ids[t] * C + c] + wpe[t * C + c];
    }
    return x;
  }

  function layerNorm(x, T, weight, bias, eps) {
    // nn.LayerNorm over the channels (chapter 6): (T, C) -> (T, C), biased variance.
    const C = weight.length, y = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      let mean = 0, variance = 0;
      for (let c = 0; c < C; c++) mean += x[t * C + c];
      mean /= C;
      for (let c = 0; c < C; c++) variance += (x[t * C + c] - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / C + eps);
      for (let c = 0; c < C; c++) y[t * C + c] = (x[t * C + c] - mean) * scale * weight[c] + bias[c];
    }
    return y;
  }

  function linear(x, T, weight, bias) {
    // nn.Linear: (T, in) @ weight.T + bias -> (T, out), with weight (out, in): y[t, o] = x[t] · weight[o] + bias[o].
    // Where the browser has WebAssembly SIMD, live_fast.js does the same sums four at a time (the speed wing).
    const fast = useFast && root.gptlearnFast && root.gptlearnFast.linear;
    const y = fast ? fast(x, T, weight, bias) : null;
    if (y) return y;
    const nOut = bias.length, nIn = weight.length / nOut, out = new Float32Array(T * nOut);
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < nOut; o++) {
        let s = 0;
        for (let i = 0; i < nIn; i++) s += x[t * nIn + i] * weight[o * nIn + i];
        out[t * nOut + o] = s + bias[o];
      }
    }
    return out;
  }

  function splitHeads(qkv, T, H, hs) {
    // The fused c_attn output (T, 3C) -> q, k, v, each (H, T, hs): head h gets channels h*hs..(h+1)*hs-1.
    const C = H * hs, q = new Float32Array(T * C), k = new Float32Array(T * C), v = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        for (let d = 0; d < hs; d++) {
          const from = t * 3 * C + h * hs + d, to = (h * T + t) * hs + d;
          q[to] = qkv[from]; k[to] = qkv[from + C]; v[to] = qkv[from + 2 * C];
        }
      }
    }
    return { q, k, v };
  }

  function attentionScores(q, k, T, H, hs) {
    // q·k/√hs for every query i and key j (chapter 3): (H, T, hs) x (H, T, hs) -> (H, T, T);
    // keys after the query (j > i) get -Infinity: the causal mask.
    const scores = new Float32Array(H * T * T), scale = 1 / Math.sqrt(hs);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const qi = (h * T + i) * hs, row = (h * T + i) * T;
        for (let j = 0; j < T; j++) {
          if (j > i) { scores[row + j] = -Infinity; continue; }
          const kj = (h * T + j) * hs;
          let s = 0;
          for (let d = 0; d < hs; d++) s += q[qi + d] * k[kj + d];
          scores[row + j] = s * scale;
        }
      }
    }
    return scores;
  }

  function attentionPattern(scores, T, H) {
    // Softmax over the keys, row by row: (H, T, T) scores -> (H, T, T) weights that sum to 1.
    const pattern = new Float32Array(H * T * T);
    for (let row = 0; row < H * T; row++) {
      const at = row * T;
      let max = -Infinity, sum = 0;
      for (let j = 0; j < T; j++) max = Math.max(max, scores[at + j]);
      for (let j = 0; j < T; j++) sum += (pattern[at + j] = Math.exp(scores[at + j] - max));
      for (let j = 0; j < T; j++) pattern[at + j] /= sum;
    }
    return pattern;
  }

  function headOutputs(pattern, v, T, H, hs) {
    // z = pattern @ v for every head (chapter 3): (H, T, T) @ (H, T, hs) -> (T, H, hs), like hook_z.
    const z = new Float32Array(T * H * hs);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const out = (i * H + h) * hs;
        for (let j = 0; j <= i; j++) {  // j > i has weight 0
          const p = pattern[(h * T + i) * T + j], vj = (h * T + j) * hs;
          for (let d = 0; d < hs; d++) z[out + d] += p * v[vj + d];
        }
      }
    }
    return z;
  }

  function concatAndProject(z, T, weight, bias) {
    // Chapter 5: the heads' outputs side by side, times W_O, plus b_O. z (T, H, hs) already IS the
    // concatenation (T, C) in memory (head h's hs numbers sit at channels h*hs..(h+1)*hs-1), so
    // concatenating costs nothing: (T, C) @ W_O + b_O -> (T, C), with weight = W_O.T (C, C).
    return linear(z, T, weight, bias);
  }

  function headContributions(z, T, H, weight) {
    // What each head writes into the residual stream, z_h W_O^h (chapter 5): (T, H, hs) -> (T, H, C).
    // Summed over the heads, plus b_O, it is concatAndProject's output (TransformerLens: hook_result).
    const C = Math.sqrt(weight.length), hs = C / H, out = new Float32Array(T * H * C);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const zh = t * C + h * hs;  // head h's hs numbers for token t
        for (let o = 0; o < C; o++) {
          let s = 0;
          for (let d = 0; d < hs; d++) s += z[zh + d] * weight[o * C + h * hs + d];
          out[(t * H + h) * C + o] = s;
        }
      }
    }
    return out;
  }

  function zeroHeads(z, T, H, hs, heads) {
    // Head ablation (the induction chapter; gptlearn.patching.ablate_heads): set z of each head in `heads`
    // to zero, in place, before the output projection, so those heads add nothing and b_O stays.
    for (const h of heads) for (let t = 0; t < T; t++) z.fill(0, (t * H + h) * hs, (t * H + h + 1) * hs);
    return z;
  }

  function attention(x, T, w, l, cache, attnResult, ablate) {
    // CausalSelfAttention: (T, C) -> (T, C), recording q, k, v, scores, pattern and z as hooks do
    // (and each head's contribution, hook_result, when attnResult is true). `ablate`: heads of this
    // layer whose z is zeroed (the cached z is the ablated one, as a hook that replaces hook_z leaves it).
    const H = w.H, hs = w.C / H, a = `blocks.${l}.attn.`;
    const qkv = linear(x, T, w[a + "c_attn.weight"], w[a + "c_attn.bias"]);  // (T, C) -> (T, 3C)
    const { q, k, v } = splitHeads(qkv, T, H, hs);  // (T, 3C) -> 3 x (H, T, hs)
    const scores = attentionScores(q, k, T, H, hs);  // (H, T, T)
    const pattern = attentionPattern(scores, T, H);  // (H, T, T)
    const z = headOutputs(pattern, v, T, H, hs);  // (T, H, hs)
    if (ablate && ablate.length) zeroHeads(z, T, H, hs, ablate);
    Object.assign(cache, { [a + "hook_q"]: q, [a + "hook_k"]: k, [a + "hook_v"]: v,
      [a + "hook_attn_scores"]: scores, [a + "hook_pattern"]: pattern, [a + "hook_z"]: z });
    if (attnResult) cache[a + "hook_result"] = headContributions(z, T, H, w[a + "c_proj.weight"]);  // (T, H, C)
    return concatAndProject(z, T, w[a + "c_proj.weight"], w[a + "c_proj.bias"]);  // (T, H, hs) -> (T, C)
  }

  function gelu(x, exact) {
    // GPT-2's GELU, the tanh form (chapter 6), in place: ½x(1 + tanh z) with z = √(2/π)(x + 0.044715x³),
    // computed as x·σ(2z), the same curve (½(1 + tanh z) = σ(2z)) with one exp instead of a slower tanh,
    // as gptlearn.fast.gelu does. `exact` (activation_function "gelu") uses erf.
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      x[i] = exact ? 0.5 * v * (1 + erf(v / Math.SQRT2)) : v / (1 + Math.exp(-2 * c * (v + 0.044715 * v * v * v)));
    }
    return x;
  }

  function erf(x) {
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const y = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.exp(-x * x);
    return x < 0 ? -y : y;
  }

  function mlp(x, T, w, l) {
    // (T, C) -> (T, 4C) -> GELU -> (T, C).
    const m = `blocks.${l}.mlp.`;
    const h = gelu(linear(x, T, w[m + "c_fc.weight"], w[m + "c_fc.bias"]), w.exactGelu);  // (T, C) -> (T, 4C)
    return linear(h, T, w[m + "c_proj.weight"], w[m + "c_proj.bias"]);  // (T, 4C) -> (T, C)
  }

  function add(x, y) {
    // The residual add: x + y, elementwise, a new (T, C).
    return x.map((xi, i) => xi + y[i]);
  }

  function block(x, T, w, l, cache, attnResult, ablate) {
    // x + attn(ln_1(x)), then + mlp(ln_2(x)): (T, C) -> (T, C).
    const b = `blocks.${l}.`, eps = w.eps;
    cache[b + "hook_resid_pre"] = x;
    const attnOut = attention(layerNorm(x, T, w[b + "ln_1.weight"], w[b + "ln_1.bias"], eps), T, w, l, cache, attnResult, ablate);
    x = cache[b + "hook_resid_mid"] = add(x, attnOut);
    const mlpOut = mlp(layerNorm(x, T, w[b + "ln_2.weight"], w[b + "ln_2.bias"], eps), T, w, l);
    Object.assign(cache, { [b + "hook_attn_out"]: attnOut, [b + "hook_mlp_out"]: mlpOut });
    return (cache[b + "hook_resid_post"] = add(x, mlpOut));
  }

  function unembed(x, T, w) {
    // The tied unembedding of the last position: x[T-1] (C,) @ wte.T -> logits (V,).
    const C = w.C, wte = w["wte.weight"], V = wte.length / C, logits = new Float32Array(V);
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += x[(T - 1) * C + c] * wte[v * C + c];
      logits[v] = s;
    }
    return logits;
  }

  function runWithCache(ids, w, { attnResult = false, ablate = null } = {}) {
    // GPT.run_with_cache: ids (T,) -> {logits: (V,) for the last position, cache: hook name -> tensor}.
    // ablate: [[layer, head], ...] whose z is zeroed (checked by checkAblate first).
    const T = ids.length, cache = {};
    const byLayer = Array.from({ length: w.L }, (_, l) => (ablate || []).filter(([al]) => al === l).map(([, h]) => h));
    let x = embed(ids, w);  // (T, C)
    for (let l = 0; l < w.L; l++) x = block(x, T, w, l, cache, attnResult, byLayer[l]);  // (T, C) -> (T, C)
    x = cache["hook_ln_final"] = layerNorm(x, T, w["ln_f.weight"], w["ln_f.bias"], w.eps);
    return { logits: unembed(x, T, w), cache };
  }

  function logitLens(cache, T, w, logits, at = T - 1) {
    // The logit lens (chapter "Reading the residual stream"): for each layer l, the stream entering it at
    // position `at` (default: the last) through ln_f and the unembedding, ln_f(resid_pre[l]) @ W_U -> (V,);
    // then the model's own logits there: L + 1 arrays.
    // Python: model.lm_head(model.ln_f(cache["resid_pre", l]))[0, at].
    const C = w.C, lens = [];
    const row = (x) => x.subarray(at * C, (at + 1) * C);  // (T, C) -> (C,): one position
    for (let l = 0; l < w.L; l++) {
      lens.push(unembed(layerNorm(row(cache[`blocks.${l}.hook_resid_pre`]), 1, w["ln_f.weight"], w["ln_f.bias"], w.eps), 1, w));
    }
    lens.push(at === T - 1 ? logits : unembed(row(cache.hook_ln_final), 1, w));  // ln_f already applied
    return lens;
  }

  // ---- reading the outputs (what the explorer draws; plotting and analysis in Python) ---------------------

  function softmax(logits, temperature = 1) {
    // Probabilities from logits at a temperature, as torch.softmax(logits / temperature, -1).
    let max = -Infinity;
    for (const z of logits) max = Math.max(max, z / temperature);
    const p = Array.from(logits, (z) => Math.exp(z / temperature - max));
    const sum = p.reduce((a, b) => a + b, 0);
    return p.map((x) => x / sum);
  }

  function topK(values, k) {
    // The k largest values with their indices, largest first: [[value, index], ...] (torch.topk).
    return Array.from(values, (v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, k);
  }

  function headNorms(result, T, H, C) {
    // ‖z_h W_O^h‖ for every token and head (chapter 5): hook_result (T, H, C) -> (T, H) norms.
    const norms = new Float64Array(T * H);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        let s = 0;
        for (let o = 0; o < C; o++) s += result[(t * H + h) * C + o] ** 2;
        norms[t * H + h] = Math.sqrt(s);
      }
    }
    return norms;
  }

  function checkAblate(ablate, L, H) {
    // null when `ablate` is a list of existing [layer, head] pairs, else the message saying what is wrong.
    if (ablate === undefined || ablate === null) return null;
    if (!Array.isArray(ablate)) return "ablate must be a list of [layer, head] pairs, e.g. [[0, 2]]";
    for (const pair of ablate) {
      if (!Array.isArray(pair) || pair.length !== 2 || !pair.every(Number.isInteger)) {
        return `ablate must be a list of [layer, head] pairs of whole numbers, e.g. [[0, 2]]; got ${JSON.stringify(pair)}`;
      }
      const [l, h] = pair;
      if (l < 0 || l >= L || h < 0 || h >= H) {
        return `head [${l}, ${h}] does not exist: this model has layers 0..${L - 1} and heads 0..${H - 1} in each`;
      }
    }
    return null;
  }

  // ---- sentence embeddings (chapter 8; gptlearn/embeddings.py) ---------------------------------------

  function pool(hidden, T, C, strategy) {
    // gptlearn.embeddings.pool for one sentence: hidden states (T, C) -> (C,). "mean", "max",
    // "last", "first" or "weighted_mean" (weights 1, 2, ..., T: later tokens have read more).
    const out = new Float64Array(C);
    if (strategy === "last" || strategy === "first") {
      const t = strategy === "last" ? T - 1 : 0;
      for (let c = 0; c < C; c++) out[c] = hidden[t * C + c];
    } else if (strategy === "max") {
      out.fill(-Infinity);
      for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) out[c] = Math.max(out[c], hidden[t * C + c]);
    } else if (strategy === "mean" || strategy === "weighted_mean") {
      let total = 0;
      for (let t = 0; t < T; t++) {
        const weight = strategy === "weighted_mean" ? t + 1 : 1;
        total += weight;
        for (let c = 0; c < C; c++) out[c] += weight * hidden[t * C + c];
      }
      for (let c = 0; c < C; c++) out[c] /= total;
    } else throw new RangeError(`unknown pooling ${strategy}`);
    return out;
  }

  function cosine(a, b) {
    // a·b / (‖a‖ ‖b‖), as gptlearn.similarity.cosine.
    let ab = 0, aa = 0, bb = 0;
    for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
    return ab / Math.max(Math.sqrt(aa) * Math.sqrt(bb), 1e-12);
  }

  // ---- loading the exported data, and the public API ---------------------------------------------

  function halfToFloat(h) {
    // IEEE half-precision bits -> Float32Array, exactly (every float16 is a float32): sign, 5-bit exponent
    // (bias 15), 10-bit fraction; exponent 0 holds the subnormals, 31 infinity and NaN.
    const out = new Float32Array(h.length);
    for (let i = 0; i < h.length; i++) {
      const s = h[i] & 0x8000 ? -1 : 1, e = (h[i] >> 10) & 0x1f, f = h[i] & 0x3ff;
      out[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
    }
    return out;
  }

  function base64Bytes(text) {
    const raw = atob(text), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function flatWeights(data) {
    // Every weight, in the order of data.tensors: the exported bytes (base64, float32 or float16) read as a
    // Float32Array, or the array itself for a model already rebuilt from its change (withBase).
    if (data.weights instanceof Float32Array) return data.weights;
    const bytes = base64Bytes(data.weights);
    return data.weights_dtype === "float16" ? halfToFloat(new Uint16Array(bytes.buffer)) : new Float32Array(bytes.buffer);
  }

  function withBase(data) {
    // A fine-tuned copy stored as its change to the page's model (gptlearn.web.model_script(..., base=...))
    // -> the same data with whole weights. Each row of each tensor holds integer steps (8 bits, or 4 bits
    // stored as step + 8, two a byte) of the row's scale; a weight is the page model's plus step x scale,
    // rounded as PyTorch rounds it (a float32 product, then a float32 sum), so the page runs the very
    // model whose check logits were computed in PyTorch.
    if (data.weights_dtype !== "delta") return data;
    const page = root.gptlearnLiveData;
    if (!page || page.num_parameters !== data.base.num_parameters || JSON.stringify(page.config) !== JSON.stringify(data.config)) {
      throw new Error(`the model "${data.name}" is stored as a change to ${data.base.name}, but this page runs ` +
        `${page ? page.name : "no model"}`);
    }
    const base = flatWeights(page), bytes = base64Bytes(data.weights);
    const scales = new Float32Array(base64Bytes(data.scales).buffer), out = new Float32Array(base.length);
    let row = 0;
    for (const { shape, offset, bits, start } of data.tensors) {
      const n = shape.reduce((a, b) => a * b, 1), width = shape[shape.length - 1];
      for (let i = 0; i < n; i++) {
        const step = bits === 8 ? (bytes[start + i] << 24) >> 24 : ((bytes[start + (i >> 1)] >> ((i & 1) * 4)) & 15) - 8;
        out[offset + i] = base[offset + i] + Math.fround(step * scales[row + Math.floor(i / width)]);
      }
      row += n / width;
    }
    return { ...data, tokenizer: page.tokenizer, weights_dtype: "float32", weights: out };
  }

  function loadWeights(data) {
    // The exported data -> {name: Float32Array} plus the sizes the pieces need.
    const all = flatWeights(data), c = data.config;
    const w = { C: c.n_embd, H: c.n_head, L: c.n_layer, eps: c.layer_norm_epsilon, exactGelu: c.activation_function === "gelu" };
    for (const { name, shape, offset } of data.tensors) {
      w[name] = all.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
    }
    return w;
  }

  function nested(pattern, H, T) {
    // (H, T, T) Float32Array -> plain arrays [head][query][key].
    return Array.from({ length: H }, (_, h) =>
      Array.from({ length: T }, (_, i) => Array.from(pattern.subarray((h * T + i) * T, (h * T + i + 1) * T))));
  }

  function makeLive(data) {
    const w = loadWeights(data), c = data.config;
    const tokenizer = data.tokenizer.kind === "char" ? makeCharTokenizer(data.tokenizer) : makeBPETokenizer(data.tokenizer);

    function tokenize(text) {
      // text -> {ids, tokens, message}; message says why the model cannot run on it, or is null.
      if (typeof text !== "string") return { ids: [], tokens: [], message: "forward(text) expects a string" };
      let ids;
      try { ids = tokenizer.encode(text); } catch (e) { return { ids: [], tokens: [], message: e.message }; }
      const tokens = tokenizer.strTokens(ids);
      let message = null;
      if (ids.length === 0) message = "Type some text: the model needs at least one token.";
      else if (ids.length > c.n_positions) {
        message = `This text is ${ids.length} tokens long; ${data.name} reads at most ${c.n_positions} ` +
          `(its context). Shorten it by ${ids.length - c.n_positions} tokens.`;
      }
      return { ids, tokens, message };
    }

    function run(text, options = {}) {
      // Everything the explorer draws: {ids, tokens, message, logits, cache, T, ms, lens};
      // options.attnResult adds each head's contribution (hook_result) to the cache, options.ablate
      // ([[layer, head], ...]) knocks heads out, options.lens adds the logit lens (L + 1 x (V,)) at
      // position options.lensAt (default: the last).
      if (options === null || typeof options !== "object") options = {};
      const out = tokenize(text);
      const bad = out.message || checkAblate(options.ablate, c.n_layer, c.n_head);
      if (bad) return { ...out, message: bad, logits: null, cache: null, lens: null, T: out.ids.length, ms: 0 };
      const start = performance.now();
      const { logits, cache } = runWithCache(out.ids, w, options);
      const T = out.ids.length, at = Number.isInteger(options.lensAt) && options.lensAt >= 0 && options.lensAt < T ? options.lensAt : T - 1;
      const lens = options.lens ? logitLens(cache, T, w, logits, at) : null;
      return { ...out, logits, cache, lens, T: out.ids.length, ms: performance.now() - start };
    }

    function forward(text, options = {}) {
      // The contract: {ids, tokens, logits (V,), attention [layer][head][query][key], message}, and with
      // options.lens, lens: L + 1 arrays of V logits (the logit lens at the last position; the last is
      // logits). options.ablate: [[layer, head], ...] heads whose z is zeroed before the output projection.
      // A text the model cannot read (empty, longer than the context, ...) or a head that does not exist
      // gives logits, attention and lens null and a message saying why; it never throws.
      const r = run(text, options);
      if (r.message) return { ids: r.ids, tokens: r.tokens, logits: null, attention: null, lens: null, message: r.message };
      return {
        ids: r.ids, tokens: r.tokens, logits: Array.from(r.logits), message: null,
        attention: Array.from({ length: c.n_layer }, (_, l) => nested(r.cache[`blocks.${l}.attn.hook_pattern`], c.n_head, r.T)),
        lens: r.lens ? r.lens.map((row) => Array.from(row)) : null,
      };
    }

    function sentenceEmbedding(text, pooling = "mean") {
      // Embedder(model, pooling).encode([text])[0]: the pooled hidden states after ln_f, as a plain array
      // (null, with the reason in .message of tokenize(text), when the model cannot read the text).
      const r = run(text);
      return r.message ? null : Array.from(pool(r.cache.hook_ln_final, r.T, c.n_embd, pooling));
    }

    return {
      name: data.name, label: data.label, config: c, numParameters: data.num_parameters,
      check: data.check, bookModel: data.book_model || null, weights: w,
      tokenize, run, forward, sentenceEmbedding, tokenText: (id) => tokenizer.strTokens([id])[0],
    };
  }

  // The pieces are exported too, for the appendix and for readers who want to call them.
  const pieces = { SPLIT_PATTERN, bytesToUnicode, merge, bpe, makeBPETokenizer, makeCharTokenizer, embed,
    layerNorm, linear, splitHeads, attentionScores, attentionPattern, headOutputs, concatAndProject, headContributions, attention,
    gelu, erf, mlp, add, block, unembed, runWithCache, pool, cosine, loadWeights, zeroHeads, logitLens, checkAblate,
    softmax, topK, headNorms, withBase };

  let live = null;  // built on first use: decoding the weights costs a few milliseconds
  const named = new Map();  // name -> a model of root.gptlearnLiveModels, built on first use
  const whole = new Map();  // name -> its data with whole weights (withBase), built on first use
  function data(name) {
    // The data of the further model `name` (root.gptlearnLiveModels), its weights whole.
    if (!whole.has(name)) {
      const d = root.gptlearnLiveModels && root.gptlearnLiveModels[name];
      if (!d) throw new Error(`no model "${name}" in this page (models: ${models().join(", ") || "none"})`);
      whole.set(name, withBase(d));
    }
    return whole.get(name);
  }
  function model(name) {
    // The page's model (gptlearnLiveData), or with a name one of the further models a page may carry in
    // window.gptlearnLiveModels (gptlearn.web.model_script: e.g. the book's model after fine-tuning).
    if (name !== undefined && name !== null && name !== "") {
      if (!named.has(name)) named.set(name, makeLive(data(name)));
      return named.get(name);
    }
    if (live === null) {
      if (!root.gptlearnLiveData) throw new Error("no model data: load the script written by gptlearn.web.export first");
      live = makeLive(root.gptlearnLiveData);
    }
    return live;
  }
  const models = () => Object.keys(root.gptlearnLiveModels || {});

  const api = {
    pieces, makeLive, model, models, data,
    forward: (text, options) => model().forward(text, options),
    run: (text, options) => model().run(text, options),
    tokenize: (text) => model().tokenize(text),
    setFast: (on) => { useFast = Boolean(on); },
    fast: () => Boolean(useFast && root.gptlearnFast && root.gptlearnFast.simd),
    sentenceEmbedding: (text, pooling) => model().sentenceEmbedding(text, pooling),
  };
  root.gptlearn = root.gptlearn || {};
  root.gptlearn.live = Object.assign(root.gptlearn.live || {}, api);
}
gptlearnLiveModule(typeof window !== "undefined" ? window : globalThis);
