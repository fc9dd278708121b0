// Read-write memory backed by a file instead of anonymous memory: the kernel
// can write its pages back and reclaim them, so a large working buffer (the
// residual stream of quantize-model's calibration sequences) does not have
// to fit in RAM beside everything else.
//
// The file has no name from the start where the filesystem allows it
// (O_TMPFILE), else a unique one that is unlinked at once (registered for the
// interrupt handler meanwhile): nothing is left behind, even after SIGKILL.
// Its whole size is reserved when it is made (posix_fallocate), so a full
// disk is an error here, not a SIGBUS on a later write into the mapping.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "lowbit/core/error.hpp"
#include "lowbit/io/file_bytes.hpp"

namespace lowbit::io {

class ScratchFile {
 public:
  ScratchFile() = default;

  // `bytes` (> 0) of zeros in a new file in the directory `dir`, mapped
  // shared. Throws lowbit::Error naming the directory when the file cannot be
  // made, reserved or mapped; then nothing is left in `dir`.
  ScratchFile(const std::string& dir, std::size_t bytes) : size_(bytes) {
    lowbit::detail::require(bytes > 0, "a scratch file in ", dir, ": 0 bytes asked for");
    const int fd = open_unnamed(dir);
    // posix_fallocate returns the error instead of setting errno.
    if (const int error = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); error != 0) {
      ::close(fd);
      lowbit::detail::fail("a scratch file in ", dir, ": cannot reserve ", bytes, " bytes (",
                           std::strerror(error), ")");
    }
    void* mapped = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int error = errno;
    ::close(fd);  // the mapping keeps the file
    lowbit::detail::require(mapped != MAP_FAILED, "a scratch file in ", dir, ": mmap of ", bytes,
                            " bytes failed (", std::strerror(error), ")");
    data_ = static_cast<unsigned char*>(mapped);
  }
  ScratchFile(ScratchFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  ScratchFile& operator=(ScratchFile&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }

  unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

  // Drops bytes [begin, end) (whole pages inside it) from this process's
  // memory: their contents stay in the file, dirty pages in the page cache
  // until written back, and a later access maps them in again.
  void release(std::size_t begin, std::size_t end) const {
    if (data_ == nullptr || end > size_) return;
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t first = (begin + page - 1) / page * page, last = end / page * page;
    if (first < last) ::madvise(data_ + first, last - first, MADV_DONTNEED);
  }

 private:
  static int open_unnamed(const std::string& dir) {
#ifdef O_TMPFILE
    const int unnamed = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (unnamed >= 0) return unnamed;
    // Filesystems without O_TMPFILE refuse it with EOPNOTSUPP (or EISDIR on
    // kernels that predate it); any other error is the directory's.
    if (errno != EOPNOTSUPP && errno != EISDIR)
      lowbit::detail::fail("a scratch file in ", dir, ": cannot create (", std::strerror(errno),
                           ")");
#endif
    // A name no other file has (O_EXCL), registered before the file exists so
    // that a signal between its creation and its unlinking removes it.
    static std::atomic<unsigned> counter{0};
    for (;;) {
      const std::string path = dir + "/.lowbit-scratch-" + std::to_string(::getpid()) + "-" +
                               std::to_string(counter.fetch_add(1));
      const int slot = detail::register_temporary(path);
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      const int error = errno;
      if (fd >= 0) ::unlink(path.c_str());
      detail::unregister_temporary(slot);
      if (fd >= 0) return fd;
      lowbit::detail::require(error == EEXIST, "a scratch file in ", dir, ": cannot create ", path,
                              " (", std::strerror(error), ")");
    }
  }

  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace lowbit::io
