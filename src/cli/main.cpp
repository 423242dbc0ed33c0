// metaformer: run, classify, inspect and benchmark MetaFormer models.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <new>

#include "cli/common.h"
#include "core/error.h"

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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mf::Error& e) {
    fmt::print(stderr, "metaformer: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "metaformer: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "metaformer: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
