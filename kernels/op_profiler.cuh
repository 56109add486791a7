// GPU time per backend op, for finding where a step goes (dsmoe bench --profile): each op is
// bracketed by CUDA events on its stream; the totals, with the matrix products' achieved FLOP/s,
// go to stderr when the backend is destroyed. Also the GPU's idle time before each op: from the
// end of the op before (not nested in another) to this one's start, which the GPU reaches only
// once the host has queued the op, so the idle time says which op the GPU waited for the host to
// launch. Off, a scope costs one branch.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda_check.cuh"

namespace dsmoe::cuda {

class OpProfiler {
 public:
  OpProfiler() = default;
  ~OpProfiler() {
    if (!on_) return;
    flush();
    std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    double all = 0;
    for (const auto& r : rows) all += r.second.ms;
    double idle = 0;
    for (const auto& r : rows) idle += r.second.idle_ms;
    std::fprintf(stderr, "GPU time per op (dsmoe bench --profile), %.1f ms in all, %.1f ms idle between ops:\n", all,
                 idle);
    for (const auto& r : rows) {
      std::fprintf(stderr, "  %-28s %10.2f ms %5.1f %% %8ld calls, host %9.2f ms, idle before %8.2f ms",
                   r.first.c_str(), r.second.ms, 100 * r.second.ms / std::max(all, 1e-9), (long)r.second.calls,
                   r.second.host_ms, r.second.idle_ms);
      if (r.second.flops > 0) std::fprintf(stderr, " %7.1f TFLOP/s", r.second.flops / (r.second.ms * 1e9));
      std::fprintf(stderr, "\n");
    }
    for (auto& e : free_) cudaEventDestroy(e);
    if (prev_stop_) cudaEventDestroy(prev_stop_);
  }
  bool on() const { return on_; }
  // Profiles from now on, forgetting the totals so far (the ops in flight are counted first,
  // then dropped too).
  void start() {
    if (on_) flush();
    totals_.clear();
    on_ = true;
  }

  // Brackets one op: begin before its launches, end after them, on the stream they use. GPU time
  // counts from the first launch to the end of the last, so the host's time between launches
  // counts too when the GPU waits for it; host time is the time the op took to return.
  class Scope {
   public:
    Scope(OpProfiler& p, const char* name, cudaStream_t s, double flops = 0) : p_(p), s_(s) {
      if (p_.on_) i_ = p_.begin(name, s, flops);
    }
    ~Scope() {
      if (i_ >= 0) p_.end(i_, s_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfiler& p_;
    cudaStream_t s_;
    int i_ = -1;
  };

 private:
  struct Total {
    double ms = 0, flops = 0, host_ms = 0, idle_ms = 0;
    int64_t calls = 0;
  };
  struct Open {
    const char* name;
    double flops;
    cudaEvent_t start, stop;
    std::chrono::steady_clock::time_point t0;
    double host_ms;
    bool outer;  // not nested in another op
    cudaStream_t stream;
  };
  cudaEvent_t event() {
    cudaEvent_t e;
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      CUDA_CHECK(cudaEventCreate(&e));
    }
    return e;
  }
  int begin(const char* name, cudaStream_t s, double flops) {
    open_.push_back({name, flops, event(), event(), std::chrono::steady_clock::now(), 0, depth_ == 0, s});
    ++depth_;
    CUDA_CHECK(cudaEventRecord(open_.back().start, s));
    return static_cast<int>(open_.size()) - 1;
  }
  void end(int i, cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(open_[i].stop, s));
    open_[i].host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - open_[i].t0).count();
    if (--depth_ == 0 && open_.size() >= 4096) flush();  // scopes nest (gemm_batch's gemms): flush outside
  }
  void flush() {
    for (Open& o : open_) {
      CUDA_CHECK(cudaEventSynchronize(o.stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, o.start, o.stop));
      Total& t = totals_[o.name];
      if (o.outer) {  // the GPU's idle time since the op before on this stream
        if (prev_stop_ && prev_stream_ == o.stream) {
          float gap = 0;
          CUDA_CHECK(cudaEventElapsedTime(&gap, prev_stop_, o.start));
          t.idle_ms += std::max(0.f, gap);
        }
        if (prev_stop_) free_.push_back(prev_stop_);
        prev_stop_ = o.stop;
        prev_stream_ = o.stream;
      } else {
        free_.push_back(o.stop);
      }
      t.ms += ms;
      t.flops += o.flops;
      t.host_ms += o.host_ms;
      t.calls += 1;
      free_.push_back(o.start);
    }
    open_.clear();
  }

  bool on_ = false;
  int depth_ = 0;
  std::vector<Open> open_;
  std::vector<cudaEvent_t> free_;
  cudaEvent_t prev_stop_ = nullptr;  // the last outer op's end, kept for the next one's idle time
  cudaStream_t prev_stream_ = nullptr;
  std::map<std::string, Total> totals_;
};

}  // namespace dsmoe::cuda
