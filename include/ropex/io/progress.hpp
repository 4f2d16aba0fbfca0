// Progress of a long operation on stderr: done/total, rate, elapsed and ETA. On a terminal one line
// redrawn in place (at most ~10 times a second); otherwise one plain line per step, so a log file or
// a CI job still shows the run advancing. Disabled (--quiet), it prints nothing.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ropex::io {

/// "1h02m", "3m05s", "12.3s": short human durations for progress lines.
inline std::string format_duration(double s) {
  char buf[32];
  if (!(s >= 0) || s > 1e8) return "?";
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  return buf;
}

class Progress {
 public:
  enum class Mode { off, terminal, lines };

  /// `label` starts every line; `unit` names what is counted ("tokens", "trials").
  Progress(std::string label, int64_t total, std::string unit, bool enabled = true, std::FILE* out = stderr)
      : label_(std::move(label)), unit_(std::move(unit)), total_(total), out_(out),
        mode_(!enabled ? Mode::off : ::isatty(::fileno(out)) ? Mode::terminal : Mode::lines),
        t0_(Clock::now()), last_draw_(t0_) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  void force_mode(Mode m) { mode_ = m; }  // tests: lines on a terminal, or the reverse
  Mode mode() const { return mode_; }
  void set_total(int64_t total) { total_ = total; }

  /// `done` units of `total` are complete; `what` says which step just ended ("window 3").
  void update(int64_t done, const std::string& what = "") {
    done_ = done;
    if (mode_ == Mode::off) return;
    const auto now = Clock::now();
    if (mode_ == Mode::terminal && done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const std::string line = render(what);
    if (mode_ == Mode::terminal) {
      std::fprintf(out_, "\r%s\033[K", line.c_str());
      drawn_ = true;
    } else {
      std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
  }

  /// Ends the redrawn line (terminal); safe to call twice.
  void finish() {
    if (mode_ == Mode::terminal && drawn_) std::fprintf(out_, "\n");
    drawn_ = false;
  }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  /// The line as printed: "label: done/total unit (pct%)  rate unit/s  elapsed E  ETA R  [what]".
  std::string render(const std::string& what = "") const {
    const double s = elapsed();
    const double rate = s > 0 ? double(done_) / s : 0;
    const double eta = rate > 0 ? double(total_ - done_) / rate : -1;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %lld/%lld %s (%.0f%%)  %.4g %s/s  elapsed %s  ETA %s", label_.c_str(),
                  (long long)done_, (long long)total_, unit_.c_str(),
                  total_ > 0 ? 100.0 * double(done_) / double(total_) : 0.0, rate, unit_.c_str(),
                  format_duration(s).c_str(), done_ >= total_ ? "0s" : format_duration(eta).c_str());
    std::string line = buf;
    if (!what.empty()) line += "  [" + what + "]";
    return line;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_, unit_;
  int64_t total_ = 0, done_ = 0;
  std::FILE* out_;
  Mode mode_;
  Clock::time_point t0_, last_draw_;
  bool drawn_ = false;
};

}  // namespace ropex::io
