// Output files that are never half-written and never an input:
//   - a regular (or new) file is written to a temporary file beside it, fsync'd, then renamed over
//     it, so a reader (or a crash, or Ctrl-C) sees the old file or the new one, never a partial one,
//     and a process that has the old file mapped keeps its pages;
//   - a path that resolves (same device and inode, symlinks followed) to one of the run's inputs is
//     refused before anything is written;
//   - every write, fsync, close and rename is checked: a failure throws IoError naming the path.
// A target that exists and is not a regular file (/dev/null, /dev/full, a FIFO, a terminal) is
// written in place: renaming over a device node would replace the device.
#pragma once
#include <ropex/error.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ropex::io {

/// A failed read/write/close of a file that was valid to open (disk full, I/O error): the CLI exits
/// 1 for these, 2 for bad input (ropex::Error).
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline IoError io_error(std::string_view path, std::string_view what, int err) {
  return IoError(std::string(path) + ": " + std::string(what) + ": " + std::strerror(err));
}

namespace detail {
// The temporary file being written, for the SIGINT/SIGTERM handler (unlink is async-signal-safe).
inline char pending_tmp[4096] = {};
inline volatile std::sig_atomic_t pending_set = 0;

inline void remove_pending_and_reraise(int sig) {
  if (pending_set) ::unlink(pending_tmp);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
}  // namespace detail

/// Throws ropex::Error (bad input) when `target` names the same file as any of `inputs`.
inline void refuse_if_input(const std::filesystem::path& target, std::string_view flag,
                            const std::vector<std::filesystem::path>& inputs) {
  struct stat out{};
  if (::stat(target.c_str(), &out) != 0) return;  // not there yet: cannot be an input
  for (const auto& in : inputs) {
    struct stat st{};
    if (in.empty() || ::stat(in.c_str(), &st) != 0) continue;
    if (st.st_dev == out.st_dev && st.st_ino == out.st_ino)
      throw make_error(flag, target.string(), "is the input " + in.string() + "; refusing to overwrite it");
  }
}

/// One output file, written through a temporary file and renamed into place by commit().
/// Destroyed without commit() (an exception), it removes the temporary file and leaves the target.
class OutputFile {
 public:
  /// `flag` names the option in errors (e.g. "--out"); `inputs` are the files this run reads.
  OutputFile(const std::filesystem::path& target, std::string flag, const std::vector<std::filesystem::path>& inputs = {})
      : flag_(std::move(flag)) {
    namespace fs = std::filesystem;
    if (target.empty()) throw make_error(flag_, "", "empty path");
    refuse_if_input(target, flag_, inputs);
    // A symlink is followed: the file it points to is replaced, the link stays.
    std::error_code ec;
    target_ = target;
    if (fs::is_symlink(fs::symlink_status(target, ec))) {
      target_ = fs::weakly_canonical(target, ec);
      if (ec) throw make_error(flag_, target.string(), ec.message());
    }
    struct stat st{};
    if (::stat(target_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) throw make_error(flag_, target_.string(), "is a directory");
    if (::stat(target_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {  // a device or FIFO: in place
      fd_ = ::open(target_.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd_ < 0) throw io_error(target_.string(), "cannot open for writing", errno);
      return;
    }
    const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    std::string tmpl = (dir / ("." + target_.filename().string() + ".ropex-XXXXXX")).string();
    fd_ = ::mkstemp(tmpl.data());
    if (fd_ < 0) throw io_error(target_.string(), "cannot open for writing (a temporary file beside it)", errno);
    tmp_ = tmpl;
    // mkstemp makes 0600; an output file gets the usual umask-based mode, as open(O_CREAT, 0666) would.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(fd_, 0666 & ~mask);
    if (!detail::pending_set && tmp_.size() < sizeof detail::pending_tmp) {
      owns_signals_ = true;
      std::memcpy(detail::pending_tmp, tmp_.c_str(), tmp_.size() + 1);
      detail::pending_set = 1;
      prev_int_ = std::signal(SIGINT, detail::remove_pending_and_reraise);
      prev_term_ = std::signal(SIGTERM, detail::remove_pending_and_reraise);
    }
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    release_signals();
  }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw io_error(target_.string(), "write failed", w < 0 ? errno : EIO);
      p += w;
      n -= size_t(w);
    }
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  /// fsync, close, rename over the target (then fsync the directory, so the rename survives a crash).
  void commit() {
    if (tmp_.empty()) {  // device / FIFO written in place
      const int fd = fd_;
      fd_ = -1;
      if (::close(fd) != 0) throw io_error(target_.string(), "close failed", errno);
      return;
    }
    if (::fsync(fd_) != 0) throw io_error(target_.string(), "fsync failed", errno);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw io_error(target_.string(), "close failed", errno);
    if (::rename(tmp_.c_str(), target_.c_str()) != 0) throw io_error(target_.string(), "rename into place failed", errno);
    tmp_.clear();
    release_signals();
    const std::filesystem::path dir = target_.has_parent_path() ? target_.parent_path() : ".";
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  const std::filesystem::path& path() const { return target_; }

 private:
  void release_signals() {
    if (!owns_signals_) return;
    owns_signals_ = false;
    detail::pending_set = 0;
    std::signal(SIGINT, prev_int_ == SIG_ERR ? SIG_DFL : prev_int_);
    std::signal(SIGTERM, prev_term_ == SIG_ERR ? SIG_DFL : prev_term_);
  }

  std::string flag_;
  std::filesystem::path target_;
  std::string tmp_;
  int fd_ = -1;
  bool owns_signals_ = false;
  void (*prev_int_)(int) = SIG_DFL;
  void (*prev_term_)(int) = SIG_DFL;
};

/// Writes `bytes` to `target` atomically (OutputFile).
inline void write_file_atomic(const std::filesystem::path& target, std::string_view flag, std::string_view bytes,
                              const std::vector<std::filesystem::path>& inputs = {}) {
  OutputFile f(target, std::string(flag), inputs);
  f.write(bytes);
  f.commit();
}

}  // namespace ropex::io
