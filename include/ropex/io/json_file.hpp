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

/// Parses `text` (the contents of `source`) under the rules above; throws ropex::Error
/// "<source>: <what>" for malformed, too deep, NUL-carrying or duplicate-key input.
inline nlohmann::json parse_json_strict(std::string_view text, std::string_view source) {
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    throw make_error(source, "", "NUL byte at offset " + std::to_string(nul) + " (not JSON text)");
  struct Level {
    bool object;
    std::set<std::string> keys;
  };
  std::vector<Level> stack;
  std::string problem;
  using Event = nlohmann::json::parse_event_t;
  const nlohmann::json::parser_callback_t check = [&](int depth, Event event, nlohmann::json& parsed) {
    if (!problem.empty()) return false;
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        if (depth >= kMaxJsonDepth) {
          problem = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
          throw std::runtime_error(problem);  // stop at once: the parser would recurse on
        }
        stack.push_back({event == Event::object_start, {}});
        break;
      case Event::object_end:
      case Event::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case Event::key:
        if (!stack.empty() && stack.back().object && !stack.back().keys.insert(parsed.get<std::string>()).second) {
          problem = "key \"" + parsed.get<std::string>() + "\" appears twice in one object";
          throw std::runtime_error(problem);
        }
        break;
      case Event::value:
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::exception& e) {
    throw make_error(source, "", std::string("malformed JSON: ") + e.what());
  } catch (const std::runtime_error&) {  // thrown by `check` above
    throw make_error(source, "", problem);
  }
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
