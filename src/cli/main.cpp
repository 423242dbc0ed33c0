// metaformer: run, classify, inspect and benchmark MetaFormer models.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <new>
#include <string>

#include "cli/common.h"
#include "core/error.h"
#include "train/distributed.h"

int main(int argc, char** argv) {
  CLI::App app{"metaformer: run, train, classify, inspect and benchmark MetaFormer models (timm-compatible)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "metaformer 0.1.0");
  mf::cli::register_run(app);
  mf::cli::register_classify(app);
  mf::cli::register_info(app);
  mf::cli::register_bench(app);
  mf::cli::register_verify(app);
  mf::cli::register_train(app);
  mf::cli::register_eval(app);
  mf::cli::register_compare(app);
  mf::cli::register_init(app);
  // CLI11 would answer an unknown command with "A subcommand is required", without naming it.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      known |= sub->check_name(argv[1]);
    }
    if (!known) {
      fmt::print(stderr, "metaformer: error: unknown command '{}' (commands: {})\n", argv[1], names);
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "parse errors" that succeed; CLI11 prints those as it likes.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    // A real argument error is one line and exit status 1, as for every other bad input (README),
    // instead of CLI11's own exit codes (105, 106, 109, ...) and its second "Run with --help" line.
    std::string message = e.what();
    for (char& c : message)
      if (c == '\n' || c == '\r') c = ' ';
    fmt::print(stderr, "metaformer: error: {} (see --help)\n", message);
    return 1;
  } catch (const std::bad_alloc&) {
    return mf::exit_after_error(std::runtime_error("out of memory"));
  } catch (const std::exception& e) {
    // mf::Error and the rest: one line (under mpirun, once for the job, which it ends; train/distributed.h).
    return mf::exit_after_error(e);
  }
  return 0;
}
