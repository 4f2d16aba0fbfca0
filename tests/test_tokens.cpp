// Token-id files (.npy int32/int64, text) and .npy float32 output: byte layouts written by hand,
// numpy itself when available, and every malformed input refused with file + field.
#include <ropex/io/npy.hpp>
#include <ropex/io/tokens.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace ropex::io;

namespace {

using ropex::test::error_of;
using ropex::test::TempDir;



// An .npy v1.0 file by hand: magic, version, u16 header length, dict padded to 64, raw data.
void write_npy_by_hand(const fs::path& p, const std::string& dict, const void* data, size_t bytes,
                       char major = 1) {
  std::string h = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::ofstream out(p, std::ios::binary);
  out.write("\x93NUMPY", 6);
  out.put(major);
  out.put(0);
  if (major == 1) {
    const uint16_t n = uint16_t(h.size());
    out.write(reinterpret_cast<const char*>(&n), 2);
  } else {
    const uint32_t n = uint32_t(h.size());
    out.write(reinterpret_cast<const char*>(&n), 4);
  }
  out << h;
  out.write(static_cast<const char*>(data), std::streamsize(bytes));
}

bool have_numpy() { return std::system("python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

}  // namespace

TEST_CASE("read_tokens: .npy int32 and int64, format 1.0 and 2.0") {
  TempDir dir("tok_npy");
  const std::vector<int32_t> i32 = {1, 0, 511, 2147483647, 42};
  const std::vector<int64_t> i64 = {1, 31999, 7};
  write_npy_by_hand(dir / "a.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", i32.data(), 20);
  CHECK(read_tokens(dir / "a.npy") == i32);
  write_npy_by_hand(dir / "b.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", i64.data(), 24, 2);
  CHECK(read_tokens(dir / "b.npy") == std::vector<int32_t>{1, 31999, 7});
  // Key order and spacing are not fixed by the format.
  write_npy_by_hand(dir / "c.npy", "{\"shape\":(3,),\"fortran_order\":False,\"descr\":\"<i8\"}", i64.data(), 24);
  CHECK(read_tokens(dir / "c.npy") == std::vector<int32_t>{1, 31999, 7});

  if (!have_numpy()) {
    MESSAGE("skipping numpy.save cross-check: python3 with numpy not found");
    return;
  }
  const auto p32 = dir / "np32.npy", p64 = dir / "np64.npy";
  const std::string cmd = "python3 -c \"import numpy as np; np.save('" + p32.string() +
                          "', np.array([5, 4, 3, 300], dtype=np.int32)); np.save('" + p64.string() +
                          "', np.arange(1000, dtype=np.int64) * 3)\"";
  REQUIRE(std::system(cmd.c_str()) == 0);
  CHECK(read_tokens(p32) == std::vector<int32_t>{5, 4, 3, 300});
  const auto t = read_tokens(p64);
  REQUIRE(t.size() == 1000);
  CHECK(t[0] == 0);
  CHECK(t[999] == 2997);
}

TEST_CASE("read_tokens: text of whitespace / comma separated ids") {
  TempDir dir("tok_txt");
  std::ofstream(dir / "t.txt") << "1 2  3\n4,5 , 6\r\n\t7,\n";
  CHECK(read_tokens(dir / "t.txt") == std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7});
  std::ofstream(dir / "one.txt") << "2147483647";
  CHECK(read_tokens(dir / "one.txt") == std::vector<int32_t>{2147483647});
  const std::string mem = "9,8";
  CHECK(parse_tokens(std::as_bytes(std::span(mem)), "mem") == std::vector<int32_t>{9, 8});
}

TEST_CASE("read_tokens refuses malformed files with file + field") {
  TempDir dir("tok_bad");
  const auto p = dir / "bad.npy";
  const std::string f = p.string();
  auto msg = [&] { return error_of([&] { read_tokens(p); }); };
  const std::vector<int64_t> v = {1, 2, 3, 4};

  SUBCASE("float dtype") {
    const float x[2] = {1, 2};
    write_npy_by_hand(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", x, 8);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "descr");
    CHECK_HAS(m, "'<f4' is not supported");
  }
  SUBCASE("big-endian") {
    write_npy_by_hand(p, "{'descr': '>i8', 'fortran_order': False, 'shape': (4,), }", v.data(), 32);
    CHECK_HAS(msg(), "'>i8' is not supported");
  }
  SUBCASE("2-D") {
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", v.data(), 32);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "shape: expected a 1-D array");
  }
  SUBCASE("Fortran order") {
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': True, 'shape': (4,), }", v.data(), 32);
    CHECK_HAS(msg(), "fortran_order");
  }
  SUBCASE("truncated data") {
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", v.data(), 32);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "npy data");
    CHECK_HAS(m, "truncated");
  }
  SUBCASE("a shape whose byte count overflows size_t (found by fuzz_tokens)") {
    write_npy_by_hand(p, "{'descr': '<i4', 'fortran_order': False, 'shape': (5755555505550555555,), }", v.data(), 32);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "shape");
  }
  SUBCASE("header length past EOF") {
    std::ofstream out(p, std::ios::binary);
    out.write("\x93NUMPY\x01\x00\xff\x7f{}", 12);
    out.close();
    CHECK_HAS(msg(), "runs past the end");
  }
  SUBCASE("garbage header") {
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': Maybe, 'shape': (4,), }", v.data(), 32);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "npy header: expected True or False");
  }
  SUBCASE("missing key") {
    write_npy_by_hand(p, "{'descr': '<i8', 'shape': (4,), }", v.data(), 32);
    CHECK_HAS(msg(), "needs descr, fortran_order and shape");
  }
  SUBCASE("negative id") {
    const int32_t x[2] = {5, -1};
    write_npy_by_hand(p, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", x, 8);
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "token 1: id -1 is out of range");
  }
  SUBCASE("int64 id beyond int32") {
    const int64_t x[1] = {int64_t(1) << 33};
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", x, 8);
    CHECK_HAS(msg(), "token 0: id 8589934592 is out of range");
  }
  SUBCASE("empty array") {
    write_npy_by_hand(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (0,), }", nullptr, 0);
    CHECK_HAS(msg(), "no token ids");
  }
  SUBCASE("text: a word") {
    std::ofstream(p) << "1 2\n3 x 4\n";
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "line 2: unexpected 'x'");
  }
  SUBCASE("text: a decimal") {
    std::ofstream(p) << "1 2.5";
    CHECK_HAS(msg(), "line 1: unexpected character after token id 2");
  }
  SUBCASE("text: negative") {
    std::ofstream(p) << "-3";
    CHECK_HAS(msg(), "unexpected '-'");
  }
  SUBCASE("text: too large") {
    std::ofstream(p) << "99999999999";
    CHECK_HAS(msg(), "out of range");
  }
  SUBCASE("text: binary byte") {
    std::ofstream(p) << "1 \x01";
    CHECK_HAS(msg(), "\\x01");
  }
  SUBCASE("empty file") {
    std::ofstream(p).close();
    auto m = msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "no token ids");
  }
  SUBCASE("a FIFO is refused, not waited on") {
    REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
    CHECK_HAS(error_of([&] { read_tokens(dir / "fifo"); }), "fifo: not a regular file");
  }
  SUBCASE("missing file") {
    auto m = error_of([&] { read_tokens(dir / "absent.txt"); });
    CHECK_HAS(m, "absent.txt: cannot open");
  }
}

TEST_CASE("write_npy_f32 writes what read_npy_f32 and numpy read back") {
  TempDir dir("npy_out");
  std::vector<float> x(3 * 5);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * float(i) - 3.25f;
  const auto p = dir / "logits.npy";
  write_npy_f32(p, x.data(), {3, 5});

  // Byte layout: magic, version 1.0, header padded so data starts at a multiple of 64.
  std::ifstream in(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  REQUIRE(bytes.size() > 10);
  CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  uint16_t hlen;
  std::memcpy(&hlen, bytes.data() + 8, 2);
  CHECK((10 + hlen) % 64 == 0);
  CHECK(bytes.size() == 10 + hlen + x.size() * 4);
  CHECK(bytes.substr(10, hlen).find("'shape': (3, 5)") != std::string::npos);
  CHECK(bytes[10 + hlen - 1] == '\n');

  const auto back = read_npy_f32(p);
  CHECK(back.shape == std::vector<size_t>{3, 5});
  CHECK(back.data == x);

  write_npy_f32(dir / "v.npy", x.data(), {15});
  CHECK(read_npy_f32(dir / "v.npy").shape == std::vector<size_t>{15});
  write_npy_f32(dir / "e.npy", nullptr, {0, 7});
  CHECK(read_npy_f32(dir / "e.npy").data.empty());

  // Refusals.
  CHECK_HAS(error_of([&] { write_npy_f32(dir / "no/such/dir.npy", x.data(), {15}); }), "cannot open for writing");
  const std::vector<int64_t> ids = {1, 2};
  write_npy_by_hand(dir / "i.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", ids.data(), 16);
  CHECK_HAS(error_of([&] { read_npy_f32(dir / "i.npy"); }), "dtype '<i8' is not supported");

  if (!have_numpy()) {
    MESSAGE("skipping numpy.load check: python3 with numpy not found");
    return;
  }
  const std::string cmd =
      "python3 -c \"import numpy as np, sys; a = np.load('" + p.string() +
      "'); e = (np.arange(15, dtype=np.float32) * 0.5 - 3.25).reshape(3, 5); "
      "sys.exit(0 if a.dtype == np.float32 and a.shape == (3, 5) and np.array_equal(a, e) else 1)\"";
  CHECK(std::system(cmd.c_str()) == 0);
  const std::string cmd2 = "python3 -c \"import numpy as np, sys; a = np.load('" + (dir / "e.npy").string() +
                           "'); sys.exit(0 if a.shape == (0, 7) else 1)\"";
  CHECK(std::system(cmd2.c_str()) == 0);
  // numpy's own float64 file reads back through read_npy_f32 (rounded to float).
  const auto p64 = dir / "f64.npy";
  REQUIRE(std::system(("python3 -c \"import numpy as np; np.save('" + p64.string() +
                       "', np.array([[0.1, 2.0], [1e-3, -4.5]]))\"").c_str()) == 0);
  const auto f64 = read_npy_f32(p64);
  CHECK(f64.shape == std::vector<size_t>{2, 2});
  CHECK(f64.data == std::vector<float>{0.1f, 2.0f, 1e-3f, -4.5f});
}
