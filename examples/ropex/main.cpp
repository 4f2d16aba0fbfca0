// ropex: RoPE scaling laws on the command line. Subcommands register themselves (cli.hpp).
#include "cli.hpp"
#include "decimal_flags.hpp"

#include <ropex/config.hpp>
#include <ropex/error.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  CLI::App app{"ropex: predict, tune and check RoPE long-context extrapolation "
               "(Liu et al., Scaling Laws of RoPE-based Extrapolation, arXiv 2310.05209)",
               "ropex"};
  app.require_subcommand(1);
  app.set_version_flag("--version", ROPEX_VERSION_STRING);
  auto& regs = ropex::cli::registry();
  std::stable_sort(regs.begin(), regs.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, reg] : regs) reg(app);
  ropex::cli::restrict_to_decimal(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // one line, like every other bad input (CLI11 would add a "Run with --help" line)
    std::fprintf(stderr, "ropex: error: %s (see ropex --help)\n", e.what());
    return 2;
  } catch (const ropex::cli::UsageError& e) {
    std::fprintf(stderr, "ropex: error: %s\n", e.what());
    return 2;
  } catch (const ropex::Error& e) {
    std::fprintf(stderr, "ropex: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ropex: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
