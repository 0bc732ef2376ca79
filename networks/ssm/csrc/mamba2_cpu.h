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

#include "cpu_common.h"

namespace mamba2_cpu {

using mambazoo_cpu::fast_exp;   // csrc/cpu_common.h, shared with Mamba1's extension
using mambazoo_cpu::silu;
using mambazoo_cpu::softplus;

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
