// A training run as a user lives it, through the runner: the run folder (locked, never
// overwritten by accident, never truncated by a run that fails to start, cleaned of a killed
// run's temporaries), signals (stop after the step with a checkpoint, resume bit for bit),
// logged diagnostics, and values that stop being finite.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/dataset.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
namespace fs = std::filesystem;
using weft::test::slurp;

namespace {

const std::string kWeft = WEFT_BINARY;

std::string graph(const std::string& name) {
  return std::string(WEFT_SOURCE_DIR) + "/graphs/" + name;
}

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("weft_run_" + name);
  fs::remove_all(p);
  return p;
}

// Runs a shell command; returns its exit status and puts stdout + stderr into `out`.
int run(const std::string& cmd, std::string& out) {
  std::string log = (fs::temp_directory_path() / "weft_run_cmd.txt").string();
  int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  out = slurp(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

size_t metric_rows(const fs::path& csv) {
  std::ifstream f(csv);
  size_t n = 0;
  for (std::string line; std::getline(f, line);) n += !line.empty();
  return n > 0 ? n - 1 : 0;
}

// A small graph written into `dir`: an autoencoder on real Fashion-MNIST whose train.log
// holds a value no loss depends on, and optionally a node that is not finite.
fs::path write_graph(const fs::path& dir, const std::string& extra_nodes,
                     const std::string& loss_in, const std::string& log) {
  fs::create_directories(dir);
  fs::path p = dir / "g.json";
  std::ofstream(p) << R"({
  "weft": 1, "name": "small-ae",
  "data": {"dataset": "fashion-mnist", "split": "train", "range": [0, 1]},
  "inputs": {"x": {"shape": ["B", 784], "from": "data.images"}},
  "nets": {
    "E": {"in": ["x"], "layers": [{"op": "linear", "units": 16}, {"op": "sigmoid"}]},
    "Dec": {"in": ["h"], "layers": [{"op": "linear", "units": 784}, {"op": "sigmoid"}]}
  },
  "nodes": [
    {"id": "code", "call": "E", "in": ["x"]},
    {"id": "recon", "call": "Dec", "in": ["code"]},
    {"id": "recon_error", "op": "mse", "in": ["recon", "x"]},
    {"id": "code_mean", "op": "mean", "in": ["code"]})" +
                          extra_nodes + R"(,
    {"id": "loss", "op": "add", "in": [)" +
                          loss_in + R"(]}
  ],
  "train": {"batch": 32, "steps": 20, "seed": 3, "log": [)" +
                          log + R"(],
    "phases": [{"minimize": "loss", "params": ["E", "Dec"], "optimizer": {"adam": {"lr": 1e-3}}}]},
  "outputs": {"samples": "recon"}
})";
  return p;
}

fs::path plain_graph(const fs::path& dir) {
  return write_graph(dir, "", R"("recon_error", 0)", R"("code_mean")");
}

}  // namespace

TEST_CASE("a run folder holds one run: refused, replaced on request, locked, cleaned") {
  fs::path dir = fresh_dir("folder");
  fs::path g = plain_graph(dir / "graph");
  fs::path out = dir / "out";
  std::string log;
  const std::string train = kWeft + " train " + g.string() + " --quiet --out " + out.string();
  REQUIRE(run(train + " --steps 5", log) == 0);
  const std::string metrics = slurp(out / "metrics.csv");
  CHECK(metric_rows(out / "metrics.csv") == 5);

  // A second run into the same folder would mix two runs: refused, nothing touched.
  CHECK(run(train + " --steps 7", log) == 2);
  CHECK(log.find("the folder holds a run already: pass --resume to continue it, --overwrite") !=
        std::string::npos);
  CHECK(slurp(out / "metrics.csv") == metrics);

  // A run that fails to start (no data) leaves the old run as it was, even with --overwrite.
  CHECK(run(train + " --steps 7 --overwrite --data " + (dir / "no_such_folder").string(), log) ==
        2);
  CHECK(log.find("no_such_folder") != std::string::npos);
  CHECK(slurp(out / "metrics.csv") == metrics);

  // --overwrite replaces it, and a killed run's temporary is removed.
  std::ofstream(out / "checkpoint.safetensors.tmp.4194303") << "half a checkpoint";
  CHECK(run(train + " --steps 7 --overwrite", log) == 0);
  CHECK(metric_rows(out / "metrics.csv") == 7);
  CHECK(!fs::exists(out / "checkpoint.safetensors.tmp.4194303"));

  // While another process holds the folder, a run is refused before it writes anything.
  int fd = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  CHECK(run(train + " --steps 9 --resume", log) == 2);
  CHECK(log.find("another weft run") != std::string::npos);
  ::close(fd);
  CHECK(run(train + " --steps 9 --resume", log) == 0);
  CHECK(metric_rows(out / "metrics.csv") == 9);
}

TEST_CASE("a resumed run keeps the seed and batch it was trained with; other values are refused") {
  fs::path dir = fresh_dir("resume_seed");
  fs::path g = plain_graph(dir / "graph");
  fs::path out = dir / "out";
  std::string log;
  const std::string train = kWeft + " train " + g.string() + " --quiet --out " + out.string();
  REQUIRE(run(train + " --steps 3 --seed 7 --batch 8", log) == 0);
  CHECK(run(train + " --steps 5 --resume", log) == 0);  // seed 7 and batch 8, from the file
  CHECK(metric_rows(out / "metrics.csv") == 5);
  CHECK(run(train + " --steps 6 --resume --seed 7", log) == 0);
  CHECK(run(train + " --steps 7 --resume --seed 3", log) == 2);
  CHECK(log.find("__metadata__/seed: the checkpoint was trained with seed 7, this run uses 3") !=
        std::string::npos);
  CHECK(run(train + " --steps 7 --resume --batch 16", log) == 2);
  CHECK(log.find("trained with batch 8, this run uses 16") != std::string::npos);
  CHECK(metric_rows(out / "metrics.csv") == 6);
}

TEST_CASE("command-line values are checked, and a run refused for them writes nothing") {
  fs::path dir = fresh_dir("options");
  fs::path g = plain_graph(dir / "graph");
  fs::path out = dir / "out";
  const std::string train = kWeft + " train " + g.string() + " --quiet --out " + out.string();
  std::string log;
  CHECK(run(train + " --batch abc", log) == 2);
  CHECK(log.find("--batch") != std::string::npos);
  CHECK(run(train + " --batch 0", log) == 2);
  CHECK(log.find("--batch: expected a positive integer, got 0") != std::string::npos);
  CHECK(run(train + " --steps -3", log) == 2);
  CHECK(log.find("--steps: expected a positive integer, got -3") != std::string::npos);
  CHECK(run(train + " --seed -1", log) == 2);
  CHECK(log.find("--seed: expected a non-negative integer, got -1") != std::string::npos);
  CHECK(run(train + " --batch 70000", log) == 2);
  CHECK(log.find("/train/batch: batch 70000 is larger than the train split (60000 examples)") !=
        std::string::npos);
  CHECK(run(train + " --resume", log) == 2);
  CHECK(log.find("no checkpoint to resume from") != std::string::npos);
  CHECK_FALSE(fs::exists(out));  // not even an empty folder
  CHECK(run(kWeft + " gradcheck --op square --shape 4,x", log) == 2);
  CHECK(log.find("--shape 4,x: expected positive sizes") != std::string::npos);
}

// Starts `weft train` on g into out (`steps` steps, no shell between) with SIGINT's
// disposition set to `sigint` as a shell would (SIG_IGN for a background job), and returns
// once it has trained a few steps.
pid_t start_training(const fs::path& g, const fs::path& out, const std::string& err_file,
                     void (*sigint)(int), const std::string& steps) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::signal(SIGINT, sigint);
    ::signal(SIGTERM, SIG_DFL);
    const std::string graph_file = g.string(), out_dir = out.string();
    execl(kWeft.c_str(), "weft", "train", graph_file.c_str(), "--quiet", "--threads", "1",
          "--batch", "128", "--steps", steps.c_str(), "--checkpoint-every", "100000", "--out",
          out_dir.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 6000 && metric_rows(out / "metrics.csv") < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(metric_rows(out / "metrics.csv") >= 3);
  return pid;
}

TEST_CASE("SIGINT and SIGTERM stop after the step with a checkpoint; the resumed run is exact") {
  fs::path dir = fresh_dir("signal");
  fs::path g = plain_graph(dir / "graph");
  const std::string base =
      kWeft + " train " + g.string() + " --quiet --threads 1 --batch 128 --steps 2000";
  std::string log;
  REQUIRE(run(base + " --out " + (dir / "whole").string(), log) == 0);

  for (int sig : {SIGINT, SIGTERM}) {
    fs::path out = dir / ("stopped" + std::to_string(sig));
    const std::string err_file = (dir / "stderr.txt").string();
    pid_t pid = start_training(g, out, err_file, SIG_DFL, "2000");
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const std::string err = slurp(err_file);
    INFO("stderr: ", err);
    INFO("terminated by signal ", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 128 + sig);
    CHECK(err.find(sig == SIGINT ? "stopped by SIGINT" : "stopped by SIGTERM") !=
          std::string::npos);
    CHECK(err.find("--resume") != std::string::npos);
    SafetensorsFile f = load_safetensors((out / "checkpoint.safetensors").string());
    const size_t rows = metric_rows(out / "metrics.csv");
    CHECK(f.metadata.at("step") == std::to_string(rows));
    CHECK(rows < 2000);

    REQUIRE(run(base + " --resume --out " + out.string(), log) == 0);
    CHECK(slurp(out / "checkpoint.safetensors") == slurp(dir / "whole" / "checkpoint.safetensors"));
  }

  // A background job (SIGINT ignored, as a shell starts it) is not stopped by Ctrl-C. It has
  // steps enough never to finish by itself, so only SIGTERM ends it.
  const fs::path out = dir / "background";
  pid_t pid = start_training(g, out, (dir / "stderr.txt").string(), SIG_IGN, "100000000");
  ::kill(pid, SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int status = 0;
  CHECK(::waitpid(pid, &status, WNOHANG) == 0);  // still running
  ::kill(pid, SIGTERM);
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGTERM);
}

TEST_CASE("train.log values that no loss needs are computed") {
  fs::path dir = fresh_dir("log");
  fs::path g = plain_graph(dir / "graph");
  std::string log;
  REQUIRE(run(kWeft + " train " + g.string() + " --quiet --steps 3 --out " + (dir / "out").string(),
              log) == 0);
  std::ifstream f(dir / "out" / "metrics.csv");
  std::string header, row;
  std::getline(f, header);
  CHECK(header == "step,loss,code_mean,grad_norm.loss,samples_per_s");
  while (std::getline(f, row)) {
    std::stringstream ss(row);
    std::string step, loss, mean;
    std::getline(ss, step, ',');
    std::getline(ss, loss, ',');
    std::getline(ss, mean, ',');
    INFO(row);
    const double m = std::stod(mean);
    CHECK(m > 0.0);  // the mean of a sigmoid code: strictly inside (0, 1)
    CHECK(m < 1.0);
  }
}

TEST_CASE("values that are not finite: a true message, and --check-numerics names the node") {
  fs::path dir = fresh_dir("numerics");
  // log(x - 2) is NaN for every pixel in [0, 1]; it enters the loss.
  fs::path g = write_graph(dir / "graph",
                           R"(, {"id": "bad", "op": "log", "in": [{"op": "sub", "in": ["x", 2]}]})",
                           R"("recon_error", {"op": "mean", "in": ["bad"]})", R"("code_mean")");
  const std::string train = kWeft + " train " + g.string() + " --quiet --steps 5 --out ";
  std::string log;
  CHECK(run(train + (dir / "a").string(), log) == 2);
  CHECK(log.find("loss 'loss' is nan at step 1; the run stopped. No checkpoint was written.") !=
        std::string::npos);
  CHECK(!fs::exists(dir / "a" / "checkpoint.safetensors"));

  CHECK(run(train + (dir / "b").string() + " --check-numerics", log) == 2);
  CHECK(log.find("/nodes/4") != std::string::npos);  // where "bad" is defined
  CHECK(log.find("node 'bad' (log) is the first whose output is not finite") != std::string::npos);

  // A diverging run (a learning rate of 1e4) is warned about before it overflows.
  fs::path m = dir / "mlp_gan.json";
  std::string text = slurp(graph("mlp_gan.json"));
  for (size_t at = text.find("\"lr\": 2e-4"); at != std::string::npos;
       at = text.find("\"lr\": 2e-4"))
    text.replace(at, 10, "\"lr\": 1e4");
  std::ofstream(m) << text;
  int rc = run(kWeft + " train " + m.string() + " --quiet --steps 60 --out " + (dir / "c").string(),
               log);
  INFO(log);
  CHECK(log.find("the run is probably diverging") != std::string::npos);
  CHECK(log.find("the gradient norm of 'd_loss' is") != std::string::npos);
  if (rc != 0) CHECK(log.find("is nan at step") != std::string::npos);
}

TEST_CASE("weft eval: a checkpoint's losses over the whole test split, as computed by hand") {
  fs::path dir = fresh_dir("eval");
  fs::path g = plain_graph(dir / "graph");  // batch 32; loss = the mean squared error per pixel
  const fs::path out = dir / "out";
  std::string log;
  REQUIRE(run(kWeft + " train " + g.string() + " --quiet --out " + out.string(), log) == 0);
  const std::string ckpt = (out / "checkpoint.safetensors").string();
  REQUIRE(run(kWeft + " eval " + g.string() + " --checkpoint " + ckpt, log) == 0);
  INFO(log);
  CHECK(log.find("test split: 312 batches of 32 (9984 examples; the last 16 left out)") !=
        std::string::npos);

  // The same figure from the reconstructions themselves and the test images' bytes.
  Model m = load_model(g.string());
  Session s(m, SessionOptions{});
  s.load_checkpoint(ckpt, false);
  const Dataset* d = s.dataset("test");
  double sum = 0;
  for (int64_t first = 0; first + 32 <= d->n; first += 32) {
    Tensor r = s.evaluate("samples", 32, "test", first).to(DType::f64);
    double se = 0;
    for (int64_t i = 0; i < 32 * 784; ++i) {
      const double x = d->images[size_t(first * 784 + i)] / 255.0;
      se += (r.data<double>()[i] - x) * (r.data<double>()[i] - x);
    }
    sum += se / (32 * 784);
  }
  const double expected = sum / 312;
  const size_t at = log.find("\nloss ");
  REQUIRE(at != std::string::npos);
  const double reported = std::stod(log.substr(log.find_first_not_of(' ', at + 5)));
  CHECK(reported == doctest::Approx(expected).epsilon(1e-5));
  CHECK(log.find("code_mean") != std::string::npos);  // train.log values too

  // An autoencoder's reconstructions are scored per image (summed over its 784 pixels) and
  // drawn beside their inputs; the table is written as JSON beside the checkpoint.
  const json report = json::parse(slurp(out / "eval_test.json"));
  CHECK(report.at("examples") == 9984);
  CHECK(report.at("values").at("loss").get<double>() == doctest::Approx(expected).epsilon(1e-5));
  CHECK(report.at("reconstruction_error").get<double>() ==
        doctest::Approx(expected * 784).epsilon(1e-5));
  CHECK(fs::file_size(out / "eval_test_reconstructions.png") > 1000);

  // A graph's own mistakes are named: a checkpoint of another graph is refused.
  CHECK(run(kWeft + " eval " + graph("sparse_ae.json") + " --checkpoint " + ckpt, log) == 2);
}

TEST_CASE("a run whose metrics have other columns is not resumed into a ragged table") {
  fs::path dir = fresh_dir("columns");
  fs::path g = plain_graph(dir / "graph");
  const std::string out = (dir / "out").string();
  std::string log;
  REQUIRE(run(kWeft + " train " + g.string() + " --quiet --steps 2 --out " + out, log) == 0);
  // As a weft that wrote no gradient norms would have left it.
  std::string csv = slurp(dir / "out" / "metrics.csv");
  const std::string header = csv.substr(0, csv.find('\n'));
  csv.replace(0, header.size(), "step,loss,code_mean,samples_per_s");
  std::ofstream(dir / "out" / "metrics.csv") << csv;
  CHECK(run(kWeft + " train " + g.string() + " --quiet --steps 4 --resume --out " + out, log) == 2);
  CHECK(log.find("metrics.csv: line 1: the run's metrics have the columns") != std::string::npos);
  CHECK(slurp(dir / "out" / "metrics.csv") == csv);  // left as it was
}

TEST_CASE("weft dot draws the graph, its gradients and a phase's plan; --svg renders it") {
  const std::string g = std::string(WEFT_SOURCE_DIR) + "/graphs/mlp_gan.json";
  std::string graph, grads, plan, svg, log;
  REQUIRE(run(kWeft + " dot " + g, graph) == 0);
  CHECK(graph.rfind("digraph \"mlp-gan\" {", 0) == 0);
  CHECK(graph.find("subgraph \"cluster_fake\"") != std::string::npos);  // the call fake = G(z)
  CHECK(graph.find("label=\"fake = G(...)\"") != std::string::npos);
  CHECK(graph.find("label=\"G.linear_0.weight\\n[256, 100]\" shape=box") != std::string::npos);
  CHECK(graph.find("label=\"z\\n[B, 100]\" shape=ellipse") != std::string::npos);
  CHECK(graph.find("grad") == std::string::npos);
  // The gradient nodes of G's phase, drawn apart (filled red).
  REQUIRE(run(kWeft + " dot " + g + " --grads --phase g_loss", grads) == 0);
  CHECK(grads.find("fillcolor=\"#f2d5d5\"") != std::string::npos);
  CHECK(std::count(grads.begin(), grads.end(), '\n') >
        std::count(graph.begin(), graph.end(), '\n') / 2);
  // D's plan: fused steps with their kernels.
  REQUIRE(run(kWeft + " dot " + g + " --plan --phase d_loss", plan) == 0);
  CHECK(plan.find("linear_act (onednn)") != std::string::npos);
  // Graphviz's library reads what weft wrote and renders it, where weft was built with it.
  const int rc = run(kWeft + " dot " + g + " --plan --phase d_loss --svg", svg);
  if (rc == 0)
    CHECK(svg.find("<svg") != std::string::npos);
  else
    CHECK(svg.find("built without Graphviz's library (libgraphviz-dev)") != std::string::npos);
  // Mistakes.
  CHECK(run(kWeft + " dot " + g + " --plan", log) == 2);
  CHECK(log.find("--plan draws one phase's plan: name it with --phase") != std::string::npos);
  CHECK(run(kWeft + " dot " + g + " --grads --phase h_loss", log) == 2);
  CHECK(log.find("no phase minimizes \"h_loss\" (the phases minimize: d_loss, g_loss)") !=
        std::string::npos);
}

TEST_CASE("weft train writes a self-contained report; weft report writes it again") {
  const fs::path dir = fs::temp_directory_path() / "weft_test_report";
  fs::remove_all(dir);
  const std::string g = std::string(WEFT_SOURCE_DIR) + "/graphs/mlp_gan.json";
  std::string log;
  // A grid every step: the report keeps 24 of them and the last.
  REQUIRE(run(kWeft + " train " + g + " --steps 60 --sample-every 1 --checkpoint-every 20 " +
                  "--quiet --out " + dir.string(),
              log) == 0);
  const std::string html = slurp(dir / "report.html");
  CHECK(html.find("<title>weft run: mlp-gan</title>") != std::string::npos);
  CHECK(html.find("Finished: 60 steps.") != std::string::npos);
  CHECK(html.find("http-equiv=\"refresh\"") == std::string::npos);  // ended: no reloading
  CHECK(html.find("--sample-every 1") != std::string::npos);        // the command line
  for (const char* chart : {"<title>d_loss</title>", "<title>g_loss</title>",
                            "<title>gradient norms (before clipping)</title>"})
    CHECK_MESSAGE(html.find(chart) != std::string::npos, chart);
  size_t images = 0;
  for (size_t at = 0; (at = html.find("src=\"data:image/png;base64,", at)) != std::string::npos;
       ++at)
    ++images;
  CHECK(images == 25);
  // Nothing is fetched when the page is viewed.
  CHECK(html.find("src=\"http") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
  CHECK(html.size() < 3u << 20);
  // The graph is drawn where weft has Graphviz's library, and the page says so where not.
  CHECK((html.find("<div class=\"graph\"><svg") != std::string::npos ||
         html.find("built without Graphviz's library") != std::string::npos));
  // The folder's files are all it takes.
  fs::remove(dir / "report.html");
  REQUIRE(run(kWeft + " report " + dir.string(), log) == 0);
  CHECK(slurp(dir / "report.html") == html);
  CHECK(run(kWeft + " report " + (dir / "nothing").string(), log) == 2);
  CHECK(log.find("not a run folder: it has no metrics.csv") != std::string::npos);
}

TEST_CASE("an autoencoder's report: inputs beside reconstructions, and weft eval's numbers") {
  const fs::path dir = fs::temp_directory_path() / "weft_test_report_ae";
  fs::remove_all(dir);
  const std::string g = std::string(WEFT_SOURCE_DIR) + "/graphs/sparse_ae.json";
  std::string log;
  REQUIRE(run(kWeft + " train " + g + " --steps 10 --quiet --out " + dir.string(), log) == 0);
  CHECK(fs::exists(dir / "inputs.png"));
  CHECK(slurp(dir / "report.html").find("Inputs and their reconstructions") != std::string::npos);
  const std::string eval =
      kWeft + " eval " + g + " --checkpoint " + (dir / "checkpoint.safetensors").string();
  REQUIRE(run(eval, log) == 0);
  REQUIRE(run(kWeft + " train " + g + " --steps 20 --resume --quiet --out " + dir.string(), log) ==
          0);
  REQUIRE(run(eval, log) == 0);
  const std::string history = slurp(dir / "eval_history.jsonl");
  CHECK(std::count(history.begin(), history.end(), '\n') == 2);
  CHECK(history.find("\"step\":10") != std::string::npos);
  CHECK(history.find("\"step\":20") != std::string::npos);
  const std::string html = slurp(dir / "report.html");  // rewritten by the second eval
  CHECK(html.find("Evaluations over the run (weft eval)") != std::string::npos);
  CHECK(html.find("<title>test: reconstruction_error</title>") != std::string::npos);
}
