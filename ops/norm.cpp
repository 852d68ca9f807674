// Normalization. batch_norm normalizes each channel over the batch (and space) while
// training, updating running statistics that it uses in inference; layer_norm normalizes
// each example over its trailing axes and is composite, so twice differentiable.
#include "ops/common.h"
#include "runtime/distributed.h"

namespace weft::ops {
namespace {

// [N, C, ...] seen as [N, C, inner].
struct Chan {
  int64_t n, c, inner;
};
Chan chan(const Dims& x) {
  int64_t inner = 1;
  for (size_t i = 2; i < x.size(); ++i) inner *= x[i];
  return {x[0], x[1], inner};
}

std::vector<Shape> bn_rule(const ShapeContext& c) {
  const Shape& x = c.in[0];
  if (x.size() != 2 && x.size() != 4)
    throw ShapeError(
        "batch_norm takes [batch, channels] or [batch, channels, height, width], got " +
        shape_str(x));
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i].batch)
      throw ShapeError("only the first axis may depend on the batch, got " + shape_str(x));
  for (size_t k = 1; k < c.in.size(); ++k)
    if (c.in[k] != Shape{x[1]})
      throw ShapeError("input " + std::to_string(k) + " has shape " + shape_str(c.in[k]) +
                       ", expected [" + x[1].str() + "]");
  double m = c.attrs.at("momentum");
  if (!(m >= 0 && m <= 1)) throw AttrError("momentum", "expected momentum in [0, 1]");
  if (!(c.attrs.at("eps").get<double>() > 0)) throw AttrError("eps", "expected eps > 0");
  return {x, {x[1]}, {x[1]}};
}

// Running statistics follow PyTorch: r = (1 - m) r + m s, with the unbiased variance.
template <class T>
void update_running(T* rm, T* rv, const T* mean, const T* var, int64_t c, double m, int64_t count) {
  const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0;
  for (int64_t k = 0; k < c; ++k) {
    rm[k] = T((1 - m) * rm[k] + m * mean[k]);
    rv[k] = T((1 - m) * rv[k] + m * var[k] * unbias);
  }
}

auto bn_ref = [](auto t, const KernelInfo& info, const KernelArgs& a) {
  using T = decltype(t);
  const Chan q = chan(info.in[0]);
  const double eps = info.attrs.at("eps"), m = info.attrs.at("momentum");
  const T *x = in_ptr<T>(a, 0), *gamma = in_ptr<T>(a, 1), *beta = in_ptr<T>(a, 2);
  T *rm = a.in[3]->data<T>(), *rv = a.in[4]->data<T>();
  T *y = out_ptr<T>(a, 0), *mean = out_ptr<T>(a, 1), *var = out_ptr<T>(a, 2);
  const int64_t count = q.n * q.inner;
  for (int64_t k = 0; k < q.c; ++k) {
    if (a.ctx->training) {
      double s = 0, ss = 0;
      for (int64_t i = 0; i < q.n; ++i)
        for (int64_t j = 0; j < q.inner; ++j) s += double(x[(i * q.c + k) * q.inner + j]);
      const double mu = s / double(count);
      for (int64_t i = 0; i < q.n; ++i)
        for (int64_t j = 0; j < q.inner; ++j) {
          double d = double(x[(i * q.c + k) * q.inner + j]) - mu;
          ss += d * d;
        }
      mean[k] = T(mu);
      var[k] = T(ss / double(count));
    } else {
      mean[k] = rm[k];
      var[k] = rv[k];
    }
    const double inv = 1 / std::sqrt(double(var[k]) + eps);
    for (int64_t i = 0; i < q.n; ++i)
      for (int64_t j = 0; j < q.inner; ++j) {
        const int64_t at = (i * q.c + k) * q.inner + j;
        y[at] = T((double(x[at]) - double(mean[k])) * inv * double(gamma[k]) + double(beta[k]));
      }
  }
  if (a.ctx->training) update_running(rm, rv, mean, var, q.c, m, count);
};

auto bn_backward_ref = [](auto t, const KernelInfo& info, const KernelArgs& a) {
  using T = decltype(t);
  const Chan q = chan(info.in[1]);
  const double eps = info.attrs.at("eps");
  const T *dy = in_ptr<T>(a, 0), *x = in_ptr<T>(a, 1), *gamma = in_ptr<T>(a, 2),
          *mean = in_ptr<T>(a, 3), *var = in_ptr<T>(a, 4);
  T *dx = out_ptr<T>(a, 0), *dgamma = out_ptr<T>(a, 1), *dbeta = out_ptr<T>(a, 2);
  const double count = double(q.n * q.inner);
  for (int64_t k = 0; k < q.c; ++k) {
    const double inv = 1 / std::sqrt(double(var[k]) + eps);
    double sdy = 0, sdyx = 0;
    for (int64_t i = 0; i < q.n; ++i)
      for (int64_t j = 0; j < q.inner; ++j) {
        const int64_t at = (i * q.c + k) * q.inner + j;
        sdy += double(dy[at]);
        sdyx += double(dy[at]) * (double(x[at]) - double(mean[k])) * inv;
      }
    dbeta[k] = T(sdy);
    dgamma[k] = T(sdyx);
    for (int64_t i = 0; i < q.n; ++i)
      for (int64_t j = 0; j < q.inner; ++j) {
        const int64_t at = (i * q.c + k) * q.inner + j;
        const double xhat = (double(x[at]) - double(mean[k])) * inv;
        dx[at] = T(double(gamma[k]) * inv / count * (count * double(dy[at]) - sdy - xhat * sdyx));
      }
  }
};

// f32 batch norm on weft's plain [N, C, inner] tensors. oneDNN 2.6 runs batch norm on a
// plain layout with its generic C++ implementation (ncsp_bnorm), and these loops, channels
// in parallel and vectorized along rows (or across channels for [N, C]), took dcgan's batch
// norms from 42 to 13 ms per step on one thread (see README, Performance).
// Statistics are summed in double (eight partial sums per row, so that the loop
// vectorizes), and normalization subtracts the mean before it scales, so that a channel
// whose mean is large against its spread loses nothing to cancellation.
template <class F>
void per_channel(const Chan& q, F f) {
#pragma omp parallel for schedule(static) if (q.c > 1 && q.n * q.c * q.inner > (1 << 14))
  for (int64_t k = 0; k < q.c; ++k) f(k);
}

// The [N, C] case, channels in blocks of kBlock: f(k0, k1) for each block, in parallel.
constexpr int64_t kBlock = 256;
template <class F>
void per_block(const Chan& q, F f) {
  const int64_t blocks = (q.c + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1 && q.n * q.c > (1 << 14))
  for (int64_t b = 0; b < blocks; ++b) f(b * kBlock, std::min(q.c, (b + 1) * kBlock));
}

// Sums of f(i, j) over channel k's elements, f given the element's offset.
template <class F>
double channel_sum(const Chan& q, int64_t k, F f) {
  double total = 0;
  for (int64_t i = 0; i < q.n; ++i) {
    const int64_t row = (i * q.c + k) * q.inner;
    double part[8] = {};
    int64_t j = 0;
    for (; j + 8 <= q.inner; j += 8)
      for (int l = 0; l < 8; ++l) part[l] += double(f(row + j + l));
    for (; j < q.inner; ++j) total += double(f(row + j));
    for (double v : part) total += v;
  }
  return total;
}

// The slope below zero of the activation batch_norm_act applies (1: none; 0: relu), applied
// as max(v, 0) + slope min(v, 0): written as a branch, GCC left the loop scalar, and with
// the signs of normalized values random the branch cost more than the rest of the kernel.
float negative_slope(const json& attrs) {
  const std::string act = attrs.value("activation", "");
  if (act.empty()) return 1;
  return act == "leaky_relu" ? attrs.at("alpha").get<float>() : 0.f;
}

class PlanarBatchNorm : public Kernel {
 public:
  explicit PlanarBatchNorm(const KernelInfo& info)
      : q_(chan(info.in[0])),
        m_(info.attrs.at("momentum")),
        eps_(info.attrs.at("eps")),
        slope_(negative_slope(info.attrs)) {}
  void run(const KernelArgs& a) override {
    const float *x = in_ptr<float>(a, 0), *gamma = in_ptr<float>(a, 1), *beta = in_ptr<float>(a, 2);
    float *rm = a.in[3]->data<float>(), *rv = a.in[4]->data<float>();
    float *y = out_ptr<float>(a, 0), *mean = out_ptr<float>(a, 1), *var = out_ptr<float>(a, 2);
    const Chan q = q_;
    const double count = double(q.n * q.inner), eps = eps_;
    const bool training = a.ctx->training;
    const float slope = slope_;
    if (q.inner == 1) {  // [N, C]: a channel is a column; vectorize across channels
      per_block(q, [=](int64_t k0, int64_t k1) {
        double s[kBlock] = {}, ss[kBlock] = {};
        float muf[kBlock], scale[kBlock], shift[kBlock];
        const int64_t w = k1 - k0;
        if (training) {
          for (int64_t i = 0; i < q.n; ++i) {
            const float* r = x + i * q.c + k0;
#pragma omp simd
            for (int64_t k = 0; k < w; ++k) s[k] += r[k];
          }
          for (int64_t k = 0; k < w; ++k) muf[k] = float(s[k] / count);
          for (int64_t i = 0; i < q.n; ++i) {
            const float* r = x + i * q.c + k0;
#pragma omp simd
            for (int64_t k = 0; k < w; ++k) {
              const float d = r[k] - muf[k];
              ss[k] += d * d;
            }
          }
          for (int64_t k = 0; k < w; ++k) {
            const double mu = s[k] / count;
            mean[k0 + k] = muf[k];
            var[k0 + k] = float(ss[k] / count - (mu - muf[k]) * (mu - muf[k]));
          }
        } else {
          std::copy(rm + k0, rm + k1, mean + k0);
          std::copy(rv + k0, rv + k1, var + k0);
        }
        for (int64_t k = 0; k < w; ++k) {
          scale[k] = float(double(gamma[k0 + k]) / std::sqrt(double(var[k0 + k]) + eps));
          shift[k] = beta[k0 + k];
        }
        for (int64_t i = 0; i < q.n; ++i) {
          const float* r = x + i * q.c + k0;
          float* o = y + i * q.c + k0;
#pragma omp simd
          for (int64_t k = 0; k < w; ++k) {
            const float v = (r[k] - mean[k0 + k]) * scale[k] + shift[k];
            o[k] = std::max(v, 0.f) + slope * std::min(v, 0.f);
          }
        }
      });
      if (training) update_running(rm, rv, mean, var, q.c, m_, q.n);
      return;
    }
    per_channel(q, [=](int64_t k) {
      if (training) {
        const double mu = channel_sum(q, k, [=](int64_t at) { return x[at]; }) / count;
        const float muf = float(mu);
        const double ss = channel_sum(q, k, [=](int64_t at) {
          const float d = x[at] - muf;
          return d * d;
        });
        // (x - muf) in f32 misses mu - muf; the variance takes it back.
        mean[k] = muf;
        var[k] = float(ss / count - (mu - muf) * (mu - muf));
      } else {
        mean[k] = rm[k];
        var[k] = rv[k];
      }
      const float scale = float(double(gamma[k]) / std::sqrt(double(var[k]) + eps)), mu = mean[k],
                  shift = beta[k];
      for (int64_t i = 0; i < q.n; ++i) {
        const int64_t row = (i * q.c + k) * q.inner;
#pragma omp simd
        for (int64_t j = 0; j < q.inner; ++j) {
          const float v = (x[row + j] - mu) * scale + shift;
          y[row + j] = std::max(v, 0.f) + slope * std::min(v, 0.f);
        }
      }
    });
    if (training) update_running(rm, rv, mean, var, q.c, m_, q.n * q.inner);
  }

 private:
  Chan q_;
  double m_, eps_;
  float slope_;
};

class PlanarBatchNormBackward : public Kernel {
 public:
  explicit PlanarBatchNormBackward(const KernelInfo& info)
      : q_(chan(info.in[1])), eps_(info.attrs.at("eps")) {}
  void run(const KernelArgs& a) override {
    const float *dy = in_ptr<float>(a, 0), *x = in_ptr<float>(a, 1), *gamma = in_ptr<float>(a, 2),
                *mean = in_ptr<float>(a, 3), *var = in_ptr<float>(a, 4);
    float *dx = out_ptr<float>(a, 0), *dgamma = out_ptr<float>(a, 1), *dbeta = out_ptr<float>(a, 2);
    const Chan q = q_;
    const double count = double(q.n * q.inner), eps = eps_;
    if (q.inner == 1) {  // [N, C]: vectorized across channels, as in the forward
      per_block(q, [=](int64_t k0, int64_t k1) {
        double sdy[kBlock] = {}, sdyx[kBlock] = {};
        float ca[kBlock], cb[kBlock], cc[kBlock];
        const int64_t w = k1 - k0;
        const float* mu = mean + k0;
        for (int64_t i = 0; i < q.n; ++i) {
          const float *d = dy + i * q.c + k0, *r = x + i * q.c + k0;
#pragma omp simd
          for (int64_t k = 0; k < w; ++k) {
            sdy[k] += d[k];
            sdyx[k] += d[k] * (r[k] - mu[k]);
          }
        }
        for (int64_t k = 0; k < w; ++k) {
          const double inv = 1 / std::sqrt(double(var[k0 + k]) + eps), g = gamma[k0 + k] * inv;
          const double sx = sdyx[k] * inv;
          dbeta[k0 + k] = float(sdy[k]);
          dgamma[k0 + k] = float(sx);
          ca[k] = float(g);
          cb[k] = float(-g / count * sx * inv);
          cc[k] = float(-g / count * sdy[k]);
        }
        for (int64_t i = 0; i < q.n; ++i) {
          const float *d = dy + i * q.c + k0, *r = x + i * q.c + k0;
          float* o = dx + i * q.c + k0;
#pragma omp simd
          for (int64_t k = 0; k < w; ++k) o[k] = ca[k] * d[k] + cb[k] * (r[k] - mu[k]) + cc[k];
        }
      });
      return;
    }
    per_channel(q, [=](int64_t k) {
      const double inv = 1 / std::sqrt(double(var[k]) + eps);
      const float mu = mean[k];
      const double sdy = channel_sum(q, k, [=](int64_t at) { return dy[at]; });
      const double sdyx =
          inv * channel_sum(q, k, [=](int64_t at) { return dy[at] * (x[at] - mu); });
      dbeta[k] = float(sdy);
      dgamma[k] = float(sdyx);
      // dx = gamma inv / count (count dy - sdy - xhat sdyx), as a dy + b (x - mean) + c.
      const double g = double(gamma[k]) * inv;
      const float ca = float(g), cb = float(-g / count * sdyx * inv), cc = float(-g / count * sdy);
      for (int64_t i = 0; i < q.n; ++i) {
        const int64_t row = (i * q.c + k) * q.inner;
#pragma omp simd
        for (int64_t j = 0; j < q.inner; ++j)
          dx[row + j] = ca * dy[row + j] + cb * (x[row + j] - mu) + cc;
      }
    });
  }

 private:
  Chan q_;
  double eps_;
};

// Batch norm whose statistics are the whole batch's across the ranks of a data-parallel
// run (weft train --sync-batch-norm, PyTorch's SyncBatchNorm): each rank sums its shard and
// one allreduce per call adds the ranks' sums; the backward pass does the same with its two
// sums per channel. Each rank's loss is the mean over its shard, so its dy is the ranks'
// count times the whole batch's, and so is its dx: the trainer's average over the ranks of
// the parameters' gradients (including dgamma and dbeta, the rank's own sums) undoes it.
// The collectives are called from the kernel: the plan must run in order on every rank.
template <class T>
class SyncBatchNorm : public Kernel {
 public:
  explicit SyncBatchNorm(const KernelInfo& info)
      : q_(chan(info.in[0])),
        m_(info.attrs.at("momentum")),
        eps_(info.attrs.at("eps")),
        slope_(negative_slope(info.attrs)) {}
  void run(const KernelArgs& a) override {
    const T *x = in_ptr<T>(a, 0), *gamma = in_ptr<T>(a, 1), *beta = in_ptr<T>(a, 2);
    T *rm = a.in[3]->data<T>(), *rv = a.in[4]->data<T>();
    T *y = out_ptr<T>(a, 0), *mean = out_ptr<T>(a, 1), *var = out_ptr<T>(a, 2);
    const Chan q = q_;
    const int64_t total = q.n * q.inner * ranks().size;
    if (a.ctx->training) {
      std::vector<double> sums(size_t(2 * q.c));
      double* s = sums.data();
      per_channel(q, [=](int64_t k) {
        s[k] = channel_sum(q, k, [=](int64_t at) { return double(x[at]); });
        s[q.c + k] = channel_sum(q, k, [=](int64_t at) { return double(x[at]) * double(x[at]); });
      });
      allreduce_sum(s, sums.size());
      for (int64_t k = 0; k < q.c; ++k) {
        const double mu = s[k] / double(total);
        mean[k] = T(mu);
        var[k] = T(std::max(0.0, s[q.c + k] / double(total) - mu * mu));
      }
      update_running(rm, rv, mean, var, q.c, m_, total);
    } else {
      std::copy(rm, rm + q.c, mean);
      std::copy(rv, rv + q.c, var);
    }
    const double eps = eps_, slope = slope_;
    per_channel(q, [=](int64_t k) {
      const double scale = double(gamma[k]) / std::sqrt(double(var[k]) + eps);
      for (int64_t i = 0; i < q.n; ++i)
        for (int64_t j = 0; j < q.inner; ++j) {
          const int64_t at = (i * q.c + k) * q.inner + j;
          const double v = (double(x[at]) - double(mean[k])) * scale + double(beta[k]);
          y[at] = T(std::max(v, 0.0) + slope * std::min(v, 0.0));
        }
    });
  }

 private:
  Chan q_;
  double m_, eps_;
  float slope_;
};

template <class T>
class SyncBatchNormBackward : public Kernel {
 public:
  explicit SyncBatchNormBackward(const KernelInfo& info)
      : q_(chan(info.in[1])), eps_(info.attrs.at("eps")) {}
  void run(const KernelArgs& a) override {
    const T *dy = in_ptr<T>(a, 0), *x = in_ptr<T>(a, 1), *gamma = in_ptr<T>(a, 2),
            *mean = in_ptr<T>(a, 3), *var = in_ptr<T>(a, 4);
    T *dx = out_ptr<T>(a, 0), *dgamma = out_ptr<T>(a, 1), *dbeta = out_ptr<T>(a, 2);
    const Chan q = q_;
    const double total = double(q.n * q.inner * ranks().size), eps = eps_;
    std::vector<double> sums(size_t(2 * q.c));
    double* s = sums.data();
    per_channel(q, [=](int64_t k) {
      const double inv = 1 / std::sqrt(double(var[k]) + eps);
      s[k] = channel_sum(q, k, [=](int64_t at) { return double(dy[at]); });
      s[q.c + k] = inv * channel_sum(q, k, [=](int64_t at) {
                     return double(dy[at]) * (double(x[at]) - double(mean[k]));
                   });
      dbeta[k] = T(s[k]);  // the rank's own: the trainer averages them over the ranks
      dgamma[k] = T(s[q.c + k]);
    });
    allreduce_sum(s, sums.size());
    per_channel(q, [=](int64_t k) {
      const double inv = 1 / std::sqrt(double(var[k]) + eps), g = double(gamma[k]) * inv;
      for (int64_t i = 0; i < q.n; ++i)
        for (int64_t j = 0; j < q.inner; ++j) {
          const int64_t at = (i * q.c + k) * q.inner + j;
          const double xhat = (double(x[at]) - double(mean[k])) * inv;
          dx[at] = T(g / total * (total * double(dy[at]) - s[k] - xhat * s[q.c + k]));
        }
    });
  }

 private:
  Chan q_;
  double eps_;
};

// The synchronized kernels, for both dtypes, taken only under --sync-batch-norm.
template <template <class> class K>
std::vector<KernelEntry> sync_kernels() {
  auto maker = [](auto zero) {
    using T = decltype(zero);
    return [](const KernelInfo& info, std::string& why) -> std::unique_ptr<Kernel> {
      if (!info.sync_batch_norm) {
        why = "statistics per rank (--sync-batch-norm is off)";
        return nullptr;
      }
      return std::make_unique<K<T>>(info);
    };
  };
  return {{0, DType::f32, "sync", maker(float{}), 3}, {0, DType::f64, "sync", maker(double{}), 3}};
}

// The inputs, outputs and attributes batch_norm and batch_norm_act share.
OpDef& bn_schema(OpDef& d) {
  return d.input("x")
      .input("gamma")
      .input("beta")
      .input("running_mean")
      .input("running_var")
      .output("y")
      .output("mean")
      .output("var")
      .attr("momentum", AttrType::Float, 0.1, "weight of the new batch in the running statistics")
      .attr("eps", AttrType::Float, 1e-5, "added to the variance");
}

}  // namespace

WEFT_OP(batch_norm)
    .doc(
        "per-channel normalization over the batch (and space) while training, by running "
        "statistics in inference")
    .with(bn_schema)
    .attr("gamma_init", AttrType::Initializer, "ones", "initializer of the scale (as a layer)")
    .shape(bn_rule)
    .mutates({3, 4})
    .params([](const std::vector<Shape>& in, const json& a) {
      if (in[0].size() < 2) throw ShapeError("batch_norm takes [batch, channels, ...]");
      Shape c{in[0][1]};
      double n = double(in[0][1].n);
      return std::vector<ParamSpec>{{"gamma", c, a.at("gamma_init"), n, n},
                                    {"beta", c, "zeros", n, n},
                                    {"running_mean", c, "zeros", n, n, false},
                                    {"running_var", c, "ones", n, n, false}};
    })
    .kernel(
        0, DType::f32, "planar",
        [](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
          return std::make_unique<PlanarBatchNorm>(info);
        },
        2)
    .kernels(reference(bn_ref))
    .kernels(sync_kernels<SyncBatchNorm>())
    .grad([](GradContext& g) {
      std::vector<Val> r(5);
      Val x = g.input(0);
      if (Val dy = g.grad_output(0)) {
        auto d = g.b.ops("batch_norm_backward", {dy, x, g.input(1), g.output(1), g.output(2)},
                         {{"eps", g.attrs().at("eps")}});
        r = {d[0], d[1], d[2], Val{}, Val{}};
      }
      // The batch mean and variance are outputs too: d mean / dx = 1 / count and
      // d var / dx = 2 (x - mean) / count, per channel.
      json axes = {0};
      for (size_t i = 2; i < x.shape().size(); ++i) axes.push_back(i);
      auto per_element = [&](Val stat) {
        return g.op("broadcast_like", {g.op("expand_dims", {stat}, {{"axes", axes}}), x},
                    {{"mean", true}});
      };
      auto add = [&](Val v) { r[0] = r[0] ? r[0] + v : v; };
      if (Val gm = g.grad_output(1)) add(per_element(gm));
      if (Val gv = g.grad_output(2)) {
        Val mean =
            g.op("broadcast_like", {g.op("expand_dims", {g.output(1)}, {{"axes", axes}}), x});
        add(2.0 * ((x - mean) * per_element(gv)));
      }
      return r;
    })
    .flops([](const KernelInfo& i) { return 8.0 * double(numel(i.in[0])); })
    .test({.cases = {{{4, 3, 2, 2}, {3}, {3}, {3}, {3}},
                     {{5, 4}, {4}, {4}, {4}, {4}},
                     {{16, 600}, {600}, {600}, {600}, {600}},  // the [N, C] kernel's blocks
                     {{2, 3, 9, 9}, {3}, {3}, {3}, {3}}},
           .ranges = {{-2, 2}, {0.5, 2}, {-1, 1}, {-1, 1}, {0.5, 2}},
           .no_grad_inputs = {3, 4},
           .expect_kernel = "planar"});

WEFT_OP(batch_norm_act)
    .doc("batch_norm followed by relu or leaky_relu, made by the fusion pass (one pass over y)")
    .internal("produced by the fusion pass; differentiate batch_norm and the activation instead")
    .with(bn_schema)
    .attr("gamma_init", AttrType::Initializer, "ones", "unused")
    .choice("activation", {"relu", "leaky_relu"}, "relu", "the activation")
    .attr("alpha", AttrType::Float, 0.0, "leaky_relu's slope")
    .shape(bn_rule)
    .mutates({3, 4})
    .kernel(
        0, DType::f32, "planar",
        [](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
          return std::make_unique<PlanarBatchNorm>(info);
        },
        2)
    .kernels(sync_kernels<SyncBatchNorm>())
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      bn_ref(t, info, a);
      const double slope = negative_slope(info.attrs);
      T* y = out_ptr<T>(a, 0);
      for (int64_t i = 0; i < a.out[0]->numel(); ++i)
        if (!(y[i] > 0)) y[i] = T(slope * double(y[i]));
    }))
    .test({.cases = {{{4, 3, 2, 2}, {3}, {3}, {3}, {3}}, {{16, 600}, {600}, {600}, {600}, {600}}},
           .attrs = {{"activation", "leaky_relu"}, {"alpha", 0.2}},
           .ranges = {{-2, 2}, {0.5, 2}, {-1, 1}, {-1, 1}, {0.5, 2}},
           .no_grad_inputs = {3, 4},
           .expect_kernel = "planar"});

WEFT_OP(batch_norm_backward)
    .doc("dx, dgamma, dbeta of batch_norm in training, from dy, x, gamma and the batch statistics")
    .input("dy")
    .input("x")
    .input("gamma")
    .input("mean")
    .input("var")
    .output("dx")
    .output("dgamma")
    .output("dbeta")
    .attr("eps", AttrType::Float, 1e-5, "the forward's eps")
    .shape([](const ShapeContext& c) {
      if (c.in[0] != c.in[1]) throw ShapeError("dy and x differ in shape");
      return std::vector<Shape>{c.in[1], c.in[2], c.in[2]};
    })
    .kernel(
        0, DType::f32, "planar",
        [](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
          return std::make_unique<PlanarBatchNormBackward>(info);
        },
        2)
    .kernels(reference(bn_backward_ref))
    .kernels(sync_kernels<SyncBatchNormBackward>())
    .test({.cases = {{{4, 3, 2, 2}, {4, 3, 2, 2}, {3}, {3}, {3}},
                     {{16, 600}, {16, 600}, {600}, {600}, {600}},
                     {{2, 3, 9, 9}, {2, 3, 9, 9}, {3}, {3}, {3}}},
           .ranges = {{-2, 2}, {-2, 2}, {0.5, 2}, {-0.5, 0.5}, {0.5, 2}},
           .expect_kernel = "planar"});

// layer_norm: y = (x - mean) / sqrt(var + eps) * gamma + beta over the last `axes` axes.
WEFT_OP(layer_norm)
    .doc("normalize each example over its last `axes` axes, then scale by gamma and shift by beta")
    .input("x")
    .input("gamma")
    .input("beta")
    .output("y")
    .attr("axes", AttrType::PosInt, 1, "how many trailing axes to normalize over")
    .attr("eps", AttrType::Float, 1e-5, "added to the variance")
    .params([](const std::vector<Shape>& in, const json& a) {
      int64_t k = a.at("axes");
      if (k >= int64_t(in[0].size())) throw AttrError("axes", "must leave the batch axis out");
      Shape s(in[0].end() - k, in[0].end());
      double n = double(checked_numel(bind_batch(s, 1)));
      return std::vector<ParamSpec>{{"gamma", s, "ones", n, n}, {"beta", s, "zeros", n, n}};
    })
    .expand([](Builder& b, const std::vector<Val>& in, const json& a) {
      const Shape& x = in[0].shape();
      int64_t k = a.at("axes");
      if (k >= int64_t(x.size())) throw AttrError("axes", "must leave the batch axis out");
      Shape tail(x.end() - k, x.end());
      if (in[1].shape() != tail || in[2].shape() != tail)
        throw ShapeError("gamma and beta must have shape " + shape_str(tail));
      json axes = json::array();
      for (int64_t i = int64_t(x.size()) - k; i < int64_t(x.size()); ++i) axes.push_back(i);
      json keep = {{"axes", axes}, {"keepdims", true}};
      Val centered = in[0] - b.op("mean", {in[0]}, keep);
      Val var = b.op("mean", {b.op("square", {centered})}, keep);
      Val normed = centered / b.op("sqrt", {var + a.at("eps").get<double>()});
      return std::vector<Val>{normed * in[1] + in[2]};
    })
    .test({.cases = {{{3, 5}, {5}, {5}}, {{2, 3, 4}, {4}, {4}}},
           .attrs = {{"axes", 1}},
           .ranges = {{-2, 2}, {0.5, 2}, {-1, 1}},
           .order = 2,
           .extra = {{{{2, 3, 4}, {3, 4}, {3, 4}}, {{"axes", 2}}}}});

// Spectral normalization (Miyato et al., 2018): a weight divided by its largest singular
// value sigma, the weight seen as a matrix [out, everything else]. sigma comes from power
// iteration on a vector u that is state (saved in checkpoints, never trained), one
// iteration per training forward as in PyTorch: v = M^T u / |M^T u|, u <- M v / |M v|. The
// iteration's result enters the graph as the constant outer product u v^T, so sigma =
// sum(u v^T * w) and its gradient u v^T are graph ops (exact once u has converged; PyTorch's
// approximation before). In inference u is not updated.
WEFT_OP(spectral_norm_uv)
    .doc(
        "the outer product u v^T of power iteration's singular vectors of weight [out, ...] seen "
        "as a matrix, shaped like the weight (constant: no gradient); updates u in training")
    .input("weight")
    .input("u")
    .output("uv")
    .attr("iterations", AttrType::PosInt, 1, "power iterations per training forward")
    .shape([](const ShapeContext& c) {
      if (c.in[0].size() < 2 || c.in[1].size() != 1 || c.in[1][0] != c.in[0][0])
        throw ShapeError("spectral_norm takes a weight [out, ...] and u [out], got " +
                         shape_str(c.in[0]) + " and " + shape_str(c.in[1]));
      for (const Dim& d : c.in[0])
        if (d.batch) throw ShapeError("a weight's shape cannot depend on the batch");
      return std::vector<Shape>{c.in[0]};
    })
    .mutates({1})
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const T* w = in_ptr<T>(a, 0);
      T* u = a.in[1]->data<T>();  // state, updated in place while training
      T* uv = out_ptr<T>(a, 0);
      const int64_t rows = info.in[0][0], cols = numel(info.in[0]) / rows;
      std::vector<double> uu(u, u + rows), v(static_cast<size_t>(cols));
      auto normalize = [](std::vector<double>& x) {
        double n = 0;
        for (double e : x) n += e * e;
        n = std::sqrt(n) + 1e-12;
        for (double& e : x) e /= n;
      };
      normalize(uu);
      const int64_t iterations = a.ctx->training ? info.attrs.at("iterations").get<int64_t>() : 0;
      auto right = [&] {  // v = normalize(M^T u)
        std::fill(v.begin(), v.end(), 0.0);
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j)
            v[size_t(j)] += double(w[i * cols + j]) * uu[size_t(i)];
        normalize(v);
      };
      right();
      for (int64_t k = 0; k < iterations; ++k) {
        for (int64_t i = 0; i < rows; ++i) {  // u = normalize(M v)
          double s = 0;
          for (int64_t j = 0; j < cols; ++j) s += double(w[i * cols + j]) * v[size_t(j)];
          uu[size_t(i)] = s;
        }
        normalize(uu);
        if (k + 1 < iterations) right();
      }
      if (iterations > 0)
        for (int64_t i = 0; i < rows; ++i) u[i] = T(uu[size_t(i)]);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) uv[i * cols + j] = T(uu[size_t(i)] * v[size_t(j)]);
    }))
    .grad([](GradContext&) {
      return std::vector<Val>{Val{}, Val{}};
    })
    .flops([](const KernelInfo& i) { return 6.0 * double(numel(i.in[0])); })
    .test({.cases = {{{4, 6}, {4}}}, .attrs = {{"iterations", 50}}, .no_grad_inputs = {0, 1}});

WEFT_OP(spectral_norm)
    .doc(
        "weight / sigma, sigma its largest singular value by power iteration on the state u [out] "
        "(as a layer attribute of linear and conv2d: \"spectral_norm\": true)")
    .input("weight")
    .input("u")
    .output("y")
    .attr("iterations", AttrType::PosInt, 1, "power iterations per training forward")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      Val uv = b.op("spectral_norm_uv", in, {{"iterations", attrs.at("iterations")}});
      Val sigma = b.op("sum", {b.op("mul", {uv, in[0]})});
      return std::vector<Val>{in[0] / sigma};
    })
    .test({.cases = {{{4, 6}, {4}}, {{3, 2, 2, 2}, {3}}},
           .attrs = {{"iterations", 200}},
           .no_grad_inputs = {1}});

}  // namespace weft::ops
