// The folder a training run writes into. One run owns it at a time: opening it takes an
// exclusive lock (flock on the folder, released by the kernel when the process ends, however
// it ends), removes temporary files that killed runs left behind, and refuses to start a new
// run over an existing one unless asked to continue it (--resume) or to replace it
// (--overwrite).
#pragma once

#include <string>

namespace weft {

class RunFolder {
 public:
  enum class Mode { fresh, resume, overwrite };
  // Throws Error when the folder cannot be created, another process holds it, it holds a run
  // and mode is fresh, or mode is resume and it holds no checkpoint.
  RunFolder(std::string dir, Mode mode);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Removes the files an earlier run wrote (metrics, samples, plot, checkpoint); called by an
  // --overwrite run once it is ready to write its own, so a run that fails to start leaves
  // the old one untouched.
  void clear_previous_run() const;
  // The run has started writing: the folder stays even if the run fails later. A folder
  // that this object created and whose run never started is removed again.
  void keep() { keep_ = true; }

 private:
  void lock_and_check(Mode mode);
  void release();

  std::string dir_;
  int lock_fd_ = -1;
  bool created_ = false, keep_ = false;
};

}  // namespace weft
