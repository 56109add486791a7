// Running work that may crash or hang (HDF5 parsing a damaged file) in a child process, so that
// a crash or a hang there becomes an error here instead of taking this process down.
//
// The child is this program started afresh (posix_spawn of /proc/self/exe), not a fork() of this
// process: it shares no memory, threads, locks, MPI or CUDA state with it (fork() in an MPI
// process is unsafe with some transports, and copying a large process's page tables costs
// time), whatever the program is (dsmoe, a test, a fuzzer). A static initializer of the code that
// wants the work done recognizes the child's arguments before main (serve_isolated) and does
// the work there.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace dsmoe {

// Starts this program again as the child for `task` with `args`, no standard input, and waits
// for it at most timeout_s seconds (then kills it). Returns when the task returned there. Throws
// an Error with the message of what the task threw, or one that starts with `what` when the
// child crashed ("<what> crashed (Segmentation fault)"), ran out of time ("<what> did not finish
// within 60 s") or exited otherwise, and one saying so when it could not start.
void run_isolated(const std::string& what, double timeout_s, const std::string& task,
                  const std::vector<std::string>& args);

// Called before main (`const bool x = serve_isolated(...)` at namespace scope): in the child that
// run_isolated started for `task`, runs do_task(args) and ends the process (exit status 0 when
// it returned; 1, with what() of what it threw on standard output, when it threw). Returns false
// in every other process. The child dies with its parent, and its crashes leave no core file.
bool serve_isolated(const std::string& task,
                    const std::function<void(const std::vector<std::string>&)>& do_task);

}  // namespace dsmoe
