// io/output_file.hpp: an output replaces its target only whole (temp file + fsync + rename), is
// never one of the inputs (same inode, symlinks followed), and every failed write is an IoError.
#include <doctest/doctest.h>

#include <ropex/io/npy.hpp>
#include <ropex/io/output_file.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using ropex::io::OutputFile;

namespace {

fs::path tmp_dir() {
  const fs::path d = fs::temp_directory_path() / ("ropex_output_file_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ino_t inode(const fs::path& p) {
  struct stat st{};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_ino;
}

// Files in `dir` other than the ones named: a leftover temporary file shows up here.
int stray_files(const fs::path& dir, std::initializer_list<std::string> known) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    bool k = false;
    for (const auto& name : known) k |= e.path().filename() == name;
    n += !k;
  }
  return n;
}

}  // namespace

TEST_CASE("commit replaces the target by rename; without commit the old file stays and no temp file remains") {
  const fs::path dir = tmp_dir() / "commit";
  fs::create_directories(dir);
  const fs::path target = dir / "out.csv";
  std::ofstream(target) << "old\n";
  const ino_t before = inode(target);
  {
    OutputFile f(target, "--out");
    f.write("new, half written");
    CHECK(slurp(target) == "old\n");  // nothing visible until commit
  }  // destroyed without commit (an exception on the way)
  CHECK(slurp(target) == "old\n");
  CHECK(stray_files(dir, {"out.csv"}) == 0);
  {
    OutputFile f(target, "--out");
    f.write("new\n");
    f.commit();
  }
  CHECK(slurp(target) == "new\n");
  CHECK(inode(target) != before);  // a new file, renamed over: a reader that mapped the old one keeps it
  CHECK(stray_files(dir, {"out.csv"}) == 0);
  struct stat st{};
  REQUIRE(::stat(target.c_str(), &st) == 0);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));  // as a plain open(O_CREAT) would make it, not mkstemp's 0600
  fs::remove_all(dir);
}

TEST_CASE("an output that is an input is refused before anything is written, via a symlink or a hard link too") {
  const fs::path dir = tmp_dir() / "refuse";
  fs::create_directories(dir);
  const fs::path model = dir / "model.gguf", link = dir / "link.gguf", hard = dir / "hard.gguf";
  std::ofstream(model) << "weights";
  fs::create_symlink(model, link);
  fs::create_hard_link(model, hard);
  for (const auto& out : {model, link, hard}) {
    INFO(out.string());
    bool refused = false;
    try {
      OutputFile f(out, "--out", {model});
    } catch (const ropex::Error& e) {
      refused = true;
      CHECK(std::string(e.what()).find("--out") != std::string::npos);
      CHECK(std::string(e.what()).find(model.string()) != std::string::npos);
    }
    CHECK(refused);
  }
  CHECK(slurp(model) == "weights");
  // An input given through a symlink is the same file as the target named directly.
  CHECK_THROWS_AS(ropex::io::refuse_if_input(model, "--out", {link}), ropex::Error);
  fs::remove_all(dir);
}

TEST_CASE("a symlinked output replaces the file it points to and keeps the link") {
  const fs::path dir = tmp_dir() / "symlink";
  fs::create_directories(dir);
  const fs::path real = dir / "real.csv", link = dir / "link.csv";
  std::ofstream(real) << "old";
  fs::create_symlink(real, link);
  ropex::io::write_file_atomic(link, "--out", "new");
  CHECK(fs::is_symlink(link));
  CHECK(slurp(real) == "new");
  fs::remove_all(dir);
}

TEST_CASE("devices are written in place; a full device is an IoError naming it") {
  ropex::io::write_file_atomic("/dev/null", "--out", "discarded");  // not replaced by a regular file
  CHECK(fs::is_character_file("/dev/null"));
  if (!fs::exists("/dev/full")) return;
  bool failed = false;
  try {
    ropex::io::write_file_atomic("/dev/full", "--out", "x");
  } catch (const ropex::io::IoError& e) {
    failed = true;
    CHECK(std::string(e.what()).find("/dev/full") != std::string::npos);
  }
  CHECK(failed);
  CHECK(fs::is_character_file("/dev/full"));
}

TEST_CASE("a directory or a missing parent directory is refused with the path") {
  const fs::path dir = tmp_dir();
  CHECK_THROWS_AS(OutputFile(dir, "--out"), ropex::Error);
  CHECK_THROWS_WITH_AS(OutputFile(dir / "no" / "such" / "o.npy", "--out"),
                       doctest::Contains((dir / "no" / "such" / "o.npy").string().c_str()), ropex::io::IoError);
}

TEST_CASE("killed while writing (SIGTERM / SIGINT): the old file stays and the temporary file is removed") {
  for (int sig : {SIGTERM, SIGINT}) {
    const fs::path dir = tmp_dir() / ("killed" + std::to_string(sig));
    fs::create_directories(dir);
    const fs::path target = dir / "curve.csv";
    std::ofstream(target) << "complete old file\n";
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      OutputFile f(target, "--out");
      f.write("partial new");
      ::raise(sig);  // interrupted before commit
      ::_exit(0);    // not reached
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == sig);
    CHECK(slurp(target) == "complete old file\n");
    CHECK(stray_files(dir, {"curve.csv"}) == 0);
    fs::remove_all(dir);
  }
}

TEST_CASE("write_npy_f32 goes through OutputFile: refuses an input, replaces atomically") {
  const fs::path dir = tmp_dir() / "npy";
  fs::create_directories(dir);
  const fs::path tokens = dir / "tokens.npy";
  std::ofstream(tokens) << "ids";
  const float x[2] = {1, 2};
  CHECK_THROWS_AS(ropex::io::write_npy_f32(tokens, x, {2}, "--out", {tokens}), ropex::Error);
  CHECK(slurp(tokens) == "ids");
  ropex::io::write_npy_f32(dir / "o.npy", x, {2}, "--out", {tokens});
  const auto back = ropex::io::read_npy_f32(dir / "o.npy");
  CHECK(back.data == std::vector<float>{1, 2});
  fs::remove_all(tmp_dir());
}
