// Fused reset-aware selective scan (Mamba1's recurrence) for the CPU: forward and backward.
//
//   h_t[d, n] = a_t[d, n] * h_{t-1}[d, n] + delta_t[d] * u_t[d] * B_t[g(d), n]
//   a_t[d, n] = exp(delta_t[d] * A[d, n]) * keep_t          (keep_t = 0 at a reset)
//   y_t[d]    = sum_n C_t[g(d), n] * h_t[d, n] + D[d] * u_t[d]
//
// Layout (all contiguous): u, delta [Bt, T, Dt]; A [Dt, N]; B, C [Bt, T, G, N]; D [Dt];
// h0 [Bt, Dt, N]; keep [Bt, T] or empty (no resets). Channel d belongs to group d / (Dt / G):
// G = 1 for Mamba1, G = 4 directions for SS2D (VMamba's grouped B/C).
//
// Why this shape: each (row b, block of channels) is an independent recurrence, so the work
// units are (b, group, channel block), run on torch's intra-op threads. Inside a unit the
// state is held transposed, [N][block], so the innermost loop runs over contiguous channels
// and vectorises (broadcast B_t[n], C_t[n]; no horizontal sum for y). The forward keeps only
// the state entering every `chunk` steps (the chunked PyTorch scan's memory profile); the
// backward recomputes a chunk's states and decays into a per-unit buffer, then runs the
// reverse recurrence g_{t-1} = a_t * (g_t + dL/dh_t) there. Sums over channels (gB, gC) and
// over rows (gA, gD) are written per unit and reduced afterwards, so no unit writes another's
// memory and the result does not depend on the thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_common.h"

namespace {

using mambazoo_cpu::fast_exp;   // csrc/cpu_common.h (shared with Mamba2's extension)

struct Dims {
  int64_t Bt, T, Dt, N, G, Di, nblk, DB, chunk, nchunks;
  // Units per thread at least: small scans run inline on the calling thread, as torch's own
  // elementwise ops do below 32K elements. A parallel region costs a thread wake-up, which on a
  // loaded machine (more runnable threads than cores) is milliseconds, more than a small scan.
  int64_t grain() const { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T * DB * N)); }
};

Dims dims_of(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, int64_t nblk,
             int64_t chunk) {
  Dims s;
  s.Bt = u.size(0);
  s.T = u.size(1);
  s.Dt = u.size(2);
  s.N = A.size(1);
  s.G = B.size(2);
  TORCH_CHECK(s.Dt % s.G == 0, "channels ", s.Dt, " not divisible by groups ", s.G);
  s.Di = s.Dt / s.G;
  TORCH_CHECK(nblk >= 1 && s.Di % nblk == 0, "nblk ", nblk, " must divide ", s.Di);
  s.nblk = nblk;
  s.DB = s.Di / nblk;
  s.chunk = chunk;
  s.nchunks = (s.T + chunk - 1) / chunk;
  return s;
}

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                  const at::Tensor& keep) {
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C, &D}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == u.scalar_type(),
                "selective_scan_cpu: inputs must be contiguous CPU tensors of one dtype");
  }
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes() && A.dim() == 2 && A.size(0) == u.size(2) &&
                  B.dim() == 4 && B.size(0) == u.size(0) && B.size(1) == u.size(1) &&
                  B.size(3) == A.size(1) && C.sizes() == B.sizes() && D.numel() == u.size(2),
              "selective_scan_cpu: bad shapes");
  TORCH_CHECK(keep.numel() == 0 || (keep.is_contiguous() && keep.scalar_type() == u.scalar_type() &&
                                    keep.numel() == u.size(0) * u.size(1)),
              "selective_scan_cpu: keep must be empty or [Bt, T] of the inputs' dtype");
}

template <typename scalar_t>
void forward_kernel(const Dims& s, const scalar_t* u, const scalar_t* delta, const scalar_t* A,
                    const scalar_t* B, const scalar_t* C, const scalar_t* D, const scalar_t* h0,
                    const scalar_t* keep, scalar_t* y, scalar_t* h_last, scalar_t* ck) {
  const int64_t units = s.Bt * s.G * s.nblk;
  at::parallel_for(0, units, s.grain(), [&](int64_t begin, int64_t end) {
    const int64_t N = s.N, DB = s.DB;
    std::vector<scalar_t> h(N * DB), At(N * DB), dt(DB), dtx(DB), acc(DB);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / (s.G * s.nblk), g = (unit / s.nblk) % s.G, blk = unit % s.nblk;
      const int64_t d0 = g * s.Di + blk * DB;
      for (int64_t j = 0; j < DB; ++j)
        for (int64_t n = 0; n < N; ++n) {
          At[n * DB + j] = A[(d0 + j) * N + n];
          h[n * DB + j] = h0[(b * s.Dt + d0 + j) * N + n];
        }
      for (int64_t t = 0; t < s.T; ++t) {
        if (ck != nullptr && t % s.chunk == 0) {  // the state entering this chunk
          scalar_t* dst = ck + ((b * s.nchunks + t / s.chunk) * s.Dt + d0) * N;
          for (int64_t j = 0; j < DB; ++j)
            for (int64_t n = 0; n < N; ++n) dst[j * N + n] = h[n * DB + j];
        }
        const int64_t row = (b * s.T + t) * s.Dt + d0;
        if (keep != nullptr && keep[b * s.T + t] == scalar_t(0))
          std::fill(h.begin(), h.end(), scalar_t(0));  // a reset: h_{t-1} is taken as zero
        for (int64_t j = 0; j < DB; ++j) {
          dt[j] = delta[row + j];
          dtx[j] = dt[j] * u[row + j];
          acc[j] = D[d0 + j] * u[row + j];
        }
        const scalar_t* Bv = B + ((b * s.T + t) * s.G + g) * N;
        const scalar_t* Cv = C + ((b * s.T + t) * s.G + g) * N;
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t bn = Bv[n], cn = Cv[n];
          scalar_t* hn = h.data() + n * DB;
          const scalar_t* an = At.data() + n * DB;
#pragma omp simd
          for (int64_t j = 0; j < DB; ++j) {
            const scalar_t hv = fast_exp(dt[j] * an[j]) * hn[j] + dtx[j] * bn;
            hn[j] = hv;
            acc[j] += hv * cn;
          }
        }
        for (int64_t j = 0; j < DB; ++j) y[row + j] = acc[j];
      }
      scalar_t* dst = h_last + (b * s.Dt + d0) * N;
      for (int64_t j = 0; j < DB; ++j)
        for (int64_t n = 0; n < N; ++n) dst[j * N + n] = h[n * DB + j];
    }
  });
}

template <typename scalar_t>
void backward_kernel(const Dims& s, const scalar_t* u, const scalar_t* delta, const scalar_t* A,
                     const scalar_t* B, const scalar_t* C, const scalar_t* D, const scalar_t* keep,
                     const scalar_t* ck, const scalar_t* gy, const scalar_t* g_final, scalar_t* gu,
                     scalar_t* gdelta, scalar_t* gA_rows, scalar_t* gB_blk, scalar_t* gC_blk,
                     scalar_t* gD_rows, scalar_t* gh0) {
  const int64_t units = s.Bt * s.G * s.nblk;
  at::parallel_for(0, units, s.grain(), [&](int64_t begin, int64_t end) {
    const int64_t N = s.N, DB = s.DB, K = s.chunk;
    // hs[i] = state before step i of the chunk (hs[0] = checkpoint), as[i] = decay of step i.
    std::vector<scalar_t> hs((K + 1) * N * DB), as(K * N * DB), g(N * DB), At(N * DB), gAl(N * DB);
    std::vector<scalar_t> dt(DB), xv(DB), dtx(DB), gyv(DB), gbu(DB), gdl(DB), gDl(DB);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / (s.G * s.nblk), g_ = (unit / s.nblk) % s.G, blk = unit % s.nblk;
      const int64_t d0 = g_ * s.Di + blk * DB;
      for (int64_t j = 0; j < DB; ++j)
        for (int64_t n = 0; n < N; ++n) {
          At[n * DB + j] = A[(d0 + j) * N + n];
          g[n * DB + j] = g_final ? g_final[(b * s.Dt + d0 + j) * N + n] : scalar_t(0);
        }
      std::fill(gAl.begin(), gAl.end(), scalar_t(0));
      std::fill(gDl.begin(), gDl.end(), scalar_t(0));
      for (int64_t c = s.nchunks - 1; c >= 0; --c) {
        const int64_t t0 = c * K, L = std::min(K, s.T - t0);
        const scalar_t* src = ck + ((b * s.nchunks + c) * s.Dt + d0) * N;
        for (int64_t j = 0; j < DB; ++j)
          for (int64_t n = 0; n < N; ++n) hs[n * DB + j] = src[j * N + n];
        for (int64_t i = 0; i < L; ++i) {  // recompute the chunk's states and decays
          const int64_t t = t0 + i, row = (b * s.T + t) * s.Dt + d0;
          const scalar_t k = keep ? keep[b * s.T + t] : scalar_t(1);
          for (int64_t j = 0; j < DB; ++j) {
            dt[j] = delta[row + j];
            dtx[j] = dt[j] * u[row + j];
          }
          const scalar_t* Bv = B + ((b * s.T + t) * s.G + g_) * N;
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t bn = Bv[n];
            const scalar_t* an = At.data() + n * DB;
            const scalar_t* hp = hs.data() + (i * N + n) * DB;
            scalar_t* hc = hs.data() + ((i + 1) * N + n) * DB;
            scalar_t* ai = as.data() + (i * N + n) * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) {
              const scalar_t a = fast_exp(dt[j] * an[j]) * k;
              ai[j] = a;
              hc[j] = a * hp[j] + dtx[j] * bn;
            }
          }
        }
        for (int64_t i = L - 1; i >= 0; --i) {  // reverse recurrence over the chunk
          const int64_t t = t0 + i, row = (b * s.T + t) * s.Dt + d0;
          for (int64_t j = 0; j < DB; ++j) {
            dt[j] = delta[row + j];
            xv[j] = u[row + j];
            dtx[j] = dt[j] * xv[j];
            gyv[j] = gy[row + j];
            gbu[j] = 0;
            gdl[j] = 0;
          }
          const int64_t bc = ((b * s.T + t) * s.G + g_) * N;
          const scalar_t* Bv = B + bc;
          const scalar_t* Cv = C + bc;
          scalar_t* gBv = gB_blk + blk * s.Bt * s.T * s.G * N + bc;
          scalar_t* gCv = gC_blk + blk * s.Bt * s.T * s.G * N + bc;
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t bn = Bv[n], cn = Cv[n];
            const scalar_t* an = At.data() + n * DB;
            const scalar_t* hp = hs.data() + (i * N + n) * DB;
            const scalar_t* hc = hs.data() + ((i + 1) * N + n) * DB;
            const scalar_t* ai = as.data() + (i * N + n) * DB;
            scalar_t* gn = g.data() + n * DB;
            scalar_t* gan = gAl.data() + n * DB;
            scalar_t sB = 0, sC = 0;
#pragma omp simd reduction(+ : sB, sC)
            for (int64_t j = 0; j < DB; ++j) {
              const scalar_t gg = gn[j] + gyv[j] * cn;     // dL/dh_t, all paths
              sC += gyv[j] * hc[j];                          // y_t = C_t . h_t
              const scalar_t gdA = gg * hp[j] * ai[j];       // through a_t = exp(delta_t A)
              gdl[j] += gdA * an[j];
              gan[j] += gdA * dt[j];
              gbu[j] += gg * bn;                             // through delta_t u_t B_t
              sB += gg * dtx[j];
              gn[j] = gg * ai[j];                            // carried to step t-1
            }
            gBv[n] = sB;
            gCv[n] = sC;
          }
          for (int64_t j = 0; j < DB; ++j) {
            gdelta[row + j] = gdl[j] + gbu[j] * xv[j];
            gu[row + j] = gbu[j] * dt[j] + gyv[j] * D[d0 + j];
            gDl[j] += gyv[j] * xv[j];
          }
        }
      }
      for (int64_t j = 0; j < DB; ++j) {
        for (int64_t n = 0; n < N; ++n) {
          gh0[(b * s.Dt + d0 + j) * N + n] = g[n * DB + j];
          gA_rows[(b * s.Dt + d0 + j) * N + n] = gAl[n * DB + j];
        }
        gD_rows[b * s.Dt + d0 + j] = gDl[j];
      }
    }
  });
}

// Returns y [Bt, T, Dt], the final state [Bt, Dt, N] and (when save) the chunk-entry states
// [Bt, nchunks, Dt, N] that backward needs.
std::vector<at::Tensor> fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                            const at::Tensor& h0, const at::Tensor& keep, int64_t chunk,
                            int64_t nblk, bool save) {
  check_inputs(u, delta, A, B, C, D, keep);
  TORCH_CHECK(h0.is_contiguous() && h0.scalar_type() == u.scalar_type() &&
                  h0.numel() == u.size(0) * u.size(2) * A.size(1),
              "selective_scan_cpu: h0 must be a contiguous [Bt, Dt, N]");
  const Dims s = dims_of(u, A, B, nblk, chunk);
  auto y = at::empty_like(u);
  auto h_last = at::empty({s.Bt, s.Dt, s.N}, u.options());
  auto ck = save ? at::empty({s.Bt, s.nchunks, s.Dt, s.N}, u.options()) : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    forward_kernel<scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                             B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(),
                             h0.data_ptr<scalar_t>(), keep.numel() ? keep.data_ptr<scalar_t>() : nullptr,
                             y.data_ptr<scalar_t>(), h_last.data_ptr<scalar_t>(),
                             save ? ck.data_ptr<scalar_t>() : nullptr);
  });
  return {y, h_last, ck};
}

// Returns gu, gdelta, gA, gB, gC, gD, gh0. g_final may be empty (no gradient into the final state).
std::vector<at::Tensor> bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                            const at::Tensor& keep, const at::Tensor& ck, const at::Tensor& gy,
                            const at::Tensor& g_final, int64_t chunk, int64_t nblk) {
  check_inputs(u, delta, A, B, C, D, keep);
  const Dims s = dims_of(u, A, B, nblk, chunk);
  TORCH_CHECK(ck.is_contiguous() && ck.numel() == s.Bt * s.nchunks * s.Dt * s.N, "bad checkpoints");
  TORCH_CHECK(gy.is_contiguous() && gy.sizes() == u.sizes() && gy.scalar_type() == u.scalar_type(), "bad gy");
  TORCH_CHECK(g_final.numel() == 0 || (g_final.is_contiguous() && g_final.numel() == s.Bt * s.Dt * s.N &&
                                       g_final.scalar_type() == u.scalar_type()), "bad g_final");
  auto gu = at::empty_like(u), gdelta = at::empty_like(u);
  auto gA_rows = at::empty({s.Bt, s.Dt, s.N}, u.options());
  auto gD_rows = at::empty({s.Bt, s.Dt}, u.options());
  auto gB_blk = at::empty({s.nblk, s.Bt, s.T, s.G, s.N}, u.options());
  auto gC_blk = at::empty({s.nblk, s.Bt, s.T, s.G, s.N}, u.options());
  auto gh0 = at::empty({s.Bt, s.Dt, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_bwd", [&] {
    backward_kernel<scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                              B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(),
                              keep.numel() ? keep.data_ptr<scalar_t>() : nullptr, ck.data_ptr<scalar_t>(),
                              gy.data_ptr<scalar_t>(), g_final.numel() ? g_final.data_ptr<scalar_t>() : nullptr,
                              gu.data_ptr<scalar_t>(), gdelta.data_ptr<scalar_t>(), gA_rows.data_ptr<scalar_t>(),
                              gB_blk.data_ptr<scalar_t>(), gC_blk.data_ptr<scalar_t>(),
                              gD_rows.data_ptr<scalar_t>(), gh0.data_ptr<scalar_t>());
  });
  auto gB = s.nblk == 1 ? gB_blk[0] : gB_blk.sum(0);
  auto gC = s.nblk == 1 ? gC_blk[0] : gC_blk.sum(0);
  return {gu, gdelta, gA_rows.sum(0), gB, gC, gD_rows.sum(0), gh0};
}

// ---------------------------------------------------------------------------------------------
// Depthwise causal conv with reset masks, + bias, + SiLU, in one pass (forward and backward).
// networks/causal_conv.causal_conv1d's contract: x [B, T, C] (rows may be strided, channels
// contiguous), weight [C, K], bias [C], state [B, C, K-1] (oldest first), seg [B, T] int64
// segment ids (causal_conv.segment_ids: 0 until the first reset, +1 at each). Tap k of step t
// reads input s = t - k and counts only if s lies in t's segment (the carried state, s < 0,
// belongs to segment 0). The new state is the last K-1 inputs, zeroed before the row's last
// reset. The eager version is a cat, a compare, two multiplies and an add per tap over
// [B, T, C], plus SiLU: ~10 passes forward and more backward (issue 22's elementwise work).

namespace {

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t v) { return scalar_t(1) / (scalar_t(1) + fast_exp(-v)); }

template <typename scalar_t>
void conv_forward_kernel(int64_t B, int64_t T, int64_t C, int64_t K, const scalar_t* x, int64_t sb,
                         int64_t st, const scalar_t* w, const scalar_t* bias, const scalar_t* state,
                         const int64_t* seg, scalar_t* out, scalar_t* new_state) {
  const int64_t Km1 = K - 1;
  at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T * C)), [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> acc(C);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t* sg = seg + b * T;
      const scalar_t* xb = x + b * sb;
      const scalar_t* stb = state + b * C * Km1;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < C; ++c) acc[c] = bias[c];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - k;
          if (s >= 0 ? sg[s] != sg[t] : sg[t] != 0) continue;  // the tap crosses a reset
          if (s >= 0) {
            const scalar_t* xs = xb + s * st;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += w[c * K + Km1 - k] * xs[c];
          } else {
            for (int64_t c = 0; c < C; ++c) acc[c] += w[c * K + Km1 - k] * stb[c * Km1 + Km1 + s];
          }
        }
        scalar_t* o = out + (b * T + t) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = acc[c] * sigmoid(acc[c]);
      }
      const int64_t last = sg[T - 1];
      for (int64_t j = 0; j < Km1; ++j) {
        const int64_t s = T - Km1 + j;
        const bool keep = s >= 0 ? sg[s] == last : last == 0;
        for (int64_t c = 0; c < C; ++c)
          new_state[(b * C + c) * Km1 + j] = !keep ? scalar_t(0) : (s >= 0 ? xb[s * st + c] : stb[c * Km1 + Km1 + s]);
      }
    }
  });
}

template <typename scalar_t>
void conv_backward_kernel(int64_t B, int64_t T, int64_t C, int64_t K, const scalar_t* x, int64_t sb,
                          int64_t st, const scalar_t* w, const scalar_t* bias, const scalar_t* state,
                          const int64_t* seg, const scalar_t* gout, const scalar_t* gns, scalar_t* gx,
                          scalar_t* gw_rows, scalar_t* gb_rows, scalar_t* gstate) {
  const int64_t Km1 = K - 1;
  at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T * C)), [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> acc(C), gp(C);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t* sg = seg + b * T;
      const scalar_t* xb = x + b * sb;
      const scalar_t* stb = state + b * C * Km1;
      scalar_t* gxb = gx + b * T * C;
      scalar_t* gsb = gstate + b * C * Km1;
      scalar_t* gwb = gw_rows + b * C * K;
      scalar_t* gbb = gb_rows + b * C;
      std::fill(gxb, gxb + T * C, scalar_t(0));
      std::fill(gsb, gsb + C * Km1, scalar_t(0));
      std::fill(gwb, gwb + C * K, scalar_t(0));
      std::fill(gbb, gbb + C, scalar_t(0));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < C; ++c) acc[c] = bias[c];  // recompute the pre-activation
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - k;
          if (s >= 0 ? sg[s] != sg[t] : sg[t] != 0) continue;
          for (int64_t c = 0; c < C; ++c)
            acc[c] += w[c * K + Km1 - k] * (s >= 0 ? xb[s * st + c] : stb[c * Km1 + Km1 + s]);
        }
        const scalar_t* go = gout + (b * T + t) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {  // d silu(p) / dp = sig(p) (1 + p (1 - sig(p)))
          const scalar_t sgm = sigmoid(acc[c]);
          gp[c] = go[c] * sgm * (scalar_t(1) + acc[c] * (scalar_t(1) - sgm));
          gbb[c] += gp[c];
        }
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - k;
          if (s >= 0 ? sg[s] != sg[t] : sg[t] != 0) continue;
          if (s >= 0) {
            const scalar_t* xs = xb + s * st;
            scalar_t* gs = gxb + s * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              gs[c] += w[c * K + Km1 - k] * gp[c];
              gwb[c * K + Km1 - k] += xs[c] * gp[c];
            }
          } else {
            for (int64_t c = 0; c < C; ++c) {
              gsb[c * Km1 + Km1 + s] += w[c * K + Km1 - k] * gp[c];
              gwb[c * K + Km1 - k] += stb[c * Km1 + Km1 + s] * gp[c];
            }
          }
        }
      }
      if (gns != nullptr) {  // the new state holds (masked) copies of the last K-1 inputs
        const int64_t last = sg[T - 1];
        for (int64_t j = 0; j < Km1; ++j) {
          const int64_t s = T - Km1 + j;
          if (!(s >= 0 ? sg[s] == last : last == 0)) continue;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t g = gns[(b * C + c) * Km1 + j];
            if (s >= 0) gxb[s * C + c] += g; else gsb[c * Km1 + Km1 + s] += g;
          }
        }
      }
    }
  });
}

void check_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& state,
                const at::Tensor& seg) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && x.device().is_cpu(), "conv: x [B, T, C], channels contiguous");
  TORCH_CHECK(w.is_contiguous() && bias.is_contiguous() && state.is_contiguous() && seg.is_contiguous() &&
                  w.scalar_type() == x.scalar_type() && bias.scalar_type() == x.scalar_type() &&
                  state.scalar_type() == x.scalar_type() && seg.scalar_type() == at::kLong,
              "conv: contiguous weight/bias/state of x's dtype, int64 seg");
  TORCH_CHECK(w.size(0) == x.size(2) && bias.numel() == x.size(2) && state.size(0) == x.size(0) &&
                  state.size(1) == x.size(2) && state.size(2) == w.size(1) - 1 && seg.numel() == x.size(0) * x.size(1),
              "conv: shapes");
}

}  // namespace

std::vector<at::Tensor> conv_fwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                 const at::Tensor& state, const at::Tensor& seg) {
  check_conv(x, w, bias, state, seg);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  auto out = at::empty({B, T, C}, x.options()), ns = at::empty({B, C, K - 1}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_fwd", [&] {
    conv_forward_kernel<scalar_t>(B, T, C, K, x.data_ptr<scalar_t>(), x.stride(0), x.stride(1), w.data_ptr<scalar_t>(),
                                  bias.data_ptr<scalar_t>(), state.data_ptr<scalar_t>(), seg.data_ptr<int64_t>(),
                                  out.data_ptr<scalar_t>(), ns.data_ptr<scalar_t>());
  });
  return {out, ns};
}

std::vector<at::Tensor> conv_bwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                 const at::Tensor& state, const at::Tensor& seg, const at::Tensor& gout,
                                 const at::Tensor& gns) {
  check_conv(x, w, bias, state, seg);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  TORCH_CHECK(gout.is_contiguous() && gout.numel() == B * T * C && (gns.numel() == 0 || gns.is_contiguous()),
              "conv_bwd: gradients");
  auto gx = at::empty({B, T, C}, x.options()), gstate = at::empty_like(state);
  auto gw_rows = at::empty({B, C, K}, x.options()), gb_rows = at::empty({B, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_bwd", [&] {
    conv_backward_kernel<scalar_t>(B, T, C, K, x.data_ptr<scalar_t>(), x.stride(0), x.stride(1), w.data_ptr<scalar_t>(),
                                   bias.data_ptr<scalar_t>(), state.data_ptr<scalar_t>(), seg.data_ptr<int64_t>(),
                                   gout.data_ptr<scalar_t>(), gns.numel() ? gns.data_ptr<scalar_t>() : nullptr,
                                   gx.data_ptr<scalar_t>(), gw_rows.data_ptr<scalar_t>(), gb_rows.data_ptr<scalar_t>(),
                                   gstate.data_ptr<scalar_t>());
  });
  return {gx, gw_rows.sum(0), gb_rows.sum(0), gstate};
}

// ---------------------------------------------------------------------------------------------
// One acting step of a MambaStack of Mamba1 mixers (no autograd: acting and collection only).
// At batch 1 the eager step is ~170 small aten ops (issue 22); here the four projections per
// layer stay at::linear (BLAS) and everything between them (RMSNorm, conv tap + bias + SiLU,
// softplus, the state update and read-out, D skip, SiLU gate, residual) is one loop each.
// Per layer, `layers` holds 10 tensors: norm weight, in_proj weight, conv weight [Di, K],
// conv bias, x_proj weight, dt_proj weight, dt_proj bias, A_log [Di, N], D, out_proj weight.

using mambazoo_cpu::dot;
using mambazoo_cpu::rms_norm;
using mambazoo_cpu::silu;
using mambazoo_cpu::small_linear;

// The ssm part of one step for every row and channel of a layer (a template, not a lambda
// inside AT_DISPATCH: a #pragma cannot sit inside a macro's arguments).
template <typename scalar_t>
void step_ssm(int64_t B, int64_t L, int64_t l, int64_t Di, int64_t N, int64_t dt_rank, int64_t R2,
              const scalar_t* dbc, const scalar_t* dt, const scalar_t* xc, const scalar_t* xz,
              const scalar_t* A, const scalar_t* Dp, const scalar_t* ssm, scalar_t* ssm_new, scalar_t* yv) {
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* Bv = dbc + b * R2 + dt_rank;
    const scalar_t* Cv = Bv + N;
    for (int64_t d = 0; d < Di; ++d) {
      const scalar_t raw = dt[b * Di + d];
      const scalar_t delta = raw > scalar_t(20) ? raw : std::log1p(std::exp(raw));  // softplus
      const scalar_t xv = xc[b * Di + d], dx = delta * xv;
      const scalar_t* hs = ssm + ((b * L + l) * Di + d) * N;
      scalar_t* nhs = ssm_new + ((b * L + l) * Di + d) * N;
      const scalar_t* Ad = A + d * N;
      scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t v = fast_exp(delta * Ad[n]) * hs[n] + dx * Bv[n];
        nhs[n] = v;
        acc += v * Cv[n];
      }
      yv[b * Di + d] = (acc + Dp[d] * xv) * silu(xz[b * 2 * Di + Di + d]);
    }
  }
}

template <typename scalar_t>
void step_conv(int64_t B, int64_t L, int64_t l, int64_t Di, int64_t Km1, const scalar_t* xz,
               const scalar_t* cw, const scalar_t* cb, const scalar_t* conv, scalar_t* conv_new,
               scalar_t* xc) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < Di; ++d) {  // window = carried inputs (oldest first) + this input
      const scalar_t* st = conv + ((b * L + l) * Di + d) * Km1;
      scalar_t* nst = conv_new + ((b * L + l) * Di + d) * Km1;
      const scalar_t xi = xz[b * 2 * Di + d];
      scalar_t acc = cb[d] + xi * cw[d * (Km1 + 1) + Km1];
      for (int64_t k = 0; k < Km1; ++k) acc += st[k] * cw[d * (Km1 + 1) + k];
      for (int64_t k = 0; k + 1 < Km1; ++k) nst[k] = st[k + 1];
      if (Km1 > 0) nst[Km1 - 1] = xi;
      xc[b * Di + d] = silu(acc);
    }
}

std::vector<at::Tensor> mamba1_stack_step(const at::Tensor& x_in, const at::Tensor& in_w,
                                          const at::Tensor& in_b, const at::Tensor& conv,
                                          const at::Tensor& ssm, const std::vector<at::Tensor>& layers,
                                          const at::Tensor& out_norm_w, double eps, int64_t dt_rank) {
  const int64_t L = conv.size(1), B = x_in.size(0);
  TORCH_CHECK(int64_t(layers.size()) == 10 * L, "mamba1_stack_step: 10 tensors per layer");
  TORCH_CHECK(conv.is_contiguous() && ssm.is_contiguous(), "mamba1_stack_step: contiguous states");
  for (const auto& t : layers)
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == x_in.scalar_type(), "mamba1_stack_step: parameters");
  at::Tensor h = in_w.numel() ? small_linear(x_in.contiguous(), in_w, in_b.numel() ? &in_b : nullptr)
                              : x_in.clone();
  h = h.contiguous();
  const int64_t H = h.size(1), Di = conv.size(2), Km1 = conv.size(3), N = ssm.size(3);
  auto conv_new = at::empty_like(conv), ssm_new = at::empty_like(ssm);
  auto hn = at::empty_like(h), xc = at::empty({B, Di}, h.options()), yv = at::empty({B, Di}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mamba1_stack_step", [&] {
    std::vector<scalar_t> A(Di * N);
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor* p = layers.data() + 10 * l;
      rms_norm<scalar_t>(h.data_ptr<scalar_t>(), p[0].data_ptr<scalar_t>(), hn.data_ptr<scalar_t>(), B, H, eps);
      auto xz = small_linear(hn, p[1]).contiguous();  // [B, 2 Di]: x and the gate z
      step_conv<scalar_t>(B, L, l, Di, Km1, xz.data_ptr<scalar_t>(), p[2].data_ptr<scalar_t>(),
                          p[3].data_ptr<scalar_t>(), conv.data_ptr<scalar_t>(), conv_new.data_ptr<scalar_t>(),
                          xc.data_ptr<scalar_t>());
      auto dbc = small_linear(xc, p[4]).contiguous();  // [B, R + 2N]
      auto dt = small_linear(dbc.narrow(1, 0, dt_rank).contiguous(), p[5], &p[6]).contiguous();  // [B, Di]
      const scalar_t* Al = p[7].data_ptr<scalar_t>();
      for (int64_t i = 0; i < Di * N; ++i) A[i] = -fast_exp(Al[i]);
      step_ssm<scalar_t>(B, L, l, Di, N, dt_rank, dbc.size(1), dbc.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                         xc.data_ptr<scalar_t>(), xz.data_ptr<scalar_t>(), A.data(), p[8].data_ptr<scalar_t>(),
                         ssm.data_ptr<scalar_t>(), ssm_new.data_ptr<scalar_t>(), yv.data_ptr<scalar_t>());
      h.add_(small_linear(yv, p[9]));  // residual
    }
    rms_norm<scalar_t>(h.data_ptr<scalar_t>(), out_norm_w.data_ptr<scalar_t>(), hn.data_ptr<scalar_t>(), B, H, eps);
  });
  return {hn, conv_new, ssm_new};
}

#ifdef _OPENMP
// The OpenMP runtime's own view, to check that the extension shares torch's runtime.
int64_t omp_threads() { return omp_get_max_threads(); }
#else
int64_t omp_threads() { return -1; }
#endif

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd, "fused selective scan forward (CPU)");
  m.def("bwd", &bwd, "fused selective scan backward (CPU)");
  m.def("conv_fwd", &conv_fwd, "causal conv with reset masks + bias + SiLU, forward (CPU)");
  m.def("conv_bwd", &conv_bwd, "causal conv with reset masks + bias + SiLU, backward (CPU)");
  m.def("mamba1_stack_step", &mamba1_stack_step, "one no-grad step of a Mamba1 MambaStack (CPU)");
  m.def("omp_threads", &omp_threads, "omp_get_max_threads() as the extension sees it");
}
