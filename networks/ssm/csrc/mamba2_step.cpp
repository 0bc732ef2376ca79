// One acting step of a MambaStack of Mamba2 mixers (no autograd: acting and collection only). The
// eager step is ~230 small aten ops at batch 1 (issue 22); here the two projections per layer are
// dot-product loops and everything between them (RMSNorm, conv tap + bias + SiLU, softplus, decay,
// the state update and read-out, D skip, SiLU(z) gate, grouped RMSNorm, residual) is one loop each.
// Per layer, `layers` holds 9 tensors: norm weight, in_proj weight, conv weight [Cd, K], conv bias,
// dt_bias [H], A_log [H], D [H], gated-norm weight [H*P], out_proj weight.

#include "mamba2_cpu.h"

namespace {

using mamba2_cpu::fast_exp;
using mamba2_cpu::silu;
using mamba2_cpu::softplus;

using mambazoo_cpu::dot;
using mambazoo_cpu::rms_norm;
using mambazoo_cpu::small_linear;

struct StepDims {
  int64_t B, L, H, P, G, N, Cd, Km1, Di;
};

// conv tap + bias + SiLU over the xBC channels of zxbcdt; the window is the carried inputs (oldest
// first) then this input, and the new state drops the oldest.
template <typename scalar_t>
void step_conv(const StepDims& d, int64_t l, const scalar_t* zx, int64_t row, const scalar_t* cw,
               const scalar_t* cb, const scalar_t* conv, scalar_t* conv_new, scalar_t* xbc) {
  const int64_t Km1 = d.Km1;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.Cd; ++c) {
      const scalar_t* st = conv + ((b * d.L + l) * d.Cd + c) * Km1;
      scalar_t* nst = conv_new + ((b * d.L + l) * d.Cd + c) * Km1;
      const scalar_t xi = zx[b * row + d.Di + c];
      scalar_t acc = cb[c] + xi * cw[c * (Km1 + 1) + Km1];
      for (int64_t k = 0; k < Km1; ++k) acc += st[k] * cw[c * (Km1 + 1) + k];
      for (int64_t k = 0; k + 1 < Km1; ++k) nst[k] = st[k + 1];
      nst[Km1 - 1] = xi;
      xbc[b * d.Cd + c] = silu(acc);
    }
}

// The state update and read-out for every row and head, D skip, SiLU(z) gate, then RMSNorm over
// each group's Di / G channels: yv [B, Di] is out_proj's input.
template <typename scalar_t>
void step_ssm(const StepDims& d, int64_t l, const scalar_t* zx, int64_t row, const scalar_t* xbc,
              const scalar_t* dt_bias, const scalar_t* A_log, const scalar_t* Dp, const scalar_t* nw,
              double gate_eps, const scalar_t* ssm, scalar_t* ssm_new, scalar_t* yv) {
  const int64_t P = d.P, N = d.N, R = d.H / d.G;
  for (int64_t b = 0; b < d.B; ++b) {
    const scalar_t* xb = xbc + b * d.Cd;
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t g = h / R;
      const scalar_t dtv = softplus(zx[b * row + d.Di + d.Cd + h] + dt_bias[h]);
      const scalar_t a = std::exp(-dtv * std::exp(A_log[h]));
      const scalar_t *xv = xb + h * P, *Bv = xb + d.Di + g * N, *Cv = xb + d.Di + d.G * N + g * N;
      const scalar_t* s = ssm + ((b * d.L + l) * d.H + h) * P * N;
      scalar_t* ns = ssm_new + ((b * d.L + l) * d.H + h) * P * N;
      for (int64_t p = 0; p < P; ++p) {
        const scalar_t dx = dtv * xv[p];
        scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t v = a * s[p * N + n] + dx * Bv[n];
          ns[p * N + n] = v;
          acc += v * Cv[n];
        }
        const int64_t i = h * P + p;
        yv[b * d.Di + i] = (acc + Dp[h] * xv[p]) * silu(zx[b * row + i]);
      }
    }
    const int64_t gs = d.Di / d.G;  // the gated RMSNorm, per group
    for (int64_t g = 0; g < d.G; ++g) {
      scalar_t* yg = yv + b * d.Di + g * gs;
      double ss = 0;
      for (int64_t i = 0; i < gs; ++i) ss += double(yg[i]) * double(yg[i]);
      const scalar_t r = scalar_t(1.0 / std::sqrt(ss / double(gs) + gate_eps));
      for (int64_t i = 0; i < gs; ++i) yg[i] = yg[i] * r * nw[g * gs + i];
    }
  }
}

}  // namespace

std::vector<at::Tensor> mamba2_stack_step(const at::Tensor& x_in, const at::Tensor& in_w,
                                          const at::Tensor& in_b, const at::Tensor& conv,
                                          const at::Tensor& ssm, const std::vector<at::Tensor>& layers,
                                          const at::Tensor& out_norm_w, double eps, double gate_eps,
                                          int64_t ngroups) {
  StepDims d;
  d.B = x_in.size(0), d.L = conv.size(1), d.Cd = conv.size(2), d.Km1 = conv.size(3);
  TORCH_CHECK(ssm.dim() == 5 && ssm.size(0) == d.B && ssm.size(1) == d.L, "mamba2_stack_step: ssm [B, L, H, P, N]");
  d.H = ssm.size(2), d.P = ssm.size(3), d.N = ssm.size(4), d.G = ngroups, d.Di = d.H * d.P;
  TORCH_CHECK(int64_t(layers.size()) == 9 * d.L, "mamba2_stack_step: 9 tensors per layer");
  TORCH_CHECK(d.Km1 >= 1 && d.G >= 1 && d.H % d.G == 0 && d.Cd == d.Di + 2 * d.G * d.N, "mamba2_stack_step: shapes");
  TORCH_CHECK(conv.is_contiguous() && ssm.is_contiguous() && conv.scalar_type() == x_in.scalar_type() &&
                  ssm.scalar_type() == x_in.scalar_type(), "mamba2_stack_step: contiguous states of x's dtype");
  for (const auto& t : layers)
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == x_in.scalar_type(), "mamba2_stack_step: parameters");
  at::Tensor h = in_w.numel() ? small_linear(x_in.contiguous(), in_w, in_b.numel() ? &in_b : nullptr)
                              : x_in.clone();
  h = h.contiguous();
  const int64_t Hm = h.size(1), row = d.Di + d.Cd + d.H;
  auto conv_new = at::empty_like(conv), ssm_new = at::empty_like(ssm);
  auto hn = at::empty_like(h), xbc = at::empty({d.B, d.Cd}, h.options()), yv = at::empty({d.B, d.Di}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mamba2_stack_step", [&] {
    for (int64_t l = 0; l < d.L; ++l) {
      const at::Tensor* p = layers.data() + 9 * l;
      TORCH_CHECK(p[1].size(0) == row && p[2].size(0) == d.Cd && p[2].size(1) == d.Km1 + 1 && p[4].numel() == d.H &&
                      p[7].numel() == d.Di && p[8].size(1) == d.Di && p[8].size(0) == Hm, "mamba2_stack_step: layer shapes");
      rms_norm<scalar_t>(h.data_ptr<scalar_t>(), p[0].data_ptr<scalar_t>(), hn.data_ptr<scalar_t>(), d.B, Hm, eps);
      auto zx = small_linear(hn, p[1]);  // [B, Di + Cd + H]: z, xBC, dt
      const scalar_t* zxp = zx.data_ptr<scalar_t>();
      step_conv<scalar_t>(d, l, zxp, row, p[2].data_ptr<scalar_t>(), p[3].data_ptr<scalar_t>(),
                          conv.data_ptr<scalar_t>(), conv_new.data_ptr<scalar_t>(), xbc.data_ptr<scalar_t>());
      step_ssm<scalar_t>(d, l, zxp, row, xbc.data_ptr<scalar_t>(), p[4].data_ptr<scalar_t>(),
                         p[5].data_ptr<scalar_t>(), p[6].data_ptr<scalar_t>(), p[7].data_ptr<scalar_t>(), gate_eps,
                         ssm.data_ptr<scalar_t>(), ssm_new.data_ptr<scalar_t>(), yv.data_ptr<scalar_t>());
      h.add_(small_linear(yv, p[8]));  // residual
    }
    rms_norm<scalar_t>(h.data_ptr<scalar_t>(), out_norm_w.data_ptr<scalar_t>(), hn.data_ptr<scalar_t>(), d.B, Hm, eps);
  });
  return {hn, conv_new, ssm_new};
}

