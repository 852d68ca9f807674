#include "runtime/quality.h"

#include <fmt/format.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace weft {

namespace {

void moments(const std::vector<float>& x, int64_t n, int64_t d, Eigen::VectorXd& mean,
             Eigen::MatrixXd& cov) {
  WEFT_ASSERT(int64_t(x.size()) == n * d && n > 1, "features: sizes");
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      throw Error(
          fmt::format("feature {} of example {} is {}: the classifier's features are not "
                      "finite (is its checkpoint sound?)",
                      int64_t(i) % d, int64_t(i) / d, x[i]));
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(
      x.data(), n, d);
  const Eigen::MatrixXd md = m.cast<double>();
  mean = md.colwise().mean().transpose();
  const Eigen::MatrixXd centred = md.rowwise() - mean.transpose();
  cov = centred.transpose() * centred / double(n - 1);
}

// The symmetric square root of a symmetric positive semi-definite matrix, by its
// eigendecomposition (eigenvalues below 0 from rounding are taken as 0).
Eigen::MatrixXd sqrt_psd(const Eigen::MatrixXd& s) {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(s);
  WEFT_ASSERT(es.info() == Eigen::Success, "eigendecomposition failed");
  const Eigen::VectorXd root = es.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  return es.eigenvectors() * root.asDiagonal() * es.eigenvectors().transpose();
}

}  // namespace

double frechet_distance(const std::vector<float>& a, int64_t n_a, const std::vector<float>& b,
                        int64_t n_b, int64_t d) {
  Eigen::VectorXd mu_a, mu_b;
  Eigen::MatrixXd s_a, s_b;
  moments(a, n_a, d, mu_a, s_a);
  moments(b, n_b, d, mu_b, s_b);
  // Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): the matrix inside is symmetric
  // positive semi-definite, so its square root is real and its eigenvalues say it exactly.
  const Eigen::MatrixXd ra = sqrt_psd(s_a);
  const Eigen::MatrixXd inner = ra * s_b * ra;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es((inner + inner.transpose()) / 2);
  WEFT_ASSERT(es.info() == Eigen::Success, "eigendecomposition failed");
  const double cross = es.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
  return (mu_a - mu_b).squaredNorm() + s_a.trace() + s_b.trace() - 2 * cross;
}

ClassStats class_stats(const std::vector<float>& logits, int64_t n, int64_t k,
                       const std::vector<int>& asked) {
  WEFT_ASSERT(int64_t(logits.size()) == n * k && n > 0, "class_stats: sizes");
  WEFT_ASSERT(asked.empty() || int64_t(asked.size()) == n, "class_stats: asked");
  ClassStats c;
  c.histogram.assign(size_t(k), 0);
  std::vector<double> p(size_t(n * k)), marginal(size_t(k), 0.0);
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = logits.data() + i * k;
    const float mx = *std::max_element(r, r + k);
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += std::exp(double(r[j] - mx));
    for (int64_t j = 0; j < k; ++j) {
      p[size_t(i * k + j)] = std::exp(double(r[j] - mx)) / s;
      marginal[size_t(j)] += p[size_t(i * k + j)] / double(n);
    }
    const int64_t top = std::max_element(r, r + k) - r;
    ++c.histogram[size_t(top)];
    if (!asked.empty()) right += top == asked[size_t(i)];
  }
  for (int64_t v : c.histogram) c.covered += double(v) >= 0.05 * double(n);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double q = p[size_t(i * k + j)];
      if (q > 0) kl += q * (std::log(q) - std::log(marginal[size_t(j)])) / double(n);
    }
  c.inception_score = std::exp(kl);
  if (!asked.empty()) c.asked = double(right) / double(n);
  return c;
}

}  // namespace weft
