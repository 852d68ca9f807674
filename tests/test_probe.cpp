// Measuring representations: .npy features read back strictly, the linear probe, k-means
// and normalized mutual information against known answers, and `weft probe` end to end on
// real Fashion-MNIST pixels.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/files.h"
#include "runtime/probe.h"
#include "runtime/quality.h"
#include "runtime/rng.h"
#include "runtime/threading.h"
#include "tests/test_util.h"

using namespace weft;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path temp(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / "weft_test_probe";
  fs::create_directories(p);
  return p / name;
}

// n examples of `classes` Gaussian clusters in d dimensions, centers `spread` apart.
Features blobs(int64_t n, int64_t d, int classes, double spread, uint64_t seed) {
  Features f;
  f.n = n;
  f.d = d;
  const uint64_t key = stream_key(seed, 1);
  for (int64_t i = 0; i < n; ++i) {
    const int c = int(i % classes);
    f.labels.push_back(c);
    for (int64_t j = 0; j < d; ++j)
      f.x.push_back(float((j % classes == c ? spread : 0.0) + normal01(key, uint64_t(i * d + j))));
  }
  return f;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

int run_weft(const std::string& args, const fs::path& log) {
  const int st =
      std::system((std::string(WEFT_BINARY) + " " + args + " > " + log.string() + " 2>&1").c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST_CASE("normalized mutual information matches values worked by hand") {
  const std::vector<int> a = {0, 0, 1, 1, 2, 2};
  CHECK(normalized_mutual_information(a, a) == doctest::Approx(1.0));
  CHECK(normalized_mutual_information(a, {5, 5, 3, 3, 9, 9}) == doctest::Approx(1.0));  // renamed
  // Independent: every pair of values equally often.
  CHECK(normalized_mutual_information({0, 0, 1, 1}, {0, 1, 0, 1}) == doctest::Approx(0.0));
  // a = {0,0,1,1}, b = {0,0,0,1}: I = 1.5 log 2 - 0.75 log 3 nats... computed exactly:
  // H(a) = log 2, H(b) = -(3/4 log 3/4 + 1/4 log 1/4), I = H(b) - H(b|a) = H(b) - 0.5 log 2.
  const double hb = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  const double expect = (hb - 0.5 * std::log(2.0)) / (0.5 * (std::log(2.0) + hb));
  CHECK(normalized_mutual_information({0, 0, 1, 1}, {0, 0, 0, 1}) == doctest::Approx(expect));
}

TEST_CASE("the linear probe separates separable classes and finds nothing in noise") {
  apply_threads({0, false});
  Features train = blobs(2000, 20, 4, 3.0, 1), test = blobs(1000, 20, 4, 3.0, 2);
  standardize(train, test);
  ProbeResult r = linear_probe(train, test, 4, {.epochs = 100});
  CHECK(r.test_accuracy > 0.99);
  CHECK(r.test_loss < 0.1);
  // The same features with labels that mean nothing: chance on the test split.
  Features noise_train = blobs(2000, 20, 4, 0.0, 3), noise_test = blobs(2000, 20, 4, 0.0, 4);
  ProbeResult chance = linear_probe(noise_train, noise_test, 4, {.epochs = 10});
  INFO("accuracy on noise ", chance.test_accuracy);
  CHECK(chance.test_accuracy < 0.30);
  CHECK(chance.test_accuracy > 0.20);
  // Labels out of range are the user's mistake.
  noise_test.labels[7] = 4;
  CHECK(error_of([&] { linear_probe(noise_train, noise_test, 4, {}); }).find("outside 0..3") !=
        std::string::npos);
}

TEST_CASE("k-means recovers well-separated clusters") {
  apply_threads({0, false});
  Features f = blobs(1200, 12, 6, 8.0, 5);
  KMeansResult km = kmeans(f, 6, 4, 1);
  CHECK(normalized_mutual_information(f.labels, km.assignment) > 0.99);
  // Far too close to tell apart: the clusters say little about the labels.
  Features g = blobs(1200, 12, 6, 0.0, 6);
  KMeansResult none = kmeans(g, 6, 2, 1);
  CHECK(normalized_mutual_information(g.labels, none.assignment) < 0.05);
}

TEST_CASE(".npy files are read back exactly, and bad ones are refused by name") {
  Tensor t(DType::f32, {3, 4});
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = float(i) * 0.5f - 2;
  const fs::path p = temp("a.npy");
  save_npy(p.string(), t);
  Dims shape;
  std::vector<double> v = load_npy(p.string(), shape);
  CHECK(shape == Dims{3, 4});
  REQUIRE(v.size() == 12);
  CHECK(v[11] == 3.5);
  save_npy_u8(temp("l.npy").string(), {1, 2, 9}, {3});
  CHECK(load_npy(temp("l.npy").string(), shape) == std::vector<double>{1, 2, 9});

  const std::string good = weft::test::slurp(p);
  auto refused = [&](const std::string& bytes) {
    const fs::path bad = temp("bad.npy");
    weft::test::spit(bad, bytes);
    return error_of([&] { load_npy(bad.string(), shape); });
  };
  std::string e = refused(good.substr(0, good.size() - 4));
  CHECK(e.find("bad.npy") != std::string::npos);
  CHECK(e.find("needs 48 bytes of data, the file has 44") != std::string::npos);
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  CHECK(refused(fortran).find("C-order") != std::string::npos);
  std::string big_endian = good;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  CHECK(refused(big_endian).find("little-endian") != std::string::npos);
  CHECK(refused("PK\x03\x04 a zip").find("not a .npy file") != std::string::npos);
}

TEST_CASE("weft probe: raw Fashion-MNIST pixels, and features without their labels") {
  const fs::path log = temp("probe.txt"), out = temp("pixels.json");
  REQUIRE(run_weft("probe --pixels --epochs 10 --out " + out.string(), log) == 0);
  const json r = json::parse(std::ifstream(out));
  INFO(weft::test::slurp(log));
  // A logistic regression on pixels: about 84% (the literature's figure, and sklearn's).
  CHECK(r["probe"]["test_accuracy"].get<double>() > 0.82);
  CHECK(r["probe"]["test_accuracy"].get<double>() < 0.87);
  // k-means on pixels: an NMI near 0.51.
  CHECK(r["kmeans"]["nmi"].get<double>() > 0.45);
  CHECK(r["kmeans"]["nmi"].get<double>() < 0.57);

  Tensor t(DType::f32, {10, 3});
  save_npy(temp("f.npy").string(), t);
  fs::remove(temp("f.labels.npy"));
  CHECK(run_weft("probe " + temp("f.npy").string() + " " + temp("f.npy").string(), log) == 2);
  const std::string msg = weft::test::slurp(log);
  CHECK(msg.find("f.labels.npy") != std::string::npos);
  CHECK(msg.find("cannot open") != std::string::npos);

  // Features that are not finite (a diverged model's) are refused by file and row.
  Tensor bad(DType::f32, {10, 3});
  bad.data<float>()[7] = std::nanf("");
  save_npy(temp("n.npy").string(), bad);
  save_npy_u8(temp("n.labels.npy").string(), std::vector<uint8_t>(10, 1), {10});
  CHECK(run_weft("probe " + temp("n.npy").string() + " " + temp("n.npy").string(), log) == 2);
  CHECK(weft::test::slurp(log).find("n.npy: row 2: feature 1 is nan") != std::string::npos);
}

TEST_CASE("the Frechet distance and the class statistics against closed forms") {
  // Two Gaussians with diagonal covariances: the distance is |mu_a - mu_b|^2 +
  // sum_i (sigma_a,i - sigma_b,i)^2. Sampled with 200,000 points: within 2%.
  const int64_t n = 200000, d = 3;
  std::vector<float> a, b;
  const uint64_t key = stream_key(9, 9);
  const double ma[3] = {0, 1, -1}, sa[3] = {1, 2, 0.5}, mb[3] = {1, 1, 0}, sb[3] = {1, 1, 1.5};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      a.push_back(float(ma[j] + sa[j] * normal01(key, uint64_t(2 * (i * d + j)))));
      b.push_back(float(mb[j] + sb[j] * normal01(key, uint64_t(2 * (i * d + j) + 1))));
    }
  double expect = 0;
  for (int j = 0; j < 3; ++j) expect += std::pow(ma[j] - mb[j], 2) + std::pow(sa[j] - sb[j], 2);
  CHECK(frechet_distance(a, n, b, n, d) == doctest::Approx(expect).epsilon(0.02));
  CHECK(std::abs(frechet_distance(a, n, a, n, d)) < 1e-6);

  // Confident and spread evenly over 4 classes: the score is 4, all covered. All one class:
  // the score is 1, one class covered. The asked class is scored per sample.
  std::vector<float> even, one;
  for (int i = 0; i < 40; ++i)
    for (int k = 0; k < 4; ++k) {
      even.push_back(k == i % 4 ? 30.0f : 0.0f);
      one.push_back(k == 2 ? 30.0f : 0.0f);
    }
  std::vector<int> asked(40);
  for (int i = 0; i < 40; ++i) asked[size_t(i)] = i % 4 == 3 ? 0 : i % 4;  // 3 of 4 right
  ClassStats e = class_stats(even, 40, 4, asked), o = class_stats(one, 40, 4, {});
  CHECK(e.inception_score == doctest::Approx(4).epsilon(1e-6));
  CHECK(e.covered == 4);
  CHECK(e.histogram == std::vector<int64_t>{10, 10, 10, 10});
  CHECK(e.asked == doctest::Approx(0.75));
  CHECK(o.inception_score == doctest::Approx(1).epsilon(1e-6));
  CHECK(o.covered == 1);
  CHECK(o.asked == -1);
}
