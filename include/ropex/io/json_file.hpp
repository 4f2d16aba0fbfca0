// Reading JSON that a user hands ropex (config.json, safetensors headers, index files) strictly,
// with errors that name the file:
//   - regular files only, opened non-blocking (a FIFO or a device is refused, never waited on);
//   - at most kMaxJsonDepth levels of nesting (serde_json's default limit is 128 too): deeper
//     input would make recursive code (nlohmann's own copies, our walks) overflow the stack;
//   - no NUL byte anywhere (nlohmann would stop reading there and ignore the rest);
//   - no key twice in one object (nlohmann keeps the last; the file is ambiguous).
#pragma once
#include <ropex/error.hpp>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ropex {

inline constexpr int kMaxJsonDepth = 128;

namespace detail {

// nlohmann's DOM builder plus the checks, as a SAX handler. (Not the parser-callback interface:
// after every nested value it rescans the parent for discarded entries, so a 100k-entry
// safetensors header took minutes.) Each method shadows the base's; sax_parse calls them by type.
class StrictJsonSax : public nlohmann::detail::json_sax_dom_parser<nlohmann::json> {
  using Base = nlohmann::detail::json_sax_dom_parser<nlohmann::json>;

 public:
  explicit StrictJsonSax(nlohmann::json& out) : Base(out, /*allow_exceptions=*/false) {}
  std::string problem;

  bool start_object(std::size_t n) { return open(true) && Base::start_object(n); }
  bool start_array(std::size_t n) { return open(false) && Base::start_array(n); }
  bool end_object() { return close() && Base::end_object(); }
  bool end_array() { return close() && Base::end_array(); }
  bool key(std::string& k) {
    if (!keys_.empty() && !keys_.back().insert(k).second) {
      problem = "key \"" + k + "\" appears twice in one object";
      return false;
    }
    return Base::key(k);
  }
  bool parse_error(std::size_t pos, const std::string& token, const nlohmann::detail::exception& e) {
    problem = std::string("malformed JSON: ") + e.what();
    return Base::parse_error(pos, token, e);
  }

 private:
  std::vector<std::set<std::string>> keys_;  // one per open object or array (arrays' stay empty)
  bool open(bool) {
    if (keys_.size() >= size_t(kMaxJsonDepth)) {
      problem = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;  // stop at once: nothing deeper is built
    }
    keys_.emplace_back();
    return true;
  }
  bool close() {
    keys_.pop_back();
    return true;
  }
};

}  // namespace detail

/// Parses `text` (the contents of `source`) under the rules above; throws ropex::Error
/// "<source>: <what>" for malformed, too deep, NUL-carrying or duplicate-key input.
inline nlohmann::json parse_json_strict(std::string_view text, std::string_view source) {
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    throw make_error(source, "", "NUL byte at offset " + std::to_string(nul) + " (not JSON text)");
  nlohmann::json out;
  detail::StrictJsonSax sax(out);
  if (!nlohmann::json::sax_parse(text.begin(), text.end(), &sax) || sax.is_errored())
    throw make_error(source, "", sax.problem.empty() ? "malformed JSON" : sax.problem);
  return out;
}

/// The bytes of a regular file, read whole; refuses FIFOs, devices and directories without
/// blocking on them. Errors name the file.
inline std::string read_regular_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw make_error(name, "", std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw make_error(name, "", S_ISDIR(st.st_mode) ? "is a directory, expected a file" : "not a regular file");
  }
  std::string out;
  out.resize(size_t(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      throw make_error(name, "", r < 0 ? std::string("read failed: ") + std::strerror(e) : "file shrank while read");
    }
    got += size_t(r);
  }
  ::close(fd);
  return out;
}

/// Parses the JSON file at `path` strictly (see the top of this header).
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json_strict(read_regular_file(path), path.string());
}

/// Parses JSON given on the command line (e.g. --rope-scaling '{"rope_type":"yarn"}').
inline nlohmann::json parse_json_arg(const std::string& text, const std::string& flag) {
  return parse_json_strict(text, flag);
}

}  // namespace ropex
