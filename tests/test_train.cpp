// End to end on real Fashion-MNIST: the data reader, the shipped graphs training the way
// they should, and checkpoints: readable elsewhere, and a resumed run equal to an
// uninterrupted one.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "runtime/dataset.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/threading.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
namespace fs = std::filesystem;

static std::string graph(const std::string& name) {
  return std::string(WEFT_SOURCE_DIR) + "/graphs/" + name;
}

static fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("weft_test_" + name);
  fs::remove_all(p);
  return p;
}

// A graph written for one test: DIR/g.json in a fresh DIR.
static fs::path write_graph(const std::string& name, const std::string& text) {
  const fs::path dir = fresh_dir(name);
  fs::create_directories(dir);
  std::ofstream(dir / "g.json") << text;
  return dir / "g.json";
}

static std::vector<std::vector<double>> read_metrics(const fs::path& file) {
  std::ifstream f(file);
  std::string line;
  std::getline(f, line);
  std::vector<std::vector<double>> rows;
  while (std::getline(f, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

TEST_CASE("Fashion-MNIST is read from Debian's IDX files") {
  Dataset train = load_fashion_mnist(default_data_dir(), "train");
  Dataset test = load_fashion_mnist(default_data_dir(), "test");
  CHECK(train.n == 60000);
  CHECK(test.n == 10000);
  CHECK(train.rows == 28);
  std::vector<int> per_class(10, 0);
  for (auto l : train.labels) per_class[l]++;
  for (int c : per_class) CHECK(c == 6000);
  // Scaling: [0, 255] -> [low, high]; one batch's pixels stay inside the range.
  Batcher b(train, 64, 1);
  Tensor img(DType::f32, {64, 784});
  fill_images(train, b.indices(0), img, -1, 1);
  double lo = 1, hi = -1;
  for (int64_t i = 0; i < img.numel(); ++i)
    lo = std::min(lo, img.at(i)), hi = std::max(hi, img.at(i));
  CHECK(lo == -1);
  CHECK(hi == 1);
  // The order depends on (seed, step) only.
  Batcher again(train, 64, 1), other(train, 64, 2);
  CHECK(again.indices(5) == b.indices(5));
  CHECK(other.indices(5) != b.indices(5));
}

TEST_CASE("bad data files are refused with a clear error") {
  fs::path dir = fresh_dir("idx");
  fs::create_directories(dir);
  CHECK_THROWS_WITH(load_fashion_mnist((dir / "nothing").string(), "train"),
                    doctest::Contains("apt-get install dataset-fashion-mnist"));
  {  // A truncated image file: the header promises 60000 images.
    gzFile f = gzopen((dir / "train-images-idx3-ubyte.gz").c_str(), "wb");
    unsigned char head[] = {0, 0, 8, 3, 0, 0, 0xea, 0x60, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3};
    gzwrite(f, head, sizeof head);
    gzclose(f);
  }
  std::vector<int64_t> dims;
  CHECK_THROWS_WITH(read_idx((dir / "train-images-idx3-ubyte.gz").string(), 3, dims),
                    doctest::Contains("truncated"));
  {
    std::ofstream f(dir / "junk", std::ios::binary);
    f << "hello world";
  }
  CHECK_THROWS_WITH(read_idx((dir / "junk").string(), 3, dims),
                    doctest::Contains("bad magic number"));
}

TEST_CASE("sparse_ae: the loss halves and the reconstruction improves within 300 steps") {
  apply_threads({0, false});
  fs::path dir = fresh_dir("sparse_ae");
  TrainOptions to;
  to.out_dir = dir.string();
  to.quiet = true;
  Model m = load_model(graph("sparse_ae.json"));
  apply_overrides(m, {.steps = 300, .seed = 1});
  run_training(m, SessionOptions{}, to);
  auto rows = read_metrics(dir / "metrics.csv");
  REQUIRE(rows.size() == 300);
  // columns: step, loss, recon_error, sparsity, samples/s
  auto mean_of = [&](size_t col, size_t from, size_t to_row) {
    double s = 0;
    for (size_t r = from; r < to_row; ++r) s += rows[r][col];
    return s / double(to_row - from);
  };
  CHECK(mean_of(1, 280, 300) < 0.5 * rows[0][1]);
  CHECK(mean_of(2, 280, 300) < 0.8 * rows[0][2]);  // not only the sparsity term
  CHECK(fs::exists(dir / "samples.png"));
  CHECK(fs::exists(dir / "checkpoint.safetensors"));
}

TEST_CASE("mlp_gan: 300 steps with finite losses and a PNG grid") {
  apply_threads({0, false});
  fs::path dir = fresh_dir("mlp_gan");
  TrainOptions to;
  to.out_dir = dir.string();
  to.quiet = true;
  Model m = load_model(graph("mlp_gan.json"));
  apply_overrides(m, {.steps = 300, .sample_every = 150, .seed = 1});
  run_training(m, SessionOptions{}, to);
  auto rows = read_metrics(dir / "metrics.csv");
  REQUIRE(rows.size() == 300);
  for (auto& r : rows) {
    CHECK(std::isfinite(r[1]));
    CHECK(std::isfinite(r[2]));
  }
  // D learns to tell real from fake: its loss leaves log(4) = 1.386 at the start.
  CHECK(rows[0][1] > 1.2);
  CHECK(rows.back()[1] < 1.2);
  for (auto name : {"samples.png", "samples_step000150.png"}) {
    std::ifstream f(dir / name, std::ios::binary);
    char sig[8] = {};
    f.read(sig, 8);
    CHECK(std::memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0);
  }
}

TEST_CASE("a run stopped and resumed equals an uninterrupted run, bit for bit") {
  apply_threads({0, false});
  Model m = load_model(graph("mlp_gan.json"));
  fs::path a = fresh_dir("resume_a"), b = fresh_dir("resume_b");
  TrainOptions to;
  to.quiet = true;
  apply_overrides(m, {.steps = 40, .seed = 5});
  to.out_dir = a.string();
  run_training(m, SessionOptions{}, to);
  to.out_dir = b.string();
  m.train.steps = 17;
  run_training(m, SessionOptions{}, to);
  m.train.steps = 40;
  to.resume = true;
  run_training(m, SessionOptions{}, to);
  SafetensorsFile fa = load_safetensors((a / "checkpoint.safetensors").string());
  SafetensorsFile fb = load_safetensors((b / "checkpoint.safetensors").string());
  CHECK(fa.metadata.at("step") == "40");
  CHECK(fb.metadata.at("step") == "40");
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  REQUIRE(fa.tensors.size() == 12 + 2 * (2 * 6 + 1));  // params, Adam m and v, step counts
  for (auto& [name, t] : fa.tensors) {
    INFO(name);
    REQUIRE(fb.tensors.count(name));
    CHECK(std::memcmp(t.raw(), fb.tensors.at(name).raw(), t.bytes()) == 0);
  }
  // The metrics of the resumed run continue where the first part stopped.
  auto ra = read_metrics(a / "metrics.csv"), rb = read_metrics(b / "metrics.csv");
  REQUIRE(ra.size() == 40);
  REQUIRE(rb.size() == 40);
  for (size_t i = 0; i < 40; ++i) CHECK(ra[i][1] == rb[i][1]);
}

TEST_CASE("checkpoints are safetensors that numpy reads") {
  fs::path dir = fresh_dir("st");
  fs::create_directories(dir);
  Tensor a(DType::f32, {2, 3}), b(DType::f64, {4}), c(DType::f32, {});
  for (int i = 0; i < 6; ++i) a.set(i, 0.5 * i);
  for (int i = 0; i < 4; ++i) b.set(i, -1.25 * i);
  c.set(0, 7);
  std::string file = (dir / "t.safetensors").string();
  save_safetensors(file, {{"a", a}, {"b", b}, {"c", c}}, {{"step", "12"}});
  SafetensorsFile back = load_safetensors(file);
  CHECK(back.metadata.at("step") == "12");
  CHECK(back.tensors.at("a").shape() == Dims{2, 3});
  CHECK(back.tensors.at("b").at(3) == -3.75);
  // Read by an independent reader: numpy, following the safetensors layout.
  std::string out = (dir / "py.txt").string();
  std::string cmd = "/usr/bin/python3 " + std::string(WEFT_SOURCE_DIR) +
                    "/tests/read_safetensors.py " + file + " > " + out;
  int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(weft::test::slurp(out) ==
        "a float32 (2, 3) 7.5\nb float64 (4,) -7.5\nc float32 () 7.0\nmetadata step=12\n");
}

TEST_CASE("sample and encode read a checkpoint back") {
  fs::path dir = fresh_dir("encode");
  std::string ckpt = (dir / "checkpoint.safetensors").string();
  std::string w = WEFT_BINARY;
  auto run = [](const std::string& cmd) {
    int s = std::system((cmd + " > /dev/null 2>&1").c_str());
    return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  };
  REQUIRE(run(w + " train " + graph("mlp_gan.json") + " --steps 5 --quiet --out " + dir.string()) ==
          0);
  CHECK(run(w + " sample " + graph("mlp_gan.json") + " --checkpoint " + ckpt + " --n 16 --out " +
            (dir / "g.png").string() + " --npy " + (dir / "g.npy").string()) == 0);
  CHECK(fs::file_size(dir / "g.npy") == 128 + 16 * 784 * 4);
  CHECK(run(w + " encode " + graph("mlp_gan.json") + " --checkpoint " + ckpt + " --out " +
            (dir / "f.npy").string()) == 0);
  CHECK(fs::file_size(dir / "f.npy") == 128 + 10000 * 256 * 4);  // D.features for the test split
  CHECK(fs::file_size(dir / "f.labels.npy") == 128 + 10000);     // one byte per label
}

TEST_CASE("weft check counts trainable parameters apart from batch norm's running statistics") {
  fs::path out = fresh_dir("check.txt");
  int s = std::system(
      (std::string(WEFT_BINARY) + " check " + graph("dcgan.json") + " > " + out.string() + " 2>&1")
          .c_str());
  REQUIRE((WIFEXITED(s) && WEXITSTATUS(s) == 0));
  // Per net: {trainable, non-trainable, tensors}, from graphs/dcgan.json by hand:
  // G: linear 100->6272: 6272*100 + 6272 = 633,472; batch_norm(6272): gamma, beta 12,544
  //    (running mean, var 12,544 more); conv_transpose2d 128->64, 4x4: 128*64*16 + 64 =
  //    131,136; batch_norm(64): 128 (128 more); conv_transpose2d 64->1, 4x4: 64*16 + 1 = 1,025.
  //    trainable 633,472 + 12,544 + 131,136 + 128 + 1,025 = 778,305; state 12,544 + 128 = 12,672.
  // D: conv2d 1->64, 4x4: 64*16 + 64 = 1,088; conv2d 64->128, 4x4: 128*64*16 + 128 = 131,200;
  //    batch_norm(128): 256 (256 more); linear 128*7*7->1: 6,272 + 1 = 6,273.
  //    trainable 1,088 + 131,200 + 256 + 6,273 = 138,817; state 256.
  const std::map<std::string, std::vector<std::string>> expected = {
      {"D", {"138,817", "256", "10"}},
      {"G", {"778,305", "12,672", "14"}},
      {"total", {"917,122", "12,928", "24"}}};
  std::map<std::string, std::vector<std::string>> rows;
  std::ifstream f(out);
  bool in_table = false;
  for (std::string line; std::getline(f, line);) {
    if (line == "parameters")
      in_table = true;
    else if (line.empty())
      in_table = false;
    if (!in_table) continue;
    std::stringstream ss(line);
    std::string net, cell;
    ss >> net;
    while (ss >> cell) rows[net].push_back(cell);
  }
  CHECK(rows["net"] == std::vector<std::string>{"trainable", "non-trainable", "tensors"});
  for (auto& [net, cells] : expected) CHECK_MESSAGE(rows[net] == cells, net);
}

// Trains `steps` steps of a shipped graph with one piece of its text replaced (a penalty's
// weight), and returns the logged value `name` averaged over the first `batches` batches of
// 128 test images.
static double logged_after(const std::string& file, const std::string& from, const std::string& to,
                           int64_t steps, const std::string& name, int batches) {
  std::string text = weft::test::slurp(graph(file));
  REQUIRE(text.find(from) != std::string::npos);
  text.replace(text.find(from), from.size(), to);
  const fs::path dir = fresh_dir("variant");
  fs::create_directories(dir);
  std::ofstream(dir / "g.json") << text;
  Model m = load_model((dir / "g.json").string());
  apply_overrides(m, {.steps = steps});
  TrainOptions opts;
  opts.out_dir = (dir / "run").string();
  opts.quiet = true;
  auto s = run_training(m, SessionOptions{}, opts);
  ValueId v{};
  for (auto& [n, id] : m.train.log)
    if (n == name) v = id;
  double sum = 0;
  for (int k = 0; k < batches; ++k)
    sum += s->evaluate_values({v}, 128, "test", k * 128)[0].to(DType::f64).data<double>()[0];
  return sum / batches;
}

TEST_CASE("the Jacobian penalty: the grad-node estimate agrees with the closed form, and trains") {
  apply_threads({0, false});
  // One sigmoid layer: ||dh/dx||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2 exactly, and
  // E_v ||J^T v||^2 over v ~ N(0, I), with J^T v the gradient of sum(h * v) in x.
  const fs::path g = write_graph("jacobian", R"({
  "weft": 1, "name": "jacobian",
  "data": {"dataset": "fashion-mnist", "range": [0, 1]},
  "inputs": {"x": {"shape": ["B", 784], "from": "data.images"},
             "v": {"shape": ["B", 32], "from": {"normal": {"mean": 0, "std": 1}}}},
  "nets": {"E": {"in": ["x"], "layers": [{"op": "linear", "units": 32, "id": "fc"}, {"op": "sigmoid"}]}},
  "nodes": [
    {"id": "h", "call": "E", "in": ["x"]},
    {"id": "closed", "op": "mean", "in": [{"op": "sum", "axes": [1], "in": [{"op": "mul", "in": [
      {"op": "square", "in": [{"op": "mul", "in": ["h", {"op": "sub", "in": [1, "h"]}]}]},
      {"op": "sum", "in": [{"op": "square", "in": ["E.fc.weight"]}], "axes": [1]}]}]}]},
    {"id": "jtv", "op": "grad", "in": [{"op": "sum", "in": [{"op": "mul", "in": ["h", "v"]}]}, "x"]},
    {"id": "estimate", "op": "mean", "in": [{"op": "sum", "in": [{"op": "square", "in": ["jtv"]}], "axes": [1]}]}
  ],
  "train": {"batch": 128, "seed": 5, "log": ["closed", "estimate"],
            "phases": [{"minimize": "estimate", "params": ["E"], "optimizer": {"adam": {"lr": 1e-3}}}]}
})");
  Model m = load_model(g.string());
  Session s(m, SessionOptions{});
  const std::vector<ValueId> values = {m.train.log[0].second, m.train.log[1].second};
  double closed = 0, estimate = 0;
  const int draws = 200;  // 200 x 128 draws of v: the mean's relative error is about 1%
  for (int k = 0; k < draws; ++k) {
    std::vector<Tensor> t = s.evaluate_values(values, 128, "test", 0, uint64_t(k));
    const double c = t[0].to(DType::f64).data<double>()[0];
    if (k > 0) CHECK(c == closed);  // the same images every draw; only v changes
    closed = c;
    estimate += t[1].to(DType::f64).data<double>()[0] / draws;
  }
  INFO("closed form ", closed, ", estimate ", estimate);
  CHECK(closed > 0);
  CHECK(estimate == doctest::Approx(closed).epsilon(0.05));

  // Trained with the penalty, the true Jacobian norm on test images ends lower than without.
  const std::string penalty = R"("in": [1e-2, "jacobian"])";
  const double plain = logged_after("contractive_ae.json", penalty, R"("in": [0, "jacobian"])", 200,
                                    "jacobian", 1),
               penalized = logged_after("contractive_ae.json", penalty, R"("in": [1, "jacobian"])",
                                        200, "jacobian", 1);
  INFO("||dh/dx||^2 without the penalty ", plain, ", with it ", penalized);
  CHECK(penalized < 0.5 * plain);
}

TEST_CASE(
    "sparse_ae_l1: the L1 penalty makes the code sparser than the same autoencoder's without it") {
  apply_threads({0, false});
  // The fraction of code activations below 0.01 on the first 1,280 test images.
  const std::string penalty = R"("in": [0.3, {"id": "sparsity")";
  const double plain = logged_after("sparse_ae_l1.json", penalty, R"("in": [0, {"id": "sparsity")",
                                    300, "near_zero", 10),
               sparse = logged_after("sparse_ae_l1.json", penalty, penalty, 300, "near_zero", 10);
  INFO("near-zero code fraction without the penalty ", plain, ", with it ", sparse);
  CHECK(sparse > plain + 0.3);
}

TEST_CASE(
    "phases limited to steps: pre-training, then the GAN; a phase outside its steps is idle") {
  apply_threads({0, false});
  std::string text = weft::test::slurp(graph("sae_gan.json"));
  for (auto [from, to] : {std::pair{R"("steps": [0, 2000])", R"("steps": [0, 3])"},
                          std::pair{R"("steps": [2000])", R"("steps": [3])"},
                          std::pair{R"("steps": [2000])", R"("steps": [3])"}}) {
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), std::string(from).size(), to);
  }
  const fs::path dir = fresh_dir("phase_steps");
  fs::create_directories(dir);
  std::ofstream(dir / "g.json") << text;
  Model m = load_model((dir / "g.json").string());
  CHECK(m.train.phases[0].until == 3);
  CHECK(m.train.phases[1].from == 3);
  CHECK(m.train.phases[1].until == -1);
  Session fresh(m, SessionOptions{});  // the initial parameters

  auto train = [&](int64_t steps, const std::string& out) {
    Model mm = m;
    apply_overrides(mm, {.steps = steps});
    TrainOptions to;
    to.out_dir = (dir / out).string();
    to.quiet = true;
    return run_training(mm, SessionOptions{}, to);
  };
  // After the three pre-training steps G is as initialized and the encoder is not.
  auto s3 = train(3, "three");
  CHECK(std::memcmp(s3->params.at("G.linear_0.weight").raw(),
                    fresh.params.at("G.linear_0.weight").raw(),
                    fresh.params.at("G.linear_0.weight").bytes()) == 0);
  CHECK(std::memcmp(s3->params.at("E.linear_0.weight").raw(),
                    fresh.params.at("E.linear_0.weight").raw(),
                    fresh.params.at("E.linear_0.weight").bytes()) != 0);
  // The metrics leave a phase's field empty at the steps it does not run.
  train(6, "six");
  std::ifstream csv(dir / "six" / "metrics.csv");
  std::string line;
  std::getline(csv, line);
  CHECK(line ==
        "step,sae_loss,d_loss,g_loss,grad_norm.sae_loss,grad_norm.d_loss,grad_norm.g_loss,"
        "samples_per_s");
  for (int row = 1; row <= 6; ++row) {
    REQUIRE(std::getline(csv, line));
    INFO(line);
    std::vector<std::string> cells;
    std::stringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    REQUIRE(cells.size() == 8);
    for (int k : {1, 4}) CHECK(cells[k].empty() == (row > 3));  // loss and gradient norm
    for (int k : {2, 3, 5, 6}) CHECK(cells[k].empty() == (row <= 3));
  }
}

TEST_CASE("bigan: G(E(x)) is closer to x than to another test image") {
  apply_threads({0, false});
  // An encoder that ignored its input (or a G that ignored its code) would reconstruct every
  // image alike, as close to a random other image as to its own.
  Model m = load_model(graph("bigan.json"));
  apply_overrides(m, {.steps = 1200});  // E(x) starts to carry x after about 1,000 steps
  TrainOptions to;
  to.out_dir = fresh_dir("bigan").string();
  to.quiet = true;
  auto s = run_training(m, SessionOptions{}, to);
  const int64_t n = 256;
  const ValueId x{m.graph.find("x"), 0};
  REQUIRE(x.valid());
  const std::vector<Tensor> t =
      s->evaluate_values({x, m.outputs.at("reconstructions")}, n, "test", 0);
  const Tensor images = t[0].to(DType::f64), recon = t[1].to(DType::f64);
  const double* a = images.data<double>();
  const double* r = recon.data<double>();
  double own = 0, other = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < 784; ++j) {
      own += std::pow(r[i * 784 + j] - a[i * 784 + j], 2) / double(n);
      other += std::pow(r[i * 784 + j] - a[((i + 1) % n) * 784 + j], 2) / double(n);
    }
  INFO("squared error to its own image ", own, ", to the next image ", other);
  CHECK(own < 0.9 * other);
}

TEST_CASE("ring8 and grid25: fixed draws around their modes, and the modes counted") {
  const Dataset ring = make_mixture("ring8", "test"), grid = make_mixture("grid25", "test");
  CHECK(ring.n == 2500);
  CHECK(make_mixture("ring8", "train").n == 100000);
  REQUIRE(ring.modes.size() == 8);
  REQUIRE(grid.modes.size() == 25);
  CHECK(ring.modes[2].first == doctest::Approx(0).epsilon(1e-12));
  CHECK(ring.modes[2].second == doctest::Approx(2));
  CHECK(grid.modes[24] == std::pair<double, double>{4, 4});
  // The same points every time, and each near the mode it was drawn from.
  CHECK(make_mixture("ring8", "test").points == ring.points);
  CHECK(make_mixture("ring8", "train").points != make_mixture("grid25", "train").points);
  for (int64_t i = 0; i < ring.n; ++i) {
    const auto [mx, my] = ring.modes[ring.labels[size_t(i)]];
    CHECK(std::hypot(ring.points[size_t(2 * i)] - mx, ring.points[size_t(2 * i + 1)] - my) < 0.15);
  }
  // Real data covers every mode; within 3 standard deviations lie 1 - exp(-4.5) = 98.9%
  // of a 2-D Gaussian's draws.
  for (const Dataset* d : {&ring, &grid}) {
    const ModeCoverage c = count_modes(*d, d->points.data(), d->n);
    CHECK(c.covered == c.modes);
    CHECK(c.high_quality == doctest::Approx(0.989).epsilon(0.01));
  }
  // Every sample on one mode: one mode covered. Far from every mode: none, no quality.
  std::vector<float> one(200, 0.0f), far(200, 9.0f);
  for (size_t i = 0; i < one.size(); i += 2) one[i] = 2.0f;
  CHECK(count_modes(ring, one.data(), 100).covered == 1);
  CHECK(count_modes(ring, one.data(), 100).high_quality == 1.0);
  CHECK(count_modes(ring, far.data(), 100).covered == 0);
  CHECK(count_modes(ring, far.data(), 100).high_quality == 0.0);
}

TEST_CASE("gan_ring8: a short run spreads over more than one mode, and weft eval counts them") {
  const fs::path dir = fresh_dir("ring8");
  std::string log;
  const std::string weft = WEFT_BINARY, g = graph("gan_ring8.json");
  REQUIRE(std::system(
              (weft + " train " + g + " --steps 600 --quiet --out " + dir.string()).c_str()) == 0);
  REQUIRE(
      std::system((weft + " eval " + g + " --checkpoint " +
                   (dir / "checkpoint.safetensors").string() + " > " + (dir / "eval.txt").string())
                      .c_str()) == 0);
  const json r = json::parse(std::ifstream(dir / "eval_test.json"));
  INFO(weft::test::slurp(dir / "eval.txt"));
  CHECK(r["modes"]["modes"] == 8);
  CHECK(r["modes"]["covered"].get<int>() > 1);
  CHECK(r["modes"]["high_quality"].get<double>() > 0.05);
  CHECK(fs::exists(dir / "eval_samples.png"));
  CHECK(fs::exists(dir / "samples.png"));  // the scatter plot written while training
}

TEST_CASE(
    "weft sample --class asks a conditional generator for one class; its grid has a row per "
    "class") {
  // A "generator" whose image is its class's row of a weight (plus nothing random): the
  // samples of --class K are exactly row K, and each grid row k is class k.
  const fs::path g = write_graph("class", R"({
  "weft": 1, "name": "by-class",
  "data": {"dataset": "fashion-mnist", "range": [0, 1]},
  "inputs": {"x": {"shape": ["B", 784], "from": "data.images"},
             "y": {"shape": ["B", 10], "from": "data.onehot"}},
  "params": {"w": {"shape": [10, 784], "init": {"uniform": {"low": 0, "high": 1}}, "trainable": true}},
  "nodes": [
    {"id": "fake", "op": "matmul", "in": ["y", "w"]},
    {"id": "loss", "op": "mse", "in": ["fake", "x"]}
  ],
  "train": {"batch": 16, "steps": 2, "phases": [{"minimize": "loss", "params": ["w"], "optimizer": {"sgd": {"lr": 0.1}}}]},
  "outputs": {"samples": "fake"}
})");
  const fs::path dir = g.parent_path();
  const std::string w = WEFT_BINARY, ckpt = (dir / "run" / "checkpoint.safetensors").string();
  auto run = [](const std::string& cmd) {
    const int st = std::system((cmd + " > /dev/null 2>&1").c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  REQUIRE(run(w + " train " + g.string() + " --quiet --out " + (dir / "run").string()) == 0);
  const Tensor weight = load_safetensors(ckpt).tensors.at("param/w");
  REQUIRE(run(w + " sample " + g.string() + " --checkpoint " + ckpt + " --class 3 --n 5 --npy " +
              (dir / "three.npy").string()) == 0);
  Dims shape;
  const std::vector<double> three = load_npy((dir / "three.npy").string(), shape);
  REQUIRE(shape == Dims{5, 784});
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 784; j += 97)
      CHECK(three[size_t(i * 784 + j)] == doctest::Approx(weight.at(3 * 784 + j)));
  // The default grid: 100 samples, class k in row k (PNG: 10 rows of 10 images of 28 + 2).
  REQUIRE(run(w + " sample " + g.string() + " --checkpoint " + ckpt + " --out " +
              (dir / "grid.png").string()) == 0);
  const std::string png = weft::test::slurp(dir / "grid.png");
  REQUIRE(png.size() > 24);
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint32_t(uint8_t(png[at + 1])) << 16) |
           (uint32_t(uint8_t(png[at + 2])) << 8) | uint32_t(uint8_t(png[at + 3]));
  };
  CHECK(be32(16) == 10 * 30 + 2);  // width
  CHECK(be32(20) == 10 * 30 + 2);  // height
  // A class outside 0-9, and a graph with no class input, are refused.
  CHECK(run(w + " sample " + g.string() + " --checkpoint " + ckpt + " --class 10 --out x.png") ==
        2);
  const std::string log = (dir / "refused.txt").string();
  CHECK(std::system((w + " sample " + graph("mlp_gan.json") + " --checkpoint " + ckpt +
                     " --class 1 --out x.png > " + log + " 2>&1")
                        .c_str()) != 0);
  CHECK(weft::test::slurp(log).find("reads no class label") != std::string::npos);
}

TEST_CASE("weft eval --classifier: real images measured as samples are at distance 0; --crop") {
  // A classifier whose features are 7x7 average-pooled pixels, and a "generator" whose
  // samples are the test images padded to 32x32, as the source articles pad their data: with
  // --crop 2 the classifier sees exactly the test images, and their distance to the test
  // images is 0 while real training images stand apart from them.
  const fs::path c = write_graph("eval_classifier", R"({
  "weft": 1, "name": "pooled",
  "data": {"dataset": "fashion-mnist", "range": [0, 1]},
  "inputs": {"x": {"shape": ["B", 1, 28, 28], "from": "data.images"},
             "y": {"shape": ["B", 10], "from": "data.onehot"}},
  "nets": {"C": {"in": ["x"], "layers": [{"op": "avg_pool2d", "kernel": 4},
      {"op": "flatten", "id": "features"}, {"op": "linear", "units": 10}]}},
  "nodes": [{"id": "logits", "call": "C", "in": ["x"]},
            {"id": "loss", "op": "softmax_cross_entropy", "in": ["logits", "y"]}],
  "train": {"batch": 32, "steps": 20, "phases": [{"minimize": "loss", "params": ["C"], "optimizer": {"adam": {"lr": 0.01}}}]},
  "outputs": {"logits": "logits", "features": "C.features"}
})");
  const fs::path g = write_graph("eval_padded", R"({
  "weft": 1, "name": "padded",
  "data": {"dataset": "fashion-mnist", "range": [-1, 1]},
  "inputs": {"x": {"shape": ["B", 1, 28, 28], "from": "data.images"}},
  "params": {"w": {"shape": [1], "init": {"constant": 1}, "trainable": true}},
  "nodes": [
    {"id": "big", "op": "pad", "in": ["x"], "pads": 2, "value": -1},
    {"id": "fake", "op": "mul", "in": ["big", "w"]},
    {"id": "loss", "op": "mse", "in": ["fake", "big"]}
  ],
  "train": {"batch": 16, "steps": 1, "phases": [{"minimize": "loss", "params": ["w"], "optimizer": {"sgd": {"lr": 0.1}}}]},
  "outputs": {"samples": "fake"}
})");
  const std::string w = WEFT_BINARY;
  const fs::path cdir = c.parent_path() / "run", gdir = g.parent_path() / "run";
  auto run = [](const std::string& cmd, const fs::path& log) {
    const int st = std::system((cmd + " > " + log.string() + " 2>&1").c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  const fs::path log = g.parent_path() / "log.txt";
  REQUIRE(run(w + " train " + c.string() + " --quiet --out " + cdir.string(), log) == 0);
  REQUIRE(run(w + " train " + g.string() + " --quiet --out " + gdir.string(), log) == 0);
  const std::string eval = w + " eval " + g.string() + " --checkpoint " +
                           (gdir / "checkpoint.safetensors").string() + " --classifier " +
                           (cdir / "checkpoint.safetensors").string() + " --classifier-graph " +
                           c.string();
  CHECK(run(eval, log) != 0);  // 32x32 samples, a 28x28 classifier: refused, with the fix
  CHECK(weft::test::slurp(log).find("/outputs/samples: --classifier reads 28x28 images; the "
                                    "samples are 32x32 (--crop 2 measures their centre)") !=
        std::string::npos);
  CHECK(run(eval + " --crop 1", log) != 0);
  CHECK(weft::test::slurp(log).find("30x30 after --crop 1") != std::string::npos);
  REQUIRE(run(eval + " --crop 2", log) == 0);
  const json r = json::parse(weft::test::slurp(gdir / "eval_test.json"));
  const json& q = r.at("quality");
  CHECK(q.at("crop") == 2);
  CHECK(std::abs(q.at("frechet_distance").get<double>()) < 1e-6);
  CHECK(q.at("frechet_distance_train_vs_test").get<double>() > 1e-4);
  // The test images' classes as this classifier sees them: every sample counted once.
  int64_t total = 0;
  for (const json& k : q.at("class_histogram")) total += k.get<int64_t>();
  CHECK(total == 10000);
}

TEST_CASE("spectral_norm: a layer's weight divided by its largest singular value") {
  // A linear layer with "spectral_norm": true trained with lr 1e-12: only the power iteration
  // moves (one step per forward). After 60 steps u is the top left singular vector, and the
  // layer's sigma matches the largest singular value of its weight.
  const fs::path g = write_graph("spectral", R"({
  "weft": 1, "name": "sn",
  "data": {"dataset": "fashion-mnist", "range": [0, 1]},
  "inputs": {"x": {"shape": ["B", 784], "from": "data.images"}},
  "nets": {"D": {"in": ["x"], "layers": [{"op": "linear", "units": 12, "spectral_norm": true, "id": "fc"}]}},
  "nodes": [{"id": "out", "call": "D", "in": ["x"]},
            {"id": "loss", "op": "mean", "in": [{"op": "square", "in": ["out"]}]}],
  "train": {"batch": 8, "steps": 60, "phases": [{"minimize": "loss", "params": ["D"], "optimizer": {"sgd": {"lr": 1e-12}}}]}
})");
  Model m = load_model(g.string());
  TrainOptions to;
  to.out_dir = (g.parent_path() / "run").string();
  to.quiet = true;
  auto s = run_training(m, SessionOptions{}, to);
  const Tensor w = s->params.at("D.fc.weight").to(DType::f64),
               u = s->params.at("D.fc.u").to(DType::f64);
  Eigen::MatrixXd mat(12, 784);
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 784; ++j) mat(i, j) = w.data<double>()[i * 784 + j];
  const double top = Eigen::JacobiSVD<Eigen::MatrixXd>(mat).singularValues()(0);
  // sigma in inference: |M^T u| with the stored u.
  Eigen::VectorXd uu(12);
  for (int i = 0; i < 12; ++i) uu(i) = u.data<double>()[i];
  CHECK(uu.norm() == doctest::Approx(1).epsilon(1e-5));
  CHECK((mat.transpose() * uu).norm() == doctest::Approx(top).epsilon(1e-4));
  // The layer computes (W / sigma) x + b: its largest singular value is 1, not the weight's.
  CHECK(std::abs(top - 1) > 0.1);
  const std::vector<Tensor> t = s->evaluate_values(
      {ValueId{m.graph.find("x"), 0}, ValueId{m.graph.find("out.fc"), 0}}, 8, "test", 0);
  const Tensor x = t[0].to(DType::f64), y = t[1].to(DType::f64),
               b = s->params.at("D.fc.bias").to(DType::f64);
  Eigen::MatrixXd xs(784, 8);
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 784; ++j) xs(j, i) = x.data<double>()[i * 784 + j];
  const Eigen::MatrixXd expect = mat * xs / top;
  for (int i = 0; i < 8; ++i)
    for (int k = 0; k < 12; ++k)
      CHECK(y.data<double>()[i * 12 + k] - b.data<double>()[k] ==
            doctest::Approx(expect(k, i)).epsilon(1e-3));
}
