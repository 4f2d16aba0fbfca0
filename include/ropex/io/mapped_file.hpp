// A read-only memory map of a whole file (POSIX mmap), owned RAII-style.
// Checkpoints are mapped, never read into memory: a 7B BF16 model stays 13 GB on disk and the
// OS pages in what the forward pass touches.
#pragma once
#include <ropex/error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ropex::io {

/// The bytes of a file, mapped read-only. Movable, not copyable; the mapping address never
/// changes when the object moves, so pointers into bytes() stay valid for its lifetime.
class MappedFile {
 public:
  MappedFile() = default;

  /// Maps `path` whole. Throws ropex::Error "<path>: cannot open: <reason>" on failure.
  /// An empty file maps to an empty span (mmap refuses length 0).
  static MappedFile open(const std::filesystem::path& path) {
    MappedFile f;
    f.path_ = path;
    const std::string name = path.string();
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the S_ISREG check below refuses it.
    int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw make_error(name, "", std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      throw make_error(name, "", std::string("cannot stat: ") + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw make_error(name, "", "not a regular file");
    }
    f.size_ = static_cast<size_t>(st.st_size);
    if (f.size_ > 0) {
      void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        throw make_error(name, "", std::string("cannot mmap: ") + std::strerror(e));
      }
      f.data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
    return f;
  }

  MappedFile(MappedFile&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void unmap() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ropex::io
