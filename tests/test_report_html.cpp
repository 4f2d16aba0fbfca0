// ropex check's figures and HTML report (report/svg.hpp, report/check_report.hpp): the SVG markup
// carries every line and label, and report.html renders in headless Chromium to a page that is not
// blank where the figures are (screenshot pixels) with the lines and labels in its DOM.
#include <doctest/doctest.h>

#include <ropex/report/check_report.hpp>
#include <ropex/report/svg.hpp>

#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

// A report.json as `ropex check` writes it: two settings, a rise at 1024 in the first.
ojson sample_report() {
  ojson r;
  auto in = [](const ojson& v) { return ojson{{"value", v}, {"origin", "test"}}; };
  r["inputs"] = {{"model", in("m.gguf")}, {"head_dim", in(64)}, {"static_pairs", in(0)}, {"base", in(10000.0)},
                 {"tune_len", in(512)}, {"train_len", in(512)}, {"pretrain_base", in(10000.0)}, {"short_window", in(512)},
                 {"max_len", in(4096)}};
  r["rule"] = {{"text", "docs/validation.md section 6"}, {"comparison", "long minus short"}, {"bin_width", 128},
               {"first_bin_begin", 256}, {"margin", 0.5}};
  for (int s = 0; s < 2; ++s) {
    ojson curve = ojson::array();
    for (double lo = 1; lo < 4095; lo *= 1.19) {
      const double rise = s == 0 && lo > 1024 ? 2.0 : 0.0;
      curve.push_back({{"begin", int64_t(lo)}, {"end", int64_t(lo * 1.19) + 1}, {"mean_long", 4.0 - std::log(lo) * 0.2 + rise},
                       {"mean_short", 4.0 - std::log(std::min(lo, 512.0)) * 0.2}});
    }
    ojson cells = ojson::array();
    for (int64_t L : {256, 512, 1024})
      for (double d : {0.0, 0.5, 1.0}) cells.push_back({{"length", L}, {"depth", d}, {"trials", 2}, {"correct", L <= 512 ? 2 : 0},
                                                       {"accuracy", L <= 512 ? 1.0 : 0.0}, {"answer_nll", 0.1}, {"mean_tokens", double(L)}});
    ojson lim = s == 0 ? ojson(1024) : ojson(nullptr);
    r["settings"].push_back(
        {{"label", s == 0 ? "as released" : "base 1M"},
         {"rope_base", s == 0 ? 10000.0 : 1e6},
         {"rope_type", "default"},
         {"factor", 1.0},
         {"predictions_apply", true},
         {"predictions", {{{"theory", "liu_scaling_law"}, {"source", "x"}, {"context", 628.3}, {"context_limit", true}, {"note", ""}},
                          {{"theory", "men_discrimination_bound"}, {"source", "x"}, {"context", 1900}, {"context_limit", true}, {"note", ""}}}},
         {"rise", {{"margin_0.50", {{"measured_limit", lim}, {"censored", s != 0}}},
                   {"margin_0.25", {{"measured_limit", lim}, {"censored", s != 0}}},
                   {"margin_1.00", {{"measured_limit", lim}, {"censored", s != 0}}}}},
         {"curve", curve},
         {"passkey", {{"lengths", {256, 512, 1024}}, {"cells", cells}, {"passkey_limit", 512}}}});
  }
  r["time"] = {{"total_seconds", 10.0}, {"model_seconds", 9.5}, {"model_fraction", 0.95}, {"units_computed", 3}, {"units_resumed", 0}};
  return r;
}

struct Image {
  int w = 0, h = 0, channels = 0;
  std::vector<unsigned char> px;
  bool white(int x, int y) const {
    const unsigned char* p = &px[size_t((y * w + x) * channels)];
    return p[0] > 245 && p[1] > 245 && p[2] > 245;
  }
};

uint32_t be32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// 8-bit RGB/RGBA non-interlaced PNG (what Chromium's --screenshot writes), decoded with zlib.
Image read_png(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::string b((std::istreambuf_iterator<char>(f)), {});
  const auto* d = reinterpret_cast<const unsigned char*>(b.data());
  Image im;
  std::string idat;
  int depth = 0, type = 0;
  for (size_t p = 8; p + 8 <= b.size();) {
    const uint32_t len = be32(d + p);
    const std::string tag = b.substr(p + 4, 4);
    if (tag == "IHDR") im.w = int(be32(d + p + 8)), im.h = int(be32(d + p + 12)), depth = d[p + 16], type = d[p + 17];
    if (tag == "IDAT") idat += b.substr(p + 8, len);
    p += 12 + len;
  }
  REQUIRE(depth == 8);
  REQUIRE((type == 2 || type == 6));
  im.channels = type == 6 ? 4 : 3;
  const size_t stride = size_t(im.w * im.channels);
  std::vector<unsigned char> raw((stride + 1) * size_t(im.h));
  uLongf n = uLongf(raw.size());
  REQUIRE(uncompress(raw.data(), &n, reinterpret_cast<const Bytef*>(idat.data()), uLong(idat.size())) == Z_OK);
  im.px.resize(stride * size_t(im.h));
  for (int y = 0; y < im.h; ++y) {  // PNG filters (spec section 9)
    const unsigned char filter = raw[size_t(y) * (stride + 1)];
    const unsigned char* src = &raw[size_t(y) * (stride + 1) + 1];
    unsigned char* row = &im.px[size_t(y) * stride];
    const unsigned char* up = y ? &im.px[size_t(y - 1) * stride] : nullptr;
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= size_t(im.channels) ? row[i - size_t(im.channels)] : 0, u = up ? up[i] : 0;
      const int c = up && i >= size_t(im.channels) ? up[i - size_t(im.channels)] : 0;
      int pred = 0;
      if (filter == 1) pred = a;
      else if (filter == 2) pred = u;
      else if (filter == 3) pred = (a + u) / 2;
      else if (filter == 4) {
        const int p = a + u - c, pa = std::abs(p - a), pb = std::abs(p - u), pc = std::abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? u : c;
      }
      row[i] = static_cast<unsigned char>(src[i] + pred);
    }
  }
  return im;
}

std::string chromium() {
  for (const char* c : {"chromium", "chromium-browser"})
    if (std::system((std::string("command -v ") + c + " >/dev/null 2>&1").c_str()) == 0) return c;
  return "";
}

}  // namespace

TEST_CASE("svg: loss figure has each theory's vertical line with its label, the measured limit, both curves") {
  const auto r = sample_report();
  const std::string svg = ropex::report::loss_figure(r["settings"][0], r);
  CHECK(count(svg, "class=\"curve\"") == 2);
  CHECK(count(svg, "class=\"vline\"") == 4);  // S, Liu, Men, measured
  CHECK(svg.find(">liu_scaling_law 628.3</text>") != std::string::npos);
  CHECK(svg.find(">men_discrimination_bound 1900</text>") != std::string::npos);
  CHECK(svg.find(">measured 1K</text>") != std::string::npos);
  // log x: 628 lies right of 512 and left of 1024 by the log ratio
  const std::regex xr("data-label=\"([^\"]+)\" x1=\"([0-9.]+)\"");
  std::map<std::string, double> x;
  for (std::sregex_iterator it(svg.begin(), svg.end(), xr), end; it != end; ++it) x[(*it)[1]] = std::stod((*it)[2]);
  const double x512 = x.at("S = 512"), x1k = x.at("measured 1K"), x628 = x.at("liu_scaling_law 628.3");
  CHECK((x628 - x512) / (x1k - x512) == doctest::Approx(std::log2(628.3 / 512)).epsilon(0.02));
  // the second setting never rose: no measured line
  CHECK(ropex::report::loss_figure(r["settings"][1], r).find("measured") == std::string::npos);
  // a line outside the axis is not drawn
  ropex::report::Plot p("t", {1, 100, true, "x"}, {0, 1, false, "y"});
  CHECK_FALSE(p.vline(1000, "far", "#000"));
  CHECK(p.vline(50, "near", "#000"));
}

TEST_CASE("svg: passkey heatmap has one cell per (depth, length), coloured by accuracy") {
  const auto r = sample_report();
  const std::string svg = ropex::report::passkey_figure(r["settings"][0]);
  CHECK(count(svg, "class=\"cell\"") == 9);
  CHECK(svg.find("data-row=\"0.5\" data-col=\"1K\" data-value=\"0\"") != std::string::npos);
  CHECK(svg.find("data-row=\"0\" data-col=\"512\" data-value=\"1\"") != std::string::npos);
  CHECK(svg.find("fill=\"rgb(8,81,156)\"") != std::string::npos);     // accuracy 1
  CHECK(svg.find("fill=\"rgb(255,255,255)\"") != std::string::npos);  // accuracy 0
}

TEST_CASE("report.html renders in headless Chromium: figures not blank, lines and labels in the DOM") {
  const fs::path dir = fs::temp_directory_path() / ("ropex_report_html_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto r = sample_report();
  ropex::report::write_check_report(dir, r);
  for (const char* f : {"report.json", "report.md", "report.html", "limits.svg", "loss_0.svg", "loss_1.svg", "passkey_0.svg", "passkey_1.svg"})
    CHECK_MESSAGE(fs::exists(dir / f), f);
  std::ifstream md(dir / "report.md");
  const std::string mds((std::istreambuf_iterator<char>(md)), {});
  CHECK(mds.find("| liu_scaling_law | 628.3 | fails (measured/predicted 1.63) |") == std::string::npos);  // 1024/628 = 1.63: holds
  CHECK(mds.find("| liu_scaling_law | 628.3 | holds (measured/predicted 1.63) |") != std::string::npos);
  CHECK(mds.find("| men_discrimination_bound | 1900 | holds (measured/predicted 0.539) |") != std::string::npos);

  const std::string browser = chromium();
  if (browser.empty()) {
    MESSAGE("skipped the rendering: chromium is absent (Debian package chromium; scripts/install-deps.sh)");
    fs::remove_all(dir);
    return;
  }
  const std::string url = "file://" + (dir / "report.html").string();
  const std::string flags = " --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=" + (dir / "profile").string();
  const std::string dom_path = (dir / "dom.html").string();
  REQUIRE(std::system((browser + flags + " --dump-dom " + url + " > " + dom_path + " 2>/dev/null").c_str()) == 0);
  std::ifstream dm(dom_path);
  const std::string dom((std::istreambuf_iterator<char>(dm)), {});
  CHECK(count(dom, "<svg") == 5);                // limits, 2 loss, 2 passkey
  CHECK(count(dom, "class=\"vline\"") >= 8);     // theory and measured lines
  CHECK(dom.find("liu_scaling_law 628.3") != std::string::npos);
  CHECK(dom.find("men_discrimination_bound 1900") != std::string::npos);
  CHECK(dom.find("Supported context vs RoPE base") != std::string::npos);
  CHECK(count(dom, "class=\"cell\"") == 18);

  const fs::path png = dir / "shot.png";
  REQUIRE(std::system((browser + flags + " --window-size=1100,2600 --screenshot=" + png.string() + " " + url + " >/dev/null 2>&1").c_str()) == 0);
  REQUIRE(fs::exists(png));
  const Image im = read_png(png);
  REQUIRE(im.w == 1100);
  // Each figure region (the page stacks them below the summary) holds drawn pixels; the whole
  // page is far from blank, and the margin right of the 1100-px body is.
  auto ink = [&](int x0, int y0, int x1, int y1) {
    int64_t n = 0;
    for (int y = y0; y < std::min(y1, im.h); ++y)
      for (int x = x0; x < std::min(x1, im.w); ++x) n += !im.white(x, y);
    return n;
  };
  const int64_t total = ink(0, 0, im.w, im.h);
  CHECK(total > 20000);
  for (int band = 0; band < 4; ++band) {  // 4 bands of 450 px below the title and summary
    const int y0 = 200 + 450 * band;
    CHECK_MESSAGE(ink(0, y0, im.w, y0 + 450) > 2000, "band at y=" << y0 << " is blank");
  }
  fs::remove_all(dir);
}
