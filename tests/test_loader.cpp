// Malformed graphs: each file in fixtures/bad must be refused with its JSON pointer and
// message (fixtures/bad/expected.json), and the runner must exit 2 and write nothing.
// Graphs with every value replaced in turn by an absurd one are refused as weft::Error
// and never crash.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "runtime/model.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
using json = nlohmann::json;
namespace fs = std::filesystem;

static const std::string kBad = std::string(WEFT_SOURCE_DIR) + "/tests/fixtures/bad/";

using weft::test::slurp;

TEST_CASE("every malformed graph is refused with its pointer and message") {
  json expected = json::parse(slurp(kBad + "expected.json"));
  REQUIRE(expected.size() >= 20);
  for (auto& e : expected) {
    std::string file = kBad + e["file"].get<std::string>();
    INFO(file);
    bool threw = false;
    try {
      load_model(file);
    } catch (const Error& err) {
      threw = true;
      CHECK(err.file() == file);
      CHECK(err.where() == e["pointer"].get<std::string>());
      CHECK_MESSAGE(err.message().find(e["message"].get<std::string>()) != std::string::npos,
                    "got: ", err.message());
    }
    CHECK(threw);
  }
  // Every fixture is listed, so none is silently unchecked.
  int files = 0;
  for (auto& p : fs::directory_iterator(kBad)) files += p.path().filename() != "expected.json";
  CHECK(files == int(expected.size()));
}

TEST_CASE("the shipped graphs load (those needing a plugin ask for it)") {
  int loaded = 0;
  for (auto& p : fs::directory_iterator(std::string(WEFT_SOURCE_DIR) + "/graphs")) {
    if (!test::is_graph_file(p.path())) continue;
    INFO(p.path());
    if (json::parse(slurp(p.path().string()))
            .contains("requires")) {  // tests/test_plugins.cpp loads them
      CHECK_THROWS_WITH(load_model(p.path().string()),
                        doctest::Contains("/requires/0: the graph requires plugin"));
      continue;
    }
    CHECK_NOTHROW(load_model(p.path().string()));
    ++loaded;
  }
  CHECK(loaded >= 3);
}

static int run(const std::string& cmd, std::string& err) {
  std::string log = (fs::temp_directory_path() / "weft_loader_test.log").string();
  int status = std::system((cmd + " > /dev/null 2> " + log).c_str());
  err = slurp(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_CASE("the runner exits 2 with the file and pointer, and writes nothing") {
  std::string err;
  std::string file = kBad + "shape_mismatch.json";
  CHECK(run(std::string(WEFT_BINARY) + " check " + file, err) == 2);
  CHECK(err.find(file + ": /nets/D/layers/0 (linear) in the call at /nodes/1: input has 785 "
                        "features, weight expects 784") != std::string::npos);

  fs::path out = fs::temp_directory_path() / "weft_bad_run";
  fs::remove_all(out);
  CHECK(run(std::string(WEFT_BINARY) + " train " + kBad + "cycle.json --out " + out.string(),
            err) == 2);
  CHECK(err.find("cycle: a -> b -> a") != std::string::npos);
  CHECK_FALSE(fs::exists(out));

  CHECK(run(std::string(WEFT_BINARY) + " check " + kBad + "no_such_file.json", err) == 2);
  CHECK(err.find("cannot open the graph file") != std::string::npos);

  // A valid graph with nothing to train: refused before the run folder is made.
  fs::path g = fs::temp_directory_path() / "weft_no_train.json";
  std::ofstream(g) << R"({"weft": 1, "inputs": {"x": {"shape": ["B", 3], "from": {"normal": {}}}},
                          "nodes": [{"id": "y", "op": "relu", "in": ["x"]}]})";
  fs::remove_all(out);
  CHECK(run(std::string(WEFT_BINARY) + " train " + g.string() + " --out " + out.string(), err) ==
        2);
  CHECK(err.find(g.string() + ": /train: the graph has no \"train\" section with phases") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("a corrupt checkpoint is refused and the run folder is untouched") {
  fs::path dir = fs::temp_directory_path() / "weft_bad_ckpt";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "checkpoint.safetensors", std::ios::binary);
    f << "\x10\0\0\0\0\0\0\0{\"a\": 1}";
  }
  std::string before = slurp((dir / "checkpoint.safetensors").string()), err;
  std::string cmd = std::string(WEFT_BINARY) + " train " + WEFT_SOURCE_DIR +
                    "/graphs/mlp_gan.json --steps 2 --resume --out " + dir.string();
  CHECK(run(cmd, err) == 2);
  CHECK(err.find("byte 0: not a safetensors file: 1 bytes, shorter than the 8-byte header") !=
        std::string::npos);
  CHECK(slurp((dir / "checkpoint.safetensors").string()) == before);
  CHECK_FALSE(fs::exists(dir / "metrics.csv"));
}

// Every number and every string of a graph (not the keys), as JSON pointers.
static void leaves(const json& v, const json::json_pointer& at,
                   std::vector<json::json_pointer>& out) {
  if (v.is_object()) {
    for (auto& [k, x] : v.items()) leaves(x, at / k, out);
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) leaves(v[i], at / i, out);
  } else if (v.is_number() || v.is_string()) {
    out.push_back(at);
  }
}

// Values that break assumptions: zero, negative, past 32 bits, past memory, past int64 (as
// a JSON number 2^63-1 is the largest signed one), a float where an integer goes, and
// every other type.
static const std::vector<json> kAbsurd = {0,
                                          -1,
                                          int64_t(1) << 31,
                                          int64_t(1) << 32,
                                          int64_t(1) << 40,
                                          int64_t(1) << 62,
                                          INT64_MAX,
                                          1e300,
                                          nullptr,
                                          "x",
                                          json::array(),
                                          json::object()};

// What compiling a model's plans depends on: the batch, and each node's op, attributes
// (but its parameters' initializers), inputs and shapes.
static std::string signature(const Model& m) {
  std::ostringstream s;
  s << m.train.batch;
  for (auto& n : m.graph.nodes) {
    json attrs = n.attrs;  // initializers do not change what is compiled
    for (const char* init : {"weight_init", "bias_init", "gamma_init"}) attrs.erase(init);
    s << '\n' << n.op() << attrs.dump();
    for (auto& v : n.in) s << ' ' << v.node << ':' << v.out;
    for (auto& sh : n.shapes) s << ' ' << shape_str(sh);
  }
  return s.str();
}

TEST_CASE("every value of the shipped graphs replaced by an absurd one: an Error or a model") {
  for (const char* name : {"dcgan.json", "mlp_gan.json"}) {
    const std::string path = std::string(WEFT_SOURCE_DIR) + "/graphs/" + name;
    const json graph = json::parse(slurp(path));
    std::vector<json::json_pointer> where;
    leaves(graph, json::json_pointer(), where);
    REQUIRE(where.size() > 50);
    int refused = 0, loaded = 0, sessions = 0;
    std::set<std::string> compiled;
    for (auto& p : where) {
      for (auto& value : kAbsurd) {
        json g = graph;
        g[p] = value;
        const std::string what = p.to_string() + " = " + value.dump();
        std::string failure;
        try {
          Model m = parse_model(g.dump(), name);
          ++loaded;
          // A session compiles every phase's plan (kernels included) at the graph's batch;
          // the run's data is read only when it trains. Compiling depends on the batch
          // and the nodes, so a variant that changes neither (a learning rate, a doc
          // string) compiles what another one did.
          if (compiled.insert(signature(m)).second) {
            Session s(m, SessionOptions{});
            ++sessions;
          }
        } catch (const Error& e) {
          ++refused;
          if (e.file() != name) failure = "an Error without the file: " + std::string(e.what());
        } catch (const std::exception& e) {
          failure = std::string("not a weft::Error: ") + e.what();
        }
        if (!failure.empty()) FAIL_CHECK(name, ": ", what, ": ", failure);
      }
    }
    MESSAGE(std::string(name), ": ", where.size() * kAbsurd.size(), " variants, ", refused,
            " refused, ", loaded, " loaded, ", sessions, " compiled");
    CHECK(refused > loaded);  // most absurd values are mistakes
    CHECK(sessions > 0);      // some are harmless (a doc string, a seed)
  }
}

TEST_CASE("the runner refuses a run that cannot fit in memory, before allocating it") {
  std::string err, dcgan = std::string(WEFT_SOURCE_DIR) + "/graphs/dcgan.json";
  CHECK(run(std::string(WEFT_BINARY) + " check " + dcgan + " --batch 4611686018427387904", err) ==
        2);
  CHECK(err.find(dcgan + ": training at batch 4611686018427387904 would need more than 2^63 "
                         "bytes of memory, and this machine has ") != std::string::npos);

  // Noise 2^40 wide: G's first weight alone would be 2^40 x 6272 floats.
  json g = json::parse(slurp(dcgan));
  g["inputs"]["z"]["shape"] = {"B", int64_t(1) << 40};
  fs::path wide = fs::temp_directory_path() / "weft_wide_noise.json";
  std::ofstream(wide) << g.dump();
  CHECK(run(std::string(WEFT_BINARY) + " check " + wide.string(), err) == 2);
  CHECK(err.find(wide.string() + ": training at batch 64 (parameters 24.5 PiB, inputs 256.0 TiB) "
                                 "would need 24.8 PiB of memory") != std::string::npos);

  // An input 2^62 wide that no layer reads: it alone would not fit, and training refuses
  // it before writing anything.
  g = json::parse(slurp(dcgan));
  g["inputs"]["unused"] = {{"shape", {"B", int64_t(1) << 62}},
                           {"from", {{"normal", json::object()}}}};
  std::ofstream(wide) << g.dump();
  fs::path out = fs::temp_directory_path() / "weft_wide_run";
  fs::remove_all(out);
  CHECK(run(std::string(WEFT_BINARY) + " train " + wide.string() + " --out " + out.string(), err) ==
        2);
  CHECK(err.find(wide.string() + ": training at batch 64 would need more than 2^63 bytes") !=
        std::string::npos);
  CHECK((!fs::exists(out) || fs::is_empty(out)));
}
