// Losses, penalties and metrics. Most are composite: they expand into other ops when built, so
// their gradients (and second-order gradients) come from those ops' rules.
#include <algorithm>

#include "ops/common.h"

namespace weft::ops {
namespace {

// mean: over every element; sum: over every element; example: summed over each example's
// features, then averaged over the batch (axis 0) -- the per-example error.
Val reduce_loss(Builder& b, Val v, const std::string& mode) {
  if (mode == "example" && v.shape().size() > 1) {
    json axes = json::array();
    for (size_t i = 1; i < v.shape().size(); ++i) axes.push_back(i);
    return b.op("mean", {b.op("sum", {v}, {{"axes", axes}})});
  }
  return b.op(mode == "sum" ? "sum" : "mean", {v});
}

const std::vector<std::string> kReductions = {"mean", "sum", "example"};

}  // namespace

// bce_with_logits(x[, target]) = mean(softplus(x) - x * t): binary cross-entropy on
// logits, stable for large |x|. t is the `target` attribute or a second input.
WEFT_OP(bce_with_logits)
    .doc("mean binary cross-entropy of logits x against target t (the attribute or a tensor)")
    .input("x")
    .optional_input("target")
    .output("loss")
    .attr("target", AttrType::Float, nullptr, "a constant target, when no target tensor is given")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      Val x = in[0];
      if (in.size() < 2 && attrs.at("target").is_null())
        throw AttrError("target",
                        "bce_with_logits needs a target: the attribute or a second input");
      if (in.size() == 2 && !attrs.at("target").is_null())
        throw AttrError("target", "give the target as an attribute or as an input, not both");
      Val sp = b.op("softplus", {x});
      Val t = in.size() == 2 ? in[1] : b.constant(attrs.at("target").get<double>());
      if (in.size() == 2) broadcast_shapes(x.shape(), t.shape());
      return std::vector<Val>{b.op("mean", {sp - x * t})};
    })
    .test({.cases = {{{4, 1}}},
           .attrs = {{"target", 1.0}},
           .order = 2,
           .extra = {{{{4, 3}, {4, 3}}, json::object()}}});

// The hinge loss of a discriminator (geometric GAN, spectral-normalization GAN):
// mean(relu(1 - t x)), t = 1 on real and -1 on fake; the generator's hinge loss is
// -mean(D(fake)), a neg and a mean.
WEFT_OP(hinge)
    .doc(
        "mean(relu(1 - t * x)) of logits x, t = 1 (real) or -1 (fake): a discriminator's hinge "
        "loss")
    .input("x")
    .output("loss")
    .attr("target", AttrType::Float, 1.0, "1 for real, -1 for fake")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      const double t = attrs.at("target");
      if (t != 1 && t != -1) throw AttrError("target", "expected 1 (real) or -1 (fake)");
      return std::vector<Val>{b.op("mean", {b.op("relu", {1.0 - in[0] * t})})};
    })
    .test({.cases = {{{4, 1}}},
           .low = -0.9,
           .high = 0.9,
           .order = 2,
           .extra = {{{{5, 1}}, {{"target", -1.0}}}}});

// Least squares GAN (Mao et al., 2017): 0.5 mean((x - t)^2), t = 1 for real (and for the
// generator's fakes), 0 for fake; its gradient does not vanish for samples far on the
// right side of the decision boundary, as the sigmoid cross-entropy's does.
WEFT_OP(least_squares)
    .doc("0.5 * mean((x - t)^2) of outputs x against the constant target t (LSGAN)")
    .input("x")
    .output("loss")
    .attr("target", AttrType::Float, 1.0, "the target value (LSGAN: 1 real, 0 fake)")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      const double t = attrs.at("target");
      return std::vector<Val>{0.5 * b.op("mean", {b.op("square", {in[0] + (-t)})})};
    })
    .test({.cases = {{{4, 1}}}, .order = 2, .extra = {{{{5, 1}}, {{"target", 0.0}}}}});

WEFT_OP(mse)
    .doc("squared error (a - b)^2, reduced by `reduction`")
    .input("a")
    .input("b")
    .output("loss")
    .choice("reduction", kReductions, "mean",
            "mean: over all elements; sum: over all; example: summed per example, averaged over "
            "the batch")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      if (in[0].shape() != in[1].shape())
        throw ShapeError("mse compares values of one shape, got " + shape_str(in[0].shape()) +
                         " and " + shape_str(in[1].shape()));
      return std::vector<Val>{
          reduce_loss(b, b.op("square", {in[0] - in[1]}), attrs.at("reduction"))};
    })
    .test({.cases = {{{4, 3}, {4, 3}}},
           .order = 2,
           .extra = {{{{4, 3}, {4, 3}}, {{"reduction", "example"}}},
                     {{{5}, {5}}, {{"reduction", "sum"}}}}});

WEFT_OP(l1)
    .doc("|a - b|, or |a| alone (an L1 penalty on a code), reduced by `reduction`")
    .input("a")
    .optional_input("b")
    .output("loss")
    .choice("reduction", kReductions, "mean",
            "mean: over all elements; sum: over all; example: summed per example, averaged over "
            "the batch")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      Val d = in.size() == 2 ? in[0] - in[1] : in[0];
      if (d.shape() != in[0].shape()) throw ShapeError("l1 compares values of one shape");
      return std::vector<Val>{reduce_loss(b, b.op("abs", {d}), attrs.at("reduction"))};
    })
    .test({.cases = {{{4, 3}}, {{4, 3}, {4, 3}}},
           .avoid = 0.1,
           .order = 2,
           .extra = {{{{4, 3}}, {{"reduction", "example"}}}}});

// kl_sparsity(h) = sum_j KL(rho || rho_hat_j), rho_hat_j the mean activation of unit j over
// the batch: rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)).
WEFT_OP(kl_sparsity)
    .doc(
        "sum over units of the Bernoulli KL between target rate rho and the batch-mean activation "
        "(h in (0,1))")
    .input("h")
    .output("loss")
    .attr("rho", AttrType::Float, 0.05, "target mean activation, in (0, 1)")
    .expand([](Builder& b, const std::vector<Val>& in, const json& attrs) {
      double rho = attrs.at("rho");
      if (!(rho > 0 && rho < 1)) throw AttrError("rho", "expected rho in (0, 1)");
      if (in[0].shape().size() != 2)
        throw ShapeError("kl_sparsity takes [batch, units] activations");
      Val rho_hat = b.op("mean", {in[0]}, {{"axes", {0}}});
      Val kl = b.constant(rho) * b.op("log", {b.constant(rho) / rho_hat}) +
               b.constant(1 - rho) * b.op("log", {b.constant(1 - rho) / (1.0 - rho_hat)});
      return std::vector<Val>{b.op("sum", {kl})};
    })
    .test({.cases = {{{5, 3}}}, .attrs = {{"rho", 0.2}}, .low = 0.1, .high = 0.9, .order = 2});

WEFT_OP(l2)
    .doc("sum of squares of all inputs (weight decay written into a loss)")
    .variadic_input("x")
    .output("loss")
    .expand([](Builder& b, const std::vector<Val>& in, const json&) {
      Val s = b.op("sum", {b.op("square", {in[0]})});
      for (size_t k = 1; k < in.size(); ++k) s = s + b.op("sum", {b.op("square", {in[k]})});
      return std::vector<Val>{s};
    })
    .test({.cases = {{{4, 3}, {3}}}, .order = 2});

// log_softmax along the last axis of [N, K]: x - max - log(sum(exp(x - max))), stable for
// large logits. Its gradient, dy - exp(y) * sum(dy), is graph ops, so it differentiates again.
WEFT_OP(log_softmax)
    .doc("log of the softmax over the last axis of [N, K] logits, computed stably")
    .input("x")
    .output("y")
    .shape([](const ShapeContext& c) {
      if (c.in[0].size() != 2)
        throw ShapeError("log_softmax takes [N, K], got " + shape_str(c.in[0]));
      return std::vector<Shape>{c.in[0]};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const T* x = in_ptr<T>(a, 0);
      T* y = out_ptr<T>(a, 0);
      const int64_t n = info.in[0][0], k = info.in[0][1];
      for (int64_t i = 0; i < n; ++i) {
        const T* r = x + i * k;
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < k; ++j) mx = std::max(mx, double(r[j]));
        for (int64_t j = 0; j < k; ++j) s += std::exp(double(r[j]) - mx);
        const double lse = mx + std::log(s);
        for (int64_t j = 0; j < k; ++j) y[i * k + j] = T(double(r[j]) - lse);
      }
    }))
    .grad([](GradContext& g) {
      Val dy = g.grad_output();
      Val total = g.op("sum", {dy}, {{"axes", {1}}, {"keepdims", true}});
      return std::vector<Val>{dy - g.op("exp", {g.output()}) * total};
    })
    .flops([](const KernelInfo& i) { return 4.0 * double(numel(i.in[0])); })
    .test({.cases = {{{4, 5}}, {{3, 1}}}, .low = -4, .high = 4, .order = 2});

// softmax_cross_entropy(logits, target) = mean over the batch of -sum(target * log_softmax):
// target is one-hot (data.onehot) or any distribution over the K classes.
WEFT_OP(softmax_cross_entropy)
    .doc(
        "mean over the batch of the cross-entropy of softmax(logits) [N, K] against target [N, K] "
        "(one-hot or soft)")
    .input("logits")
    .input("target")
    .output("loss")
    .expand([](Builder& b, const std::vector<Val>& in, const json&) {
      if (in[0].shape().size() != 2 || in[0].shape() != in[1].shape())
        throw ShapeError("softmax_cross_entropy takes logits and target of one shape [N, K], got " +
                         shape_str(in[0].shape()) + " and " + shape_str(in[1].shape()));
      Val per = b.op("sum", {in[1] * b.op("log_softmax", {in[0]})}, {{"axes", {1}}});
      return std::vector<Val>{-b.op("mean", {per})};
    })
    .test({.cases = {{{4, 3}, {4, 3}}}, .low = 0, .high = 1, .order = 2});

// accuracy(logits, target): the fraction of rows whose largest logit is the target's largest
// entry (its class). A metric to log, not a loss: its gradient is zero.
WEFT_OP(accuracy)
    .doc(
        "fraction of rows of [N, K] logits whose arg-max is the target's arg-max (a metric; zero "
        "gradient)")
    .input("logits")
    .input("target")
    .output("y")
    .shape([](const ShapeContext& c) {
      if (c.in[0].size() != 2 || c.in[0] != c.in[1])
        throw ShapeError("accuracy takes logits and target of one shape [N, K], got " +
                         shape_str(c.in[0]) + " and " + shape_str(c.in[1]));
      return std::vector<Shape>{Shape{}};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const T* x = in_ptr<T>(a, 0);
      const T* target = in_ptr<T>(a, 1);
      const int64_t n = info.in[0][0], k = info.in[0][1];
      int64_t right = 0;
      for (int64_t i = 0; i < n; ++i)
        right += std::max_element(x + i * k, x + (i + 1) * k) - (x + i * k) ==
                 std::max_element(target + i * k, target + (i + 1) * k) - (target + i * k);
      out_ptr<T>(a, 0)[0] = n ? T(double(right) / double(n)) : T(0);
    }))
    .grad([](GradContext&) {
      return std::vector<Val>{Val{}, Val{}};
    })
    .test({.cases = {{{6, 4}, {6, 4}}}});

}  // namespace weft::ops
