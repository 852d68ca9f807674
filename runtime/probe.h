// Measuring a representation: a linear probe (multinomial logistic regression trained on
// one split's features, scored on another's) and k-means clustering scored by normalized
// mutual information with the labels. Both follow one fixed recipe, so the numbers of two
// representations compare; neither is a model a user trains.
#pragma once

#include <cstdint>
#include <vector>

namespace weft {

// n examples of d features, row-major, and a class label 0..classes-1 for each.
struct Features {
  int64_t n = 0, d = 0;
  std::vector<float> x;
  std::vector<int> labels;
};

// Standardizes every feature of both splits by the training split's mean and standard
// deviation (a feature constant in training becomes 0), in place.
void standardize(Features& train, Features& test);

struct ProbeOptions {
  int epochs = 30;
  int64_t batch = 256;
  double lr = 1e-3;            // Adam's, decayed to 0 along a cosine
  double weight_decay = 1e-4;  // L2 on the weights, not the biases
  uint64_t seed = 1;
};
struct ProbeResult {
  double train_accuracy = 0, test_accuracy = 0, test_loss = 0;
};
// Multinomial logistic regression on already standardized features.
ProbeResult linear_probe(const Features& train, const Features& test, int classes,
                         const ProbeOptions& o = {});

struct KMeansResult {
  std::vector<int> assignment;
  double inertia = 0;  // sum of squared distances to the assigned centers
  int iterations = 0;  // of the best restart
};
// Lloyd's algorithm from k-means++ seeds; the best of `restarts` by inertia.
KMeansResult kmeans(const Features& f, int k, int restarts = 4, uint64_t seed = 1,
                    int max_iterations = 100);

// I(a; b) / mean(H(a), H(b)) of two labelings of the same examples, in [0, 1].
double normalized_mutual_information(const std::vector<int>& a, const std::vector<int>& b);

}  // namespace weft
