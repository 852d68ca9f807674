#include "runtime/run_folder.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace weft {

namespace fs = std::filesystem;

namespace {

// Files a run writes: what marks a folder as holding a run, and what --overwrite replaces.
bool is_run_file(const std::string& name) {
  return name == "metrics.csv" || name == "checkpoint.safetensors" || name == "losses.svg" ||
         name == "samples.png" ||
         (name.rfind("samples_step", 0) == 0 && name.size() > 16 &&
          name.substr(name.size() - 4) == ".png");
}

// write_atomic's temporaries are "NAME.tmp.PID"; with the lock held, none can be in use.
bool is_temporary(const std::string& name) {
  auto at = name.rfind(".tmp.");
  if (at == std::string::npos || at + 5 >= name.size()) return false;
  return name.find_first_not_of("0123456789", at + 5) == std::string::npos;
}

}  // namespace

RunFolder::RunFolder(std::string dir, Mode mode) : dir_(std::move(dir)) {
  std::error_code ec;
  if (mode == Mode::resume && !fs::exists(path("checkpoint.safetensors"), ec))
    throw Error(path("checkpoint.safetensors"), "", "no checkpoint to resume from");
  created_ = !fs::exists(dir_, ec);
  fs::create_directories(dir_, ec);
  if (ec) throw Error(dir_, "", "cannot create the run folder: " + ec.message());
  try {
    lock_and_check(mode);
  } catch (...) {
    release();
    throw;
  }
}

void RunFolder::lock_and_check(Mode mode) {
  // The lock is on the folder itself, so that taking it writes nothing into the folder.
  lock_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd_ < 0)
    throw Error(dir_, "", fmt::format("cannot open the run folder: {}", std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
    throw Error(dir_, "",
                "another weft run is writing into this folder; wait for it to end or pass "
                "another --out");
  std::error_code ec;
  bool has_run = false;
  for (auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (is_temporary(name)) {
      fs::remove(e.path(), ec);
      continue;
    }
    has_run = has_run || is_run_file(name);
  }
  if (ec) throw Error(dir_, "", "cannot read the run folder: " + ec.message());
  const bool has_checkpoint = fs::exists(path("checkpoint.safetensors"), ec);
  if (mode == Mode::resume && !has_checkpoint)  // it went away meanwhile
    throw Error(path("checkpoint.safetensors"), "", "no checkpoint to resume from");
  if (mode == Mode::fresh && has_run)
    throw Error(dir_, "",
                has_checkpoint
                    ? "the folder holds a run already: pass --resume to continue it, --overwrite "
                      "to start again in its place, or another --out"
                    : "the folder holds files of an earlier run (metrics.csv, samples): pass "
                      "--overwrite to replace them, or another --out");
}

void RunFolder::release() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  lock_fd_ = -1;
  std::error_code ec;
  if (created_ && !keep_) fs::remove(dir_, ec);  // only if empty: a run that never started
}

RunFolder::~RunFolder() { release(); }

void RunFolder::clear_previous_run() const {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir_, ec))
    if (is_run_file(e.path().filename().string())) fs::remove(e.path(), ec);
}

}  // namespace weft
