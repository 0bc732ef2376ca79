// Shared by mamba2_cpu.cpp (the SSD recurrence, the gated RMSNorm, the bindings) and
// mamba2_step.cpp (the acting step): one extension, two files, so that neither passes ~500 lines.
#pragma once
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace mamba2_cpu {

// exp for float, branch-free so that loops over channels vectorise: the Cephes polynomial of
// selective_scan_cpu.cpp (copied, not shared, so that editing this file never rebuilds Mamba1's).
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
inline double fast_exp(double x) { return std::exp(x); }

template <typename scalar_t>
inline scalar_t silu(scalar_t v) { return v / (scalar_t(1) + fast_exp(-v)); }

template <typename scalar_t>
inline scalar_t softplus(scalar_t v) { return v > scalar_t(20) ? v : std::log1p(std::exp(v)); }  // F.softplus

}  // namespace mamba2_cpu

std::vector<at::Tensor> ssd_fwd(const at::Tensor& xbc, const at::Tensor& dt, const at::Tensor& A,
                                const at::Tensor& D, const at::Tensor& h0, const at::Tensor& keep,
                                int64_t chunk, bool save);
std::vector<at::Tensor> ssd_bwd(const at::Tensor& xbc, const at::Tensor& dt, const at::Tensor& A,
                                const at::Tensor& D, const at::Tensor& h0, const at::Tensor& keep,
                                const at::Tensor& ck, const at::Tensor& gy, const at::Tensor& g_final,
                                int64_t chunk);
std::vector<at::Tensor> gated_norm_fwd(const at::Tensor& y, const at::Tensor& z, const at::Tensor& w, int64_t G,
                                       double eps);
std::vector<at::Tensor> gated_norm_bwd(const at::Tensor& y, const at::Tensor& z, const at::Tensor& w,
                                       const at::Tensor& rstd, const at::Tensor& gout, int64_t G);
std::vector<at::Tensor> mamba2_stack_step(const at::Tensor& x_in, const at::Tensor& in_w,
                                          const at::Tensor& in_b, const at::Tensor& conv,
                                          const at::Tensor& ssm, const std::vector<at::Tensor>& layers,
                                          const at::Tensor& out_norm_w, double eps, double gate_eps,
                                          int64_t ngroups);
