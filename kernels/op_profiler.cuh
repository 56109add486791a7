// GPU time per backend op, for finding where a step goes (dsmoe bench --profile): each op is
// bracketed by CUDA events on its stream; the totals go to stderr when the backend is destroyed.
// Also the GPU's idle time before each op: from the end of the op before (not nested in another)
// to this one's start, which the GPU reaches only once the host has queued the op, so the idle
// time says which op the GPU waited for the host to launch. Off, a scope costs one branch.
//
// An op may state its work (OpWork): its FLOPs and the fewest bytes it must move to and from
// device memory (each operand read or written once). The report then gives its achieved TFLOP/s
// and GB/s and its floor: the larger of FLOPs over the peak and bytes over the memory bandwidth,
// as a share of the time it took. The bandwidth is the device's (memory clock x bus width); the
// peaks are the H100/H200 SXM datasheet's dense figures (989 TFLOP/s bf16 on the tensor cores,
// 67 TFLOP/s fp32 on the CUDA cores), the same bf16 peak as dsmoe bench's MFU.
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

struct OpWork {
  double flops = 0;   // floating-point operations
  double bytes = 0;   // device memory traffic, each operand once
  bool fp32 = false;  // the FLOPs run on the CUDA cores in fp32 (else bf16 on the tensor cores)
};

class OpProfiler {
 public:
  OpProfiler() = default;
  ~OpProfiler() {
    if (!on_) return;
    flush();
    std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    double all = 0, idle = 0, stated = 0, floor = 0;
    for (const auto& r : rows) {
      all += r.second.ms;
      idle += r.second.idle_ms;
      if (r.second.floor_ms > 0) {
        stated += r.second.ms;
        floor += r.second.floor_ms;
      }
    }
    std::fprintf(stderr, "GPU time per op (dsmoe bench --profile), %.1f ms in all, %.1f ms idle between ops:\n", all,
                 idle);
    for (const auto& r : rows) {
      const Total& t = r.second;
      std::fprintf(stderr, "  %-28s %10.2f ms %5.1f %% %8ld calls, host %9.2f ms, idle before %8.2f ms", r.first.c_str(),
                   t.ms, 100 * t.ms / std::max(all, 1e-9), (long)t.calls, t.host_ms, t.idle_ms);
      if (t.flops > 0) std::fprintf(stderr, " %7.1f TFLOP/s", t.flops / (t.ms * 1e9));
      if (t.bytes > 0) std::fprintf(stderr, " %6.0f GB/s", t.bytes / (t.ms * 1e6));
      if (t.floor_ms > 0) std::fprintf(stderr, ", floor %5.1f %%", 100 * t.floor_ms / std::max(t.ms, 1e-9));
      std::fprintf(stderr, "\n");
    }
    std::fprintf(stderr,
                 "floor of the ops that state their work: %.1f ms of their %.1f ms (memory %.0f GB/s, "
                 "%.0f TFLOP/s bf16, %.0f TFLOP/s fp32)\n",
                 floor, stated, bandwidth_ / 1e9, kBf16Peak / 1e12, kFp32Peak / 1e12);
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
    bandwidth_ = device_bandwidth();
  }

  // Brackets one op: begin before its launches, end after them, on the stream they use. GPU time
  // counts from the first launch to the end of the last, so the host's time between launches
  // counts too when the GPU waits for it; host time is the time the op took to return.
  class Scope {
   public:
    Scope(OpProfiler& p, const char* name, cudaStream_t s, const OpWork& work = {}) : p_(p), s_(s) {
      if (p_.on_) i_ = p_.begin(name, s, work);
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
  static constexpr double kBf16Peak = 989e12, kFp32Peak = 67e12;  // FLOP/s (see the top)
  // Bytes a second: twice the memory clock (double data rate) times the bus width.
  static double device_bandwidth() {
    int device = 0, khz = 0, bits = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, device));
    return 2.0 * khz * 1e3 * bits / 8;
  }
  // The time an op's work takes at the peaks (ms): the larger of its compute and memory time.
  double floor_ms(const OpWork& w) const {
    return 1e3 * std::max(w.flops / (w.fp32 ? kFp32Peak : kBf16Peak), w.bytes / bandwidth_);
  }
  struct Total {
    double ms = 0, flops = 0, bytes = 0, floor_ms = 0, host_ms = 0, idle_ms = 0;
    int64_t calls = 0;
  };
  struct Open {
    const char* name;
    OpWork work;
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
  int begin(const char* name, cudaStream_t s, const OpWork& work) {
    open_.push_back({name, work, event(), event(), std::chrono::steady_clock::now(), 0, depth_ == 0, s});
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
      t.flops += o.work.flops;
      t.bytes += o.work.bytes;
      t.floor_ms += floor_ms(o.work);
      t.host_ms += o.host_ms;
      t.calls += 1;
      free_.push_back(o.start);
    }
    open_.clear();
  }

  bool on_ = false;
  double bandwidth_ = 1;  // bytes a second, set by start()
  int depth_ = 0;
  std::vector<Open> open_;
  std::vector<cudaEvent_t> free_;
  cudaEvent_t prev_stop_ = nullptr;  // the last outer op's end, kept for the next one's idle time
  cudaStream_t prev_stream_ = nullptr;
  std::map<std::string, Total> totals_;
};

}  // namespace dsmoe::cuda
