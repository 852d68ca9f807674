#include "runtime/error.h"

#include <cstdio>
#include <cstdlib>

namespace weft {

static std::string compose(const std::string& file, const std::string& where,
                           const std::string& what) {
  std::string s;
  if (!file.empty()) s += file + ": ";
  if (!where.empty()) s += where + ": ";
  return s + what;
}

Error::Error(std::string file, std::string where, std::string what)
    : std::runtime_error(compose(file, where, what)),
      file_(std::move(file)),
      where_(std::move(where)),
      message_(std::move(what)) {}

void assert_fail(const char* cond, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "weft internal error at %s:%d: assertion '%s' failed%s%s\n", file, line,
               cond, msg.empty() ? "" : ": ", msg.c_str());
  std::abort();
}

}  // namespace weft
