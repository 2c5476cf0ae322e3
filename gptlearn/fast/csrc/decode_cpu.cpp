// One decoding step of GPT-2 on the CPU, fused: the new token's whole forward pass in one call.
//
// Legend: C n_embd, H n_head, hs head size, F MLP width, V vocab, L layers, S keys so far (pos + 1).
//
// Batch-1 decoding multiplies every weight matrix by one vector, so a token costs one read of all the
// weights and its speed is the memory bandwidth. Eager PyTorch adds ~40 small operator calls a block
// around those products (Python, dispatch, thread wake-ups). Here the same arithmetic runs in one C++
// call: every matrix-vector product is split by rows over torch's threads (at::parallel_for), with its
// bias and what follows it (the residual add, the GELU) done by the thread that made those rows, and
// the small steps (LayerNorm, attention over the cache of one sequence) in between. The keys and values
// go into gptlearn's KVCache tensors, so eager steps and fused steps can follow each other.
// Python side and checks: gptlearn/fast/fused.py; timings: bench/README.md.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

enum class Epilogue { Store, AddTo, Gelu, GeluExact };

// W[r, :] . x over one row: one sequential stream through memory, four sums in flight. (Four rows at
// a time, so that each load of x served four rows, read slower: four streams at once instead of one.)
inline float dot(const float* w, const float* x, int64_t in) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= in; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  const __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));  // 8 partial sums
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_hadd_ps(h, h);
  s = _mm_cvtss_f32(_mm_hadd_ps(h, h));
#endif
#pragma omp simd reduction(+ : s)
  for (int64_t j = i; j < in; ++j) s += w[j] * x[j];  // the tail (or, without AVX2, the whole row)
  return s;
}

inline float gelu_tanh(float v) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * v * (1.f + std::tanh(k * (v + 0.044715f * v * v * v)));
}

inline float gelu_exact(float v) { return 0.5f * v * (1.f + std::erf(v * 0.7071067811865476f)); }

#if defined(__AVX2__) && defined(__FMA__)
// e^x for 8 floats: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^6 (relative error
// ~1e-7, float's own precision), times 2^n built in the exponent bits.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.f)), _mm256_set1_ps(-87.f));  // stay finite
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln2 in two parts: exact n*hi
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));  // e^r * 2^n
}
#endif

// y = gelu_tanh(y) over n values. GELU's tanh form is x * sigmoid(2z), z = sqrt(2/pi)(x + 0.044715x^3),
// since (1 + tanh z) / 2 = sigmoid(2z): one exponential, 8 at a time (std::tanh is one at a time).
void gelu_tanh_inplace(float* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 c = _mm256_set1_ps(-2.f * 0.7978845608028654f), one = _mm256_set1_ps(1.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), _mm256_mul_ps(v, v), v);
    const __m256 e = exp8(_mm256_mul_ps(c, inner));  // e^(-2z)
    _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));  // x / (1 + e^(-2z))
  }
#endif
  for (; i < n; ++i) y[i] = gelu_tanh(y[i]);
}

// y = epilogue(W x + b): W (rows, in), x (in), b (rows) or null, y (rows).
// Store: y = Wx + b; AddTo: y += Wx + b (the residual add); Gelu*: y = gelu(Wx + b).
void matvec(const float* W, const float* x, const float* b, float* y, int64_t rows, int64_t in, Epilogue e) {
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {  // each thread: a contiguous run of rows
    for (int64_t r = r0; r < r1; ++r) {
      const float v = dot(W + r * in, x, in) + (b ? b[r] : 0.f);
      switch (e) {
        case Epilogue::Store: case Epilogue::Gelu: y[r] = v; break;
        case Epilogue::AddTo: y[r] += v; break;
        case Epilogue::GeluExact: y[r] = gelu_exact(v); break;
      }
    }
    if (e == Epilogue::Gelu) gelu_tanh_inplace(y + r0, r1 - r0);  // this thread's rows, 8 at a time
  });
}

// out = LayerNorm(x) * w + b over C values (one thread: C is a few thousand at most).
void layer_norm(const float* x, const float* w, const float* b, float* out, int64_t C, float eps) {
  double mean = 0.0, var = 0.0;
  for (int64_t i = 0; i < C; ++i) mean += x[i];
  mean /= C;
  for (int64_t i = 0; i < C; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float m = static_cast<float>(mean), rstd = static_cast<float>(1.0 / std::sqrt(var / C + eps));
  for (int64_t i = 0; i < C; ++i) out[i] = (x[i] - m) * rstd * w[i] + b[i];
}

const float* ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

}  // namespace

// params: wte (V, C), wpe (P, C), ln_f.weight, ln_f.bias, lm_head (V, C), then for each layer
//   ln_1.w, ln_1.b, c_attn.w (3C, C), c_attn.b, attn.c_proj.w (C, C), attn.c_proj.b,
//   ln_2.w, ln_2.b, mlp.c_fc.w (F, C), mlp.c_fc.b, mlp.c_proj.w (C, F), mlp.c_proj.b.
// k_cache, v_cache: (L, 1, H, max_len, hs); this step writes position pos and attends to 0..pos.
// Returns the logits (1, V) of the token at position pos.
torch::Tensor decode_step(int64_t token, int64_t pos, const std::vector<torch::Tensor>& params,
                          torch::Tensor k_cache, torch::Tensor v_cache, int64_t n_head, double eps,
                          bool exact_gelu) {
  TORCH_CHECK(params.size() >= 17 && (params.size() - 5) % 12 == 0, "decode_step: expected 5 + 12 L parameters");
  for (const auto& t : params)
    TORCH_CHECK(t.is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(),
                "decode_step: parameters must be contiguous fp32 CPU tensors");
  for (const auto& t : {k_cache, v_cache})
    TORCH_CHECK(t.is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() && t.dim() == 5 &&
                    t.size(0) == static_cast<int64_t>(params.size() - 5) / 12 && t.size(1) == 1 &&
                    t.size(2) == n_head && t.size(4) * n_head == params[0].size(1),
                "decode_step: the caches must be contiguous fp32 (L, 1, H, max_len, hs) tensors");
  TORCH_CHECK(0 <= token && token < params[0].size(0), "decode_step: token id out of range");
  TORCH_CHECK(0 <= pos && pos < k_cache.size(3) && pos < params[1].size(0), "decode_step: position out of range");
  const int64_t V = params[0].size(0), C = params[0].size(1), F = params[5 + 8].size(0);
  const int64_t L = k_cache.size(0), max_len = k_cache.size(3), hs = C / n_head;
  auto shape_is = [](const torch::Tensor& t, std::vector<int64_t> want) { return t.sizes() == at::IntArrayRef(want); };
  TORCH_CHECK(params[1].dim() == 2 && params[1].size(1) == C && shape_is(params[2], {C}) && shape_is(params[3], {C}) &&
                  shape_is(params[4], {V, C}), "decode_step: wpe, ln_f or lm_head has the wrong shape");
  for (int64_t l = 0; l < L; ++l) {
    const torch::Tensor* p = params.data() + 5 + 12 * l;
    TORCH_CHECK(shape_is(p[0], {C}) && shape_is(p[1], {C}) && shape_is(p[2], {3 * C, C}) && shape_is(p[3], {3 * C}) &&
                    shape_is(p[4], {C, C}) && shape_is(p[5], {C}) && shape_is(p[6], {C}) && shape_is(p[7], {C}) &&
                    shape_is(p[8], {F, C}) && shape_is(p[9], {F}) && shape_is(p[10], {C, F}) && shape_is(p[11], {C}),
                "decode_step: the parameters of block ", l, " have the wrong shapes");
  }
  const float epsf = static_cast<float>(eps), scale = 1.f / std::sqrt(static_cast<float>(hs));
  std::vector<float> x(C), h(C), qkv(3 * C), z(C), f(F), att(n_head * (pos + 1));

  for (int64_t i = 0; i < C; ++i) x[i] = ptr(params[0])[token * C + i] + ptr(params[1])[pos * C + i];
  for (int64_t l = 0; l < L; ++l) {
    const torch::Tensor* p = params.data() + 5 + 12 * l;
    float* K = k_cache.data_ptr<float>() + l * n_head * max_len * hs;  // (H, max_len, hs) of layer l
    float* Vc = v_cache.data_ptr<float>() + l * n_head * max_len * hs;
    layer_norm(x.data(), ptr(p[0]), ptr(p[1]), h.data(), C, epsf);
    matvec(ptr(p[2]), h.data(), ptr(p[3]), qkv.data(), 3 * C, C, Epilogue::Store);  // (3C,)
    at::parallel_for(0, n_head, 1, [&](int64_t h0, int64_t h1) {  // heads split over the threads
      for (int64_t hd = h0; hd < h1; ++hd) {
        const float* q = qkv.data() + hd * hs;
        float* Kh = K + hd * max_len * hs;  // (max_len, hs)
        float* Vh = Vc + hd * max_len * hs;
        std::copy_n(qkv.data() + C + hd * hs, hs, Kh + pos * hs);  // store this step's k and v
        std::copy_n(qkv.data() + 2 * C + hd * hs, hs, Vh + pos * hs);
        float* a = att.data() + hd * (pos + 1);  // (S,) scores, then probabilities
        float mx = -INFINITY;
        for (int64_t s = 0; s <= pos; ++s) mx = std::max(mx, a[s] = dot(Kh + s * hs, q, hs) * scale);
        float sum = 0.f;
        for (int64_t s = 0; s <= pos; ++s) sum += a[s] = std::exp(a[s] - mx);
        float* out = z.data() + hd * hs;  // this head's slice of the concatenation
        std::fill_n(out, hs, 0.f);
        for (int64_t s = 0; s <= pos; ++s) {
          const float w = a[s] / sum;
          for (int64_t d = 0; d < hs; ++d) out[d] += w * Vh[s * hs + d];
        }
      }
    });
    matvec(ptr(p[4]), z.data(), ptr(p[5]), x.data(), C, C, Epilogue::AddTo);  // x += W_O z + b
    layer_norm(x.data(), ptr(p[6]), ptr(p[7]), h.data(), C, epsf);
    matvec(ptr(p[8]), h.data(), ptr(p[9]), f.data(), F, C, exact_gelu ? Epilogue::GeluExact : Epilogue::Gelu);
    matvec(ptr(p[10]), f.data(), ptr(p[11]), x.data(), C, F, Epilogue::AddTo);  // x += W_2 gelu(...) + b
  }
  layer_norm(x.data(), ptr(params[2]), ptr(params[3]), h.data(), C, epsf);
  torch::Tensor logits = torch::empty({1, V}, params[0].options());
  matvec(ptr(params[4]), h.data(), nullptr, logits.data_ptr<float>(), V, C, Epilogue::Store);
  return logits;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step, "GPT-2's forward pass for one new token of one sequence (fp32, CPU)",
        py::call_guard<py::gil_scoped_release>());  // other Python threads run meanwhile
}
