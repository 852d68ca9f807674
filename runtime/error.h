// Two kinds of failure, kept apart on purpose:
//  - weft::Error is a user's mistake (bad graph, missing file, wrong shape). It carries the
//    file and the JSON pointer where the mistake is, and the runner exits with status 2.
//  - WEFT_ASSERT is a bug in weft. It is always on and names the file and line.
#pragma once

#include <stdexcept>
#include <string>

namespace weft {

class Error : public std::runtime_error {
 public:
  // file: the graph or data file; where: a JSON pointer ("/nets/D/layers/2") or empty.
  Error(std::string file, std::string where, std::string what);
  explicit Error(std::string what) : Error("", "", std::move(what)) {}
  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }
  const std::string& message() const { return message_; }

 private:
  std::string file_, where_, message_;
};

// Thrown by shape rules and attribute checks, which do not know where in a file the node
// came from; the loader catches it and rethrows an Error with the location.
class ShapeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void assert_fail(const char* cond, const char* file, int line, const std::string& msg);

}  // namespace weft

#define WEFT_ASSERT(cond, ...)                                                             \
  do {                                                                                     \
    if (!(cond)) ::weft::assert_fail(#cond, __FILE__, __LINE__, std::string{__VA_ARGS__}); \
  } while (0)

namespace weft {
// An attribute of a node that does not fit its schema; `key` is the attribute's name,
// so the loader can point at it (/nodes/3/units).
class AttrError : public ShapeError {
 public:
  AttrError(std::string key, const std::string& what) : ShapeError(what), key_(std::move(key)) {}
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};
}  // namespace weft
