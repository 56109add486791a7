#include "train/dispatch_bench.h"

#include "util/timer.h"

namespace dsmoe {

AllToAllFigures bench_all_to_all(Engine& engine, int iters) {
  Comm& ep = *engine.groups().ep;
  Backend<float>& be = engine.backend();
  Model<float>& model = engine.model();
  AllToAllFigures f;
  f.ranks = ep.size();
  if (model.moe_layers().empty() || ep.size() == 1) return f;
  const Routing<float>& routing = model.routing(0);
  const int d = engine.config().model.d_model, K = engine.config().moe.top_k, tokens = routing.tokens;

  Dispatcher<float> disp(be, ep, model.placement(), d);
  disp.plan(routing.sel, routing.kept, tokens, K);
  // Rows stored as training stores them (bf16 under precision: bf16), so the same bytes travel.
  Buf<float> x(be, (int64_t)tokens * d);
  ActBuf<float> xe, yc;
  xe.ensure(be, std::max(1, disp.rows()) * (int64_t)d);
  yc.ensure(be, std::max(1, disp.combine_rows()) * (int64_t)d);
  auto timed = [&](auto&& body) {
    body();  // untimed: the first call touches the buffers
    ep.barrier();
    const double t0 = now_seconds();
    for (int i = 0; i < iters; ++i) body();
    be.synchronize();
    double t = (now_seconds() - t0) / iters;
    ep.allreduce_max(&t, 1);
    return t;
  };
  disp.stats() = DispatchStats{};
  f.dispatcher_s = timed([&] {
    disp.dispatch(xe, x);
    disp.combine(yc);
  });
  double bytes = static_cast<double>(disp.stats().bytes_sent) / iters;
  f.dispatch_s = timed([&] { disp.dispatch(xe, x); });
  ep.allreduce_sum(&bytes, 1);
  f.bytes_per_rank = bytes / ep.size();

  // The same two exchanges (token copies out, pairs back: the same bytes to and from each rank)
  // between contiguous buffers.
  const int64_t row_bytes = (int64_t)d * xe.ptr().element_bytes();
  Buf<float> local(be, std::max<int64_t>(1, (int64_t)tokens * K * d)), remote(be, std::max(1, disp.rows()) * (int64_t)d);
  f.bare_s = timed([&] {
    ep.alltoallv(local, disp.copy_send_rows(), remote, disp.copy_recv_rows(), row_bytes);
    ep.alltoallv(remote, disp.pair_recv_rows(), local, disp.pair_send_rows(), row_bytes);
  });
  return f;
}

OverlapFigures bench_overlap(Engine& engine, int64_t steps) {
  Model<float>& model = engine.model();
  auto set = [&](bool on) {
    for (size_t i = 0; i < model.moe_layers().size(); ++i) model.moe_layer(static_cast<int>(i)).set_overlap(on);
  };
  OverlapFigures f;
  for (int64_t s = 0; s < steps; ++s) {
    set(false);
    f.without_s += engine.train_step().t_step / steps;
    set(true);
    f.with_s += engine.train_step().t_step / steps;
  }
  return f;
}

}  // namespace dsmoe
