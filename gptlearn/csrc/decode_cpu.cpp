// One decoding step of GPT-2 on the CPU, fused: the new token's whole forward pass in one call.
//
// Legend: C n_embd, H n_head, hs head size, F MLP width, V vocab, L layers, S keys so far (pos + 1).
//
// Batch-1 decoding multiplies every weight matrix by one vector, so a token costs one read of all the
// weights (~500 MB for GPT-2 124M in fp32) and its speed is the memory bandwidth. Eager PyTorch adds
// ~40 small operator calls a block around those products (Python, dispatch, thread wake-ups); at
// ~20 ms a token that is 15-25% of the time. Here the same arithmetic runs in one C++ call: every
// matrix-vector product is split by rows over torch's threads (at::parallel_for), with its bias and
// what follows it (the residual add, the GELU) done on each row as it is produced, and the small
// steps (LayerNorm, attention over the cache of one sequence) in between. The keys and values go
// into gptlearn's KVCache tensors, so eager steps and fused steps can follow each other.
// Python side, checks and the book's explanation: gptlearn/fused.py.

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

// y[r] = W[r, :] . x for rows r0 <= r < r1 of a row-major (rows, in) matrix, four rows at a time so
// each load of x serves four rows and four sums are in flight.
inline void dot4(const float* w, const float* x, int64_t in, float out[4]) {
  const float *w0 = w, *w1 = w + in, *w2 = w + 2 * in, *w3 = w + 3 * in;
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 8 <= in; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
  }
  // the four 8-lane sums -> four numbers: [a0 a1 a2 a3]
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
#else
  out[0] = out[1] = out[2] = out[3] = 0.f;
#endif
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = i; j < in; ++j) {
    s0 += w0[j] * x[j];
    s1 += w1[j] * x[j];
    s2 += w2[j] * x[j];
    s3 += w3[j] * x[j];
  }
  out[0] += s0, out[1] += s1, out[2] += s2, out[3] += s3;
}

inline float dot(const float* w, const float* x, int64_t in) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < in; ++j) s += w[j] * x[j];
  return s;
}

inline float gelu_tanh(float v) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * v * (1.f + std::tanh(k * (v + 0.044715f * v * v * v)));
}

inline float gelu_exact(float v) { return 0.5f * v * (1.f + std::erf(v * 0.7071067811865476f)); }

// y = epilogue(W x + b): W (rows, in), x (in), b (rows) or null, y (rows).
// Store: y = Wx + b; AddTo: y += Wx + b (the residual add); Gelu*: y = gelu(Wx + b).
void matvec(const float* W, const float* x, const float* b, float* y, int64_t rows, int64_t in, Epilogue e) {
  const int64_t groups = (rows + 3) / 4;  // threads take contiguous runs of 4-row groups
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r = g * 4, n = std::min<int64_t>(4, rows - r);
      float acc[4];
      if (n == 4) {
        dot4(W + r * in, x, in, acc);
      } else {
        for (int64_t j = 0; j < n; ++j) acc[j] = dot(W + (r + j) * in, x, in);
      }
      for (int64_t j = 0; j < n; ++j) {
        const float v = acc[j] + (b ? b[r + j] : 0.f);
        switch (e) {
          case Epilogue::Store: y[r + j] = v; break;
          case Epilogue::AddTo: y[r + j] += v; break;
          case Epilogue::Gelu: y[r + j] = gelu_tanh(v); break;
          case Epilogue::GeluExact: y[r + j] = gelu_exact(v); break;
        }
      }
    }
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
