// `abridge watch`: argv -> WatchOptions -> pipeline::run_watch.
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "pipeline/commands.h"
#include "pipeline/watch.h"

namespace abridge::cli {

int cmd_watch(const std::vector<std::string>& args) {
  pipeline::WatchOptions o;
  std::string config;
  bool no_inotify = false;
  po::options_description desc(
      "Keeps running and summarizes each new or changed document (.txt, .md, .pdf) under the DIRs (always\n"
      "recursive; hidden folders skipped; --include/--exclude as for summarize) into OUT_DIR, with the engine\n"
      "loaded once. A file is taken when its size and mtime have not changed for --settle seconds, or at once\n"
      "when it is renamed into place (write elsewhere, then mv: the way to publish a finished file). Change\n"
      "events (inotify) make it quick; a full rescan at start and every --rescan seconds finds what events\n"
      "miss. The up-to-date check under OUT_DIR/.abridge/ makes each version of a file be summarized once,\n"
      "across restarts too. OUT_DIR may lie inside a DIR: its files are never inputs. A deleted input's\n"
      "summary is kept. SIGINT/SIGTERM/SIGHUP: the batch in progress is finished, then exit 0. Log lines on standard\n"
      "error start with an ISO 8601 UTC timestamp. --once: one pass without settling, exit codes as for\n"
      "summarize. Exit codes: 0 stopped by a signal (or --once succeeded), 1 --once and some inputs failed,\n"
      "2 usage or fatal error, 3 another run holds OUT_DIR.\n\nOptions");
  po::options_description hidden;
  add_summarize_options(desc, o.summarize, config, &hidden);
  desc.add_options()
      ("settle", po::value(&o.settle)->default_value(2, "2"), "seconds a file's size and mtime must stay unchanged before it is taken (0..86400)")
      ("rescan", po::value(&o.rescan)->default_value(60, "60"), "seconds between full rescans of the DIRs (0.1..86400)")
      ("once", po::bool_switch(&o.once), "scan once, summarize what is there, exit (for cron and tests; default: keep running)")
      ("no-inotify", po::bool_switch(&no_inotify), "no change events: the rescan alone finds changes (NFS and other network file systems; default: change events and the rescan)")
      ("dir", po::value(&o.summarize.inputs)->composing(), "directories to watch (positional)");
  // Watching is always recursive: --recursive (a summarize option) is accepted, so that one command
  // line or --config file serves both commands, but not listed.
  hidden.add_options()("recursive,r", po::bool_switch(&o.summarize.recursive), "implied");
  po::positional_options_description pos;
  pos.add("dir", -1);
  po::variables_map vm;
  // Option errors are log lines too: stamped like every other line of watch.
  try {
    if (!parse("watch", "DIR... -o OUT_DIR [summarize options] [--settle S] [--rescan S] [--once] [--no-inotify]", desc,
               pos, args, vm, &hidden))
      return pipeline::kExitOk;
    po::options_description file_options;
    file_options.add(desc).add(hidden);
    apply_config_file(config, file_options, vm);
    check_early_options(o.summarize);
  } catch (const Usage& e) {
    pipeline::write_watch_line(std::cerr, e.what());
    return pipeline::kExitFatal;
  }
  o.inotify = !no_inotify;
  return pipeline::run_watch(o, std::cerr);
}

}  // namespace abridge::cli
