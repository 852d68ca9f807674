// Malformed graphs: each file in fixtures/bad must be refused with its JSON pointer and
// message (fixtures/bad/expected.json), and the runner must exit 2 and write nothing.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/model.h"

using namespace weft;
using json = nlohmann::json;
namespace fs = std::filesystem;

static const std::string kBad = std::string(WEFT_SOURCE_DIR) + "/tests/fixtures/bad/";

static std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

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
    if (p.path().extension() != ".json") continue;
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
  CHECK(err.find("not a valid safetensors file") != std::string::npos);
  CHECK(slurp((dir / "checkpoint.safetensors").string()) == before);
  CHECK_FALSE(fs::exists(dir / "metrics.csv"));
}
