// Measuring generated images with a classifier trained on the real ones: the Frechet
// distance between the classifier's features of generated and of real images (FID's
// formula, here with a Fashion-MNIST classifier instead of Inception), the classes the
// samples fall in, and an inception-style score.
#pragma once

#include <cstdint>
#include <vector>

namespace weft {

// ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two sets of d-dimensional
// features (n_a and n_b rows, row-major), each summarized by its mean and covariance.
double frechet_distance(const std::vector<float>& a, int64_t n_a, const std::vector<float>& b,
                        int64_t n_b, int64_t d);

struct ClassStats {
  std::vector<int64_t> histogram;  // samples per predicted class
  int covered = 0;                 // classes holding at least 5% of the samples
  double inception_score = 0;      // exp(E_x KL(p(y|x) || p(y)))
  double asked = -1;  // the fraction classified as the class asked for; -1 if none was asked
};
// From n rows of k logits; `asked` (n entries, or empty) the class each sample was asked for.
ClassStats class_stats(const std::vector<float>& logits, int64_t n, int64_t k,
                       const std::vector<int>& asked);

}  // namespace weft
