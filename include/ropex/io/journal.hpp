// A resumable run's partial results: a JSON-lines file whose first line is the run's plan (every
// input that changes a result) and each further line one finished unit of work {"key", "value"}.
// Reopened with the same plan, the finished units are read back and not redone; a line cut short by
// an interruption is dropped (that unit runs again). Another plan is refused, naming the file.
#pragma once
#include <ropex/error.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>

namespace ropex::io {

class Journal {
 public:
  Journal(const std::filesystem::path& path, const nlohmann::json& plan) : path_(path) {
    if (std::filesystem::exists(path)) load(plan);
    if (units_.empty() && !plan_ok_) {
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      if (!f) throw make_error(path.string(), "", "cannot open for writing");
      f << nlohmann::json{{"plan", plan}}.dump() << "\n";
      if (!f) throw make_error(path.string(), "", "write failed");
    }
    resumed_ = units_.size();
  }

  const nlohmann::json* find(const std::string& key) const {
    const auto it = units_.find(key);
    return it == units_.end() ? nullptr : &it->second;
  }

  /// Appends one finished unit and syncs it to disk before returning.
  void add(const std::string& key, const nlohmann::json& value) {
    const std::string line = nlohmann::json{{"key", key}, {"value", value}}.dump() + "\n";
    std::FILE* f = std::fopen(path_.c_str(), "ab");
    if (!f) throw make_error(path_.string(), "", "cannot open for appending");
    const bool ok = std::fwrite(line.data(), 1, line.size(), f) == line.size() && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    std::fclose(f);
    if (!ok) throw make_error(path_.string(), "", "write failed");
    units_[key] = value;
  }

  size_t resumed() const { return resumed_; }  ///< units read back at open
  const std::filesystem::path& path() const { return path_; }

 private:
  void load(const nlohmann::json& plan) {
    std::ifstream f(path_, std::ios::binary);
    std::string line;
    size_t good_bytes = 0, lineno = 0;
    while (std::getline(f, line)) {
      ++lineno;
      if (f.eof()) break;  // no newline: a line cut short, dropped below
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error&) {
        throw make_error(path_.string(), "line " + std::to_string(lineno), "is not JSON: remove the file to start over");
      }
      if (lineno == 1) {
        if (!j.contains("plan") || j["plan"] != plan)
          throw make_error(path_.string(), "plan",
                           "was written for other inputs (model, text, lengths, settings or grid): remove it or choose "
                           "another --report directory");
        plan_ok_ = true;
      } else {
        if (!j.contains("key") || !j.contains("value")) throw make_error(path_.string(), "line " + std::to_string(lineno), "has no key/value");
        units_[j["key"].get<std::string>()] = j["value"];
      }
      good_bytes += line.size() + 1;
    }
    f.close();
    if (plan_ok_) std::filesystem::resize_file(path_, good_bytes);  // drop a torn last line
  }

  std::filesystem::path path_;
  std::map<std::string, nlohmann::json> units_;
  size_t resumed_ = 0;
  bool plan_ok_ = false;
};

}  // namespace ropex::io
