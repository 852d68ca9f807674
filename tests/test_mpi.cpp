// Data-parallel training under mpirun (runtime/distributed.h): N ranks, each with its share
// of the global batch, against one process with the whole batch. The cases that start
// mpirun run when weft was built with MPI and mpirun was found (CMake passes its path);
// they are skipped otherwise. On one machine the ranks share its cores (--oversubscribe),
// and CI runs as root (--allow-run-as-root).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "runtime/distributed.h"
#include "runtime/files.h"
#include "runtime/kernels.h"
#include "runtime/plan.h"
#include "runtime/rng.h"
#include "tests/test_util.h"

using namespace weft;
using test::run_command;
using test::slurp;
namespace fs = std::filesystem;

namespace {

const bool kCanRunRanks = std::string(WEFT_MPIRUN).size() > 0 && built_with_mpi();

const std::string kWeft = WEFT_BINARY;
std::string graph(const std::string& name) {
  return std::string(WEFT_SOURCE_DIR) + "/graphs/" + name;
}
// Open MPI's own allocations outlive MPI_Finalize and its components are unloaded before
// the process exits, so a suppression could not even name them: under AddressSanitizer the
// ranks run without LeakSanitizer's check at exit. weft's own code is leak-checked by the
// suites that run in one process, where MPI is never started.
std::string mpirun(int n) {
  return "env ASAN_OPTIONS=detect_leaks=0 " + std::string(WEFT_MPIRUN) +
         " -x ASAN_OPTIONS --allow-run-as-root --oversubscribe -np " + std::to_string(n) + " ";
}

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("weft_mpi_" + name);
  fs::remove_all(d);
  return d;
}

// The largest difference between two runs' parameters, relative to max(1, |value|). Names
// containing `skip` are left out.
double param_difference(const fs::path& a, const fs::path& b, const std::string& skip = "") {
  const SafetensorsFile x = load_safetensors((a / "checkpoint.safetensors").string()),
                        y = load_safetensors((b / "checkpoint.safetensors").string());
  double worst = 0;
  int compared = 0;
  for (auto& [key, t] : y.tensors) {
    if (key.rfind("param/", 0) != 0 || (!skip.empty() && key.find(skip) != std::string::npos))
      continue;
    const Tensor& u = x.tensors.at(key);
    REQUIRE(u.numel() == t.numel());
    for (int64_t i = 0; i < t.numel(); ++i)
      worst = std::max(worst, std::abs(u.at(i) - t.at(i)) / std::max(1.0, std::abs(t.at(i))));
    ++compared;
  }
  CHECK(compared > 0);
  return worst;
}

int train(const std::string& prefix, const std::string& args, const fs::path& out,
          std::string& log) {
  return run_command(prefix + kWeft + " train " + args + " --quiet --out " + out.string(), log);
}

}  // namespace

// Each rank sums the gradient of its half of the batch and the halves are averaged, where one
// process sums the whole batch at once: the same arithmetic up to the order of additions
// (about 1e-7 relative per gradient). Adam turns such differences in gradients that are
// nearly zero into steps of up to lr, so after 50 steps parameters agree to about 1e-4
// relative here; 1e-3 is the bound.
TEST_CASE("two ranks train mlp_gan as one process with the whole batch does" *
          doctest::skip(!kCanRunRanks)) {
  const fs::path one = fresh_dir("one"), two = fresh_dir("two");
  std::string log;
  REQUIRE(train("", graph("mlp_gan.json") + " --steps 50", one, log) == 0);
  REQUIRE_MESSAGE(train(mpirun(2), graph("mlp_gan.json") + " --steps 50", two, log) == 0, log);
  CHECK(param_difference(two, one) < 1e-3);
  // Rank 0 alone wrote the run: one row per step, its losses those of the whole batch.
  const std::string a = slurp(one / "metrics.csv"), b = slurp(two / "metrics.csv");
  CHECK(std::count(b.begin(), b.end(), '\n') == 51);
  const double la = std::stod(a.substr(a.rfind("\n50,") + 4)),
               lb = std::stod(b.substr(b.rfind("\n50,") + 4));
  CHECK(std::abs(la - lb) < 1e-3 * std::abs(la));
  CHECK(fs::exists(two / "samples.png"));
}

// dcgan's batch norms: with --sync-batch-norm every rank normalizes by the whole batch's
// statistics, as one process does; by default each rank uses its own half's, a different
// computation. The biases of convolutions that feed a batch norm are left out: batch norm
// removes their effect, so their gradients are rounding noise that Adam scales up to lr.
TEST_CASE("batch norm: synchronized statistics match one process, per-rank ones do not" *
          doctest::skip(!kCanRunRanks)) {
  const fs::path one = fresh_dir("bn_one"), sync = fresh_dir("bn_sync"), own = fresh_dir("bn_own");
  std::string log;
  const std::string args = graph("dcgan.json") + " --steps 3";
  REQUIRE(train("", args, one, log) == 0);
  REQUIRE_MESSAGE(train(mpirun(2), args + " --sync-batch-norm", sync, log) == 0, log);
  REQUIRE_MESSAGE(train(mpirun(2), args, own, log) == 0, log);
  const double synced = param_difference(sync, one, "bias"),
               per_rank = param_difference(own, one, "bias");
  INFO("synchronized ", synced, ", per rank ", per_rank);
  CHECK(synced < 1e-3);
  CHECK(per_rank > 5e-3);
}

TEST_CASE("a run resumes under another number of ranks" * doctest::skip(!kCanRunRanks)) {
  const fs::path one = fresh_dir("resume_one"), down = fresh_dir("resume_down"),
                 up = fresh_dir("resume_up");
  std::string log;
  const std::string g = graph("mlp_gan.json");
  REQUIRE(train("", g + " --steps 40", one, log) == 0);
  // Two ranks, then one.
  REQUIRE_MESSAGE(train(mpirun(2), g + " --steps 20", down, log) == 0, log);
  REQUIRE_MESSAGE(train("", g + " --steps 40 --resume", down, log) == 0, log);
  CHECK(param_difference(down, one) < 1e-3);
  // One, then four (the data cursor counts global examples: the same batches follow).
  REQUIRE(train("", g + " --steps 20", up, log) == 0);
  REQUIRE_MESSAGE(train(mpirun(4), g + " --steps 40 --resume", up, log) == 0, log);
  CHECK(param_difference(up, one) < 1e-3);
  const std::string m = slurp(up / "metrics.csv");
  CHECK(std::count(m.begin(), m.end(), '\n') == 41);
}

TEST_CASE("under mpirun a mistake on any rank stops every rank with its message" *
          doctest::skip(!kCanRunRanks)) {
  std::string log;
  const std::string g = graph("mlp_gan.json"), t = "timeout 120 ";
  // A batch the ranks cannot share equally.
  CHECK(train(t + mpirun(3), g + " --steps 2", fresh_dir("three"), log) != 0);
  CHECK_MESSAGE(
      log.find("batch 64 does not divide among the 3 ranks of this run") != std::string::npos, log);
  // Ranks started with different seeds would train different models.
  const fs::path seeds = fresh_dir("seeds");
  CHECK(run_command(t + mpirun(1) + kWeft + " train " + g + " --seed 1 --quiet --out " +
                        seeds.string() + " : -np 1 " + kWeft + " train " + g +
                        " --seed 2 --quiet --out " + seeds.string(),
                    log) != 0);
  CHECK_MESSAGE(log.find("the ranks of this run loaded different graphs, seeds, batches or "
                         "steps") != std::string::npos,
                log);
  // One rank cannot read its data: every rank stops (timeout would say 124 on a hang).
  const fs::path bad = fresh_dir("bad_data");
  const int rc = run_command(t + mpirun(1) + kWeft + " train " + g + " --steps 5 --quiet --out " +
                                 bad.string() + " : -np 1 " + kWeft + " train " + g +
                                 " --steps 5 --quiet --data /nonexistent --out " + bad.string(),
                             log);
  CHECK(rc != 0);
  CHECK(rc != 124);
  CHECK_MESSAGE(log.find("rank 1: ") != std::string::npos, log);
  CHECK_MESSAGE(log.find("/nonexistent") != std::string::npos, log);
  CHECK_FALSE(fs::exists(bad / "checkpoint.safetensors"));
  // Commands that do not train run in one process.
  CHECK(run_command(t + mpirun(2) + kWeft + " check " + g, log) != 0);
  CHECK_MESSAGE(log.find("weft check runs in one process: under mpirun only weft train divides "
                         "its work among the ranks") != std::string::npos,
                log);
}

// On one rank the synchronized kernels are batch norm itself: checked against the f64
// reference (the allreduce inside adds nothing).
TEST_CASE("the synchronized batch norm kernels on one rank equal the reference") {
  const OpDef* fwd = Registry::get().find("batch_norm");
  const OpDef* bwd = Registry::get().find("batch_norm_backward");
  const Dims x{4, 3, 5, 5}, c{3};
  auto random = [](DType t, const Dims& d, uint64_t key, double low, double high) {
    Tensor r(t, d);
    for (int64_t i = 0; i < r.numel(); ++i) r.set(i, low + (high - low) * uniform01(key, i));
    return r;
  };
  for (const OpDef* def : {fwd, bwd}) {
    INFO(def->name);
    const bool forward = def == fwd;
    const std::vector<Dims> in =
        forward ? std::vector<Dims>{x, c, c, c, c} : std::vector<Dims>{x, x, c, c, c};
    const std::vector<Dims> out = forward ? std::vector<Dims>{x, c, c} : std::vector<Dims>{x, c, c};
    std::vector<Tensor> ins64, outs64, ins32, outs32;
    for (size_t i = 0; i < in.size(); ++i) {
      const bool positive = forward ? i >= 1 : i >= 2;  // gamma, variances
      ins64.push_back(random(DType::f64, in[i], 10 + i, positive ? 0.5 : -2, 2));
      ins32.push_back(ins64.back().to(DType::f32));
    }
    for (auto& d : out) outs64.emplace_back(DType::f64, d), outs32.emplace_back(DType::f32, d);
    json attrs = def->complete_attrs(json::object());
    KernelInfo ref{"n", attrs, in, out, DType::f64}, sync{"n", attrs, in, out, DType::f32};
    sync.sync_batch_norm = true;
    std::string ref_name, sync_name;
    auto kr = make_kernel(*def, ref, ref_name, ""), ks = make_kernel(*def, sync, sync_name, "");
    CHECK(ref_name == "reference");
    CHECK(sync_name == "sync");
    RunContext ctx;
    KernelArgs a64, a32;
    for (size_t i = 0; i < in.size(); ++i) a64.in.push_back(&ins64[i]), a32.in.push_back(&ins32[i]);
    for (size_t i = 0; i < out.size(); ++i)
      a64.out.push_back(&outs64[i]), a32.out.push_back(&outs32[i]);
    a64.ctx = a32.ctx = &ctx;
    kr->run(a64);
    ks->run(a32);
    double worst = 0;
    for (size_t j = 0; j < out.size(); ++j)
      for (int64_t i = 0; i < outs64[j].numel(); ++i)
        worst = std::max(worst, std::abs(outs32[j].at(i) - outs64[j].at(i)) /
                                    std::max(1.0, std::abs(outs64[j].at(i))));
    for (size_t i = 3; forward && i < 5; ++i)  // the running statistics, updated in place
      for (int64_t k = 0; k < 3; ++k)
        worst = std::max(worst, std::abs(ins32[i].at(k) - ins64[i].at(k)));
    CHECK(worst < 1e-5);
  }
}
