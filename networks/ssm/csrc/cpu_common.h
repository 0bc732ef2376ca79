// Small helpers of both CPU extensions (Mamba1's selective_scan_cpu.cpp, Mamba2's mamba2_*.cpp):
// one copy, included by each; ninja's header dependencies rebuild both when this file changes.
#pragma once
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mambazoo_cpu {

// exp for float: Cephes' expf polynomial (~2 ulp), branch-free so the channel loop vectorises
// (std::exp does not vectorise without -ffast-math / libmvec). Arguments here are delta*A <= 0;
// below -87.3 the result is flushed to 0 (a state decayed that far is zero in float32 anyway).
inline float fast_exp(float x) {
  const float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
  const float n = std::nearbyint(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : p * scale;
}
inline double fast_exp(double x) { return std::exp(x); }  // float64: exactness over speed

template <typename scalar_t>
inline scalar_t silu(scalar_t v) { return v / (scalar_t(1) + fast_exp(-v)); }

template <typename scalar_t>
inline scalar_t softplus(scalar_t v) { return v > scalar_t(20) ? v : std::log1p(std::exp(v)); }  // F.softplus

template <typename scalar_t>
scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

template <typename scalar_t>
void rms_norm(const scalar_t* x, const scalar_t* w, scalar_t* out, int64_t rows, int64_t H, double eps) {
  for (int64_t b = 0; b < rows; ++b) {
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += double(x[b * H + i]) * double(x[b * H + i]);
    const scalar_t r = scalar_t(1.0 / std::sqrt(ss / double(H) + eps));
    for (int64_t i = 0; i < H; ++i) out[b * H + i] = x[b * H + i] * r * w[i];
  }
}

// x [B, K] @ W[M, K]^T (+ bias): at batch <= 4 a loop of dot products (rows of W contiguous)
// beats at::linear, whose dispatch and BLAS set-up cost more than the ~65-80K MACs themselves.
inline at::Tensor small_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor* bias = nullptr) {
  if (x.size(0) > 4 || !x.is_contiguous())
    return (bias ? at::linear(x, W, *bias) : at::linear(x, W)).contiguous();
  const int64_t B = x.size(0), K = x.size(1), M = W.size(0);
  TORCH_CHECK(W.size(1) == K, "linear: shapes");
  auto out = at::empty({B, M}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "small_linear", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = W.data_ptr<scalar_t>();
    const scalar_t* bp = bias ? bias->data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t m = 0; m < M; ++m) op[b * M + m] = dot(xp + b * K, wp + m * K, K) + (bp ? bp[m] : scalar_t(0));
  });
  return out;
}

}  // namespace mambazoo_cpu
