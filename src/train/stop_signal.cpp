#include "train/stop_signal.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>

namespace dsmoe {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_first_interrupt_s = -1;  // CLOCK_MONOTONIC seconds of the first SIGINT
char g_first_interrupt_note[256];  // formatted before any signal: the handler may only write it

long monotonic_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return ts.tv_sec;
}

void say(const char* text) {
  size_t n = 0;
  while (text[n]) ++n;
  ssize_t ignored = write(STDERR_FILENO, text, n);
  (void)ignored;
}

// Only async-signal-safe calls here: the flag, the clock, write and _exit.
void on_stop_signal(int sig) {
  if (sig == SIGINT) {
    const long now = monotonic_seconds();
    if (g_first_interrupt_s >= 0 && now - g_first_interrupt_s <= kSecondInterruptSeconds) {
      say("\ndsmoe train: second interrupt: stopping at once; the steps since the last checkpoint are lost\n");
      _exit(130);
    }
    g_first_interrupt_s = now;
    say(g_first_interrupt_note);
  }
  g_stop_signal = sig;
}

struct sigaction g_old_usr1 {}, g_old_term {}, g_old_int {};

}  // namespace

StopSignals::StopSignals() {
  g_stop_signal = 0;
  g_first_interrupt_s = -1;
  std::snprintf(g_first_interrupt_note, sizeof g_first_interrupt_note,
                "\ndsmoe train: interrupt: stopping after this step with a checkpoint (Ctrl-C again within %d s: "
                "stop at once, losing the steps since the last checkpoint)\n",
                kSecondInterruptSeconds);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // writes and MPI calls in progress go on undisturbed
  sigaction(SIGUSR1, &sa, &g_old_usr1);
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
}

StopSignals::~StopSignals() {
  sigaction(SIGUSR1, &g_old_usr1, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
}

int stop_signal() { return g_stop_signal; }

}  // namespace dsmoe
