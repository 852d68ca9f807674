// Small helpers the suites share.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace weft::test {

// `plain` compressed as one gzip member (what Debian's Fashion-MNIST files are).
inline std::string gzip(const std::string& plain) {
  std::string out(compressBound(uLong(plain.size())) + 32, '\0');
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  z.avail_in = uInt(plain.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A whole file's bytes ("" if it cannot be read), and a file made of `bytes`.
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
inline void spit(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

// A graph file under graphs/: JSON, and not the schema beside them (weft.schema.json).
inline bool is_graph_file(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  return p.extension() == ".json" && !name.ends_with(".schema.json");
}

// Runs a shell command with stdout and stderr into `out`; returns its exit status (-1 when
// it did not exit).
inline int run_command(const std::string& cmd, std::string& out) {
  const std::filesystem::path log =
      std::filesystem::temp_directory_path() / ("weft_test_" + std::to_string(::getpid()) + ".log");
  const int s = std::system((cmd + " > " + log.string() + " 2>&1").c_str());
  out = slurp(log);
  std::filesystem::remove(log);
  return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

}  // namespace weft::test
