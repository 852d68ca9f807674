// Ops that draw random numbers. Draws are a pure function of (seed, step, phase, node,
// element), so a run resumed from a checkpoint draws what it would have drawn anyway.
#include "ops/common.h"
#include "runtime/rng.h"
#include "runtime/sources.h"

namespace weft::ops {

// dropout: y = x * mask, mask = [u >= p] / (1 - p) while training, 1 otherwise.
WEFT_OP(dropout)
    .doc("zero each element with probability p while training and scale the rest by 1/(1-p)")
    .input("x")
    .output("y")
    .output("mask")
    .attr("p", AttrType::Float, 0.5, "drop probability in [0, 1)")
    .shape([](const ShapeContext& c) {
      double p = c.attrs.at("p");
      if (!(p >= 0 && p < 1)) throw AttrError("p", "expected p in [0, 1)");
      return std::vector<Shape>{c.in[0], c.in[0]};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const double p = info.attrs.at("p");
      const T* x = in_ptr<T>(a, 0);
      T *y = out_ptr<T>(a, 0), *m = out_ptr<T>(a, 1);
      const int64_t n = a.out[0]->numel();
      if (!a.ctx->training || p == 0) {
        for (int64_t i = 0; i < n; ++i) m[i] = T(1), y[i] = x[i];
        return;
      }
      const uint64_t key = stream_key(a.ctx->seed, a.ctx->step, a.ctx->phase, a.node_key);
      const T keep = T(1 / (1 - p));
      // A rank's shard of the batch draws its own elements of the one stream.
      const uint64_t first = a.ctx->shard * uint64_t(n);
      for (int64_t i = 0; i < n; ++i) {
        m[i] = uniform01(key, first + uint64_t(i)) >= p ? keep : T(0);
        y[i] = x[i] * m[i];
      }
    }))
    .grad([](GradContext& g) {  // the mask is a constant of the draw: no gradient flows through it
      Val d = g.grad_output(0);
      return std::vector<Val>{d ? d * g.output(1) : Val{}};
    })
    .test({.cases = {{{6, 5}}}, .attrs = {{"p", 0.3}}, .order = 2});

// The trainer's noise inputs ({"normal": ...}, {"uniform": ...}) as ops, so that a device
// with kernels for them draws its noise where it is used instead of receiving it from the
// host. The stream is the kernel's node_key; the values are the ones the host draws
// (draw_noise in runtime/sources.h), so a run is the same wherever its noise is drawn.
// scalars: [offset], the first element's index in the stream (a rank's shard; 0 if absent).
std::vector<Shape> noise_shape(const ShapeContext&) {
  throw ShapeError("made by the trainer for a noise input, not by graphs");
}

template <bool Normal>
std::vector<KernelEntry> noise_kernels() {
  std::vector<KernelEntry> r = reference([](auto, const KernelInfo& info, const KernelArgs& a) {
    const uint64_t offset = a.n_scalars > 0 ? uint64_t(a.scalars[0]) : 0;
    draw_noise(Normal, *a.out[0], info.attrs.at("a"), info.attrs.at("b"), a.node_key, offset);
  });
  for (auto& e : r) e.name = "cpu";
  return r;
}

WEFT_OP(noise_normal)
    .doc("a noise input's values: a + b * N(0, 1), element i drawn from (node_key, i)")
    .output("y")
    .attr("a", AttrType::Float, 0.0, "mean")
    .attr("b", AttrType::Float, 1.0, "standard deviation")
    .shape(noise_shape)
    .internal("drawn by the trainer for a noise input")
    .kernels(noise_kernels<true>());

WEFT_OP(noise_uniform)
    .doc("a noise input's values: uniform in [a, b), element i drawn from (node_key, i)")
    .output("y")
    .attr("a", AttrType::Float, -1.0, "low")
    .attr("b", AttrType::Float, 1.0, "high")
    .shape(noise_shape)
    .internal("drawn by the trainer for a noise input")
    .kernels(noise_kernels<false>());

}  // namespace weft::ops
