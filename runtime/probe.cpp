#include "runtime/probe.h"

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace weft {

namespace {

// C[m,n] = alpha * op(A) op(B) + beta * C, row-major, by oneDNN's GEMM.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float beta, float* c) {
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, ta ? m : k,
                                      b, tb ? k : n, beta, c, n);
  WEFT_ASSERT(st == dnnl_success, fmt::format("dnnl_sgemm failed with status {}", int(st)));
}

// A permutation of 0..n-1 from (seed, round) alone (Fisher-Yates on a counter stream).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t round) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  const uint64_t key = stream_key(seed, 0x9a0be, round);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = int64_t(uniform01(key, uint64_t(i)) * double(i + 1));
    std::swap(p[size_t(i)], p[size_t(std::min(j, i))]);
  }
  return p;
}

// Softmax of each row of logits, in place; returns the summed cross-entropy.
double softmax_rows(float* logits, const int* labels, int64_t n, int k) {
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    float* r = logits + i * k;
    const float mx = *std::max_element(r, r + k);
    double s = 0;
    for (int j = 0; j < k; ++j) s += std::exp(double(r[j] - mx));
    loss += std::log(s) - double(r[labels[i]] - mx);
    for (int j = 0; j < k; ++j) r[j] = float(std::exp(double(r[j] - mx)) / s);
  }
  return loss;
}

void check_labels(const Features& f, int classes, const char* what) {
  WEFT_ASSERT(int64_t(f.x.size()) == f.n * f.d && int64_t(f.labels.size()) == f.n,
              fmt::format("{} features: sizes", what));
  for (int l : f.labels)
    if (l < 0 || l >= classes)
      throw Error(fmt::format("the {} labels hold {}, outside 0..{}", what, l, classes - 1));
}

}  // namespace

void standardize(Features& train, Features& test) {
  WEFT_ASSERT(train.d == test.d, "standardize: feature counts differ");
  const int64_t n = std::max<int64_t>(train.n, 1), d = train.d;
  std::vector<double> mean(size_t(d), 0.0), sq(size_t(d), 0.0);
  for (int64_t i = 0; i < train.n; ++i)
    for (int64_t j = 0; j < d; ++j) mean[size_t(j)] += train.x[size_t(i * d + j)];
  for (auto& m : mean) m /= double(n);
  for (int64_t i = 0; i < train.n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const double c = train.x[size_t(i * d + j)] - mean[size_t(j)];
      sq[size_t(j)] += c * c;
    }
  std::vector<double> scale(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    const double sd = std::sqrt(sq[size_t(j)] / double(n));
    scale[size_t(j)] = sd > 1e-8 ? 1.0 / sd : 0.0;
  }
  for (Features* f : {&train, &test})
    for (int64_t i = 0; i < f->n; ++i)
      for (int64_t j = 0; j < d; ++j) {
        float& v = f->x[size_t(i * d + j)];
        v = float((v - mean[size_t(j)]) * scale[size_t(j)]);
      }
}

ProbeResult linear_probe(const Features& train, const Features& test, int classes,
                         const ProbeOptions& o) {
  check_labels(train, classes, "training");
  check_labels(test, classes, "test");
  if (train.d != test.d)
    throw Error(
        fmt::format("the training features have {} values per example, the test "
                    "features {}",
                    train.d, test.d));
  if (train.n == 0 || test.n == 0) throw Error("a linear probe needs examples in both splits");
  const int64_t d = train.d, k = classes, nb = std::min(o.batch, train.n);
  std::vector<float> w(size_t(d * k), 0.0f), b(size_t(k), 0.0f);
  std::vector<float> mw(w.size(), 0.0f), vw(w.size(), 0.0f), mb(b.size(), 0.0f), vb(b.size(), 0.0f),
      gw(w.size()), gb(b.size());
  std::vector<float> xb(size_t(nb * d)), logits(size_t(nb * k));
  std::vector<int> yb(static_cast<size_t>(nb));
  const int64_t per_epoch = (train.n + nb - 1) / nb, total = per_epoch * o.epochs;
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  for (int e = 0; e < o.epochs; ++e) {
    const std::vector<int64_t> perm = permutation(train.n, o.seed, uint64_t(e));
    for (int64_t first = 0; first < train.n; first += nb) {
      const int64_t n = std::min(nb, train.n - first);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t src = perm[size_t(first + i)];
        std::copy_n(train.x.begin() + src * d, d, xb.begin() + i * d);
        yb[size_t(i)] = train.labels[size_t(src)];
      }
      for (int64_t i = 0; i < n; ++i) std::copy(b.begin(), b.end(), logits.begin() + i * k);
      gemm(false, false, n, k, d, xb.data(), w.data(), 1.0f, logits.data());
      softmax_rows(logits.data(), yb.data(), n, int(k));
      // d(mean loss)/d logits = (softmax - onehot) / n
      std::fill(gb.begin(), gb.end(), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        logits[size_t(i * k + yb[size_t(i)])] -= 1.0f;
        for (int64_t j = 0; j < k; ++j) {
          logits[size_t(i * k + j)] /= float(n);
          gb[size_t(j)] += logits[size_t(i * k + j)];
        }
      }
      gemm(true, false, d, k, n, xb.data(), logits.data(), 0.0f, gw.data());
      ++t;
      const double lr = 0.5 * o.lr * (1 + std::cos(M_PI * double(t - 1) / double(total)));
      const double c1 = 1 - std::pow(beta1, double(t)), c2 = 1 - std::pow(beta2, double(t));
      auto adam = [&](std::vector<float>& p, std::vector<float>& m, std::vector<float>& v,
                      const std::vector<float>& g, double decay) {
        for (size_t i = 0; i < p.size(); ++i) {
          const double gi = g[i] + decay * p[i];
          m[i] = float(beta1 * m[i] + (1 - beta1) * gi);
          v[i] = float(beta2 * v[i] + (1 - beta2) * gi * gi);
          p[i] -= float(lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps));
        }
      };
      adam(w, mw, vw, gw, o.weight_decay);
      adam(b, mb, vb, gb, 0.0);
    }
  }
  // Scored in chunks: accuracy of the arg-max class, mean cross-entropy.
  auto score = [&](const Features& f, double* loss) {
    int64_t right = 0;
    double sum = 0;
    const int64_t chunk = 4096;
    std::vector<float> out(size_t(chunk * k));
    for (int64_t first = 0; first < f.n; first += chunk) {
      const int64_t n = std::min(chunk, f.n - first);
      for (int64_t i = 0; i < n; ++i) std::copy(b.begin(), b.end(), out.begin() + i * k);
      gemm(false, false, n, k, d, f.x.data() + first * d, w.data(), 1.0f, out.data());
      sum += softmax_rows(out.data(), f.labels.data() + first, n, int(k));
      for (int64_t i = 0; i < n; ++i) {
        const float* r = out.data() + i * k;
        right += (std::max_element(r, r + k) - r) == f.labels[size_t(first + i)];
      }
    }
    if (loss) *loss = sum / double(f.n);
    return double(right) / double(f.n);
  };
  ProbeResult r;
  r.train_accuracy = score(train, nullptr);
  r.test_accuracy = score(test, &r.test_loss);
  return r;
}

KMeansResult kmeans(const Features& f, int k, int restarts, uint64_t seed, int max_iterations) {
  if (f.n < k)
    throw Error(fmt::format("k-means with {} clusters needs as many examples, got {}", k, f.n));
  const int64_t n = f.n, d = f.d;
  std::vector<double> norm(size_t(n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      norm[size_t(i)] += double(f.x[size_t(i * d + j)]) * f.x[size_t(i * d + j)];
  KMeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  std::vector<float> centers(size_t(k * d)), dots(size_t(n * k));
  std::vector<double> cnorm(static_cast<size_t>(k)), nearest(static_cast<size_t>(n));
  for (int r = 0; r < restarts; ++r) {
    const uint64_t key = stream_key(seed, 0x3ea75, uint64_t(r));
    uint64_t draw = 0;
    // k-means++: each next seed drawn with probability proportional to its squared
    // distance from the nearest seed so far.
    auto sq_dist = [&](int64_t i, int c) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double t = double(f.x[size_t(i * d + j)]) - centers[size_t(c * d + j)];
        s += t * t;
      }
      return s;
    };
    int64_t first = std::min(n - 1, int64_t(uniform01(key, draw++) * double(n)));
    std::copy_n(f.x.begin() + first * d, d, centers.begin());
    for (int64_t i = 0; i < n; ++i) nearest[size_t(i)] = sq_dist(i, 0);
    for (int c = 1; c < k; ++c) {
      double total = 0;
      for (double v : nearest) total += v;
      double target = uniform01(key, draw++) * total;
      int64_t pick = n - 1;
      for (int64_t i = 0; i < n; ++i) {
        target -= nearest[size_t(i)];
        if (target < 0) {
          pick = i;
          break;
        }
      }
      std::copy_n(f.x.begin() + pick * d, d, centers.begin() + c * d);
      for (int64_t i = 0; i < n; ++i)
        nearest[size_t(i)] = std::min(nearest[size_t(i)], sq_dist(i, c));
    }
    // Lloyd: assign by ||x||^2 - 2 x.c + ||c||^2, move each center to its members' mean.
    std::vector<int> assign(size_t(n), -1);
    double inertia = 0;
    int it = 0;
    for (; it < max_iterations; ++it) {
      for (int c = 0; c < k; ++c) {
        cnorm[size_t(c)] = 0;
        for (int64_t j = 0; j < d; ++j)
          cnorm[size_t(c)] += double(centers[size_t(c * d + j)]) * centers[size_t(c * d + j)];
      }
      gemm(false, true, n, k, d, f.x.data(), centers.data(), 0.0f, dots.data());
      bool changed = false;
      inertia = 0;
      for (int64_t i = 0; i < n; ++i) {
        int bc = 0;
        double bd = std::numeric_limits<double>::infinity();
        for (int c = 0; c < k; ++c) {
          const double dist = norm[size_t(i)] - 2.0 * dots[size_t(i * k + c)] + cnorm[size_t(c)];
          if (dist < bd) bd = dist, bc = c;
        }
        nearest[size_t(i)] = std::max(bd, 0.0);
        inertia += nearest[size_t(i)];
        changed = changed || assign[size_t(i)] != bc;
        assign[size_t(i)] = bc;
      }
      if (!changed) break;
      std::vector<double> sum(size_t(k * d), 0.0);
      std::vector<int64_t> count(size_t(k), 0);
      for (int64_t i = 0; i < n; ++i) {
        const int c = assign[size_t(i)];
        ++count[size_t(c)];
        for (int64_t j = 0; j < d; ++j) sum[size_t(c * d + j)] += f.x[size_t(i * d + j)];
      }
      for (int c = 0; c < k; ++c) {
        if (count[size_t(c)] == 0) {  // an empty cluster restarts at the farthest point
          const int64_t far = std::max_element(nearest.begin(), nearest.end()) - nearest.begin();
          std::copy_n(f.x.begin() + far * d, d, centers.begin() + c * d);
          nearest[size_t(far)] = 0;
          continue;
        }
        for (int64_t j = 0; j < d; ++j)
          centers[size_t(c * d + j)] = float(sum[size_t(c * d + j)] / double(count[size_t(c)]));
      }
    }
    if (inertia < best.inertia) {
      best.inertia = inertia;
      best.assignment = assign;
      best.iterations = it + 1;
    }
  }
  if (best.assignment.empty())
    throw Error("k-means found no clustering: the features are not finite");
  return best;
}

double normalized_mutual_information(const std::vector<int>& a, const std::vector<int>& b) {
  WEFT_ASSERT(a.size() == b.size(), "NMI: two labelings of different lengths");
  const double n = double(a.size());
  std::map<int, double> pa, pb;
  std::map<std::pair<int, int>, double> joint;
  for (size_t i = 0; i < a.size(); ++i) {
    pa[a[i]] += 1;
    pb[b[i]] += 1;
    joint[{a[i], b[i]}] += 1;
  }
  auto entropy = [&](const std::map<int, double>& p) {
    double h = 0;
    for (auto& [_, c] : p) h -= c / n * std::log(c / n);
    return h;
  };
  double mi = 0;
  for (auto& [ab, c] : joint) mi += c / n * std::log(c * n / (pa[ab.first] * pb[ab.second]));
  const double ha = entropy(pa), hb = entropy(pb);
  if (ha + hb <= 0) return 1.0;  // both labelings constant: identical
  return std::max(0.0, mi / (0.5 * (ha + hb)));
}

}  // namespace weft
