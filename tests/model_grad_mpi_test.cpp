// The total loss (LM + expert, device-level, communication and sequence balance terms) of a
// model whose experts are spread over the ranks, against central finite differences in
// double precision: the gradients of the distributed computation are those of the global loss.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu_backend.h"
#include "model/model.h"
#include "mpi_test_env.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

TEST(ModelGradMpi, BalanceTermsAcrossRanksMatchFiniteDifferences) {
  Comm& world = test::world();
  Config c;
  c.model.vocab_size = 11;
  c.model.d_model = 8;
  c.model.n_heads = 2;
  c.model.n_layers = 2;
  c.model.seq_len = 5;
  c.model.first_dense_layers = 1;
  c.model.dense_hidden = 8;
  c.model.init_std = 0.3;
  c.moe.n_routed = 4;
  c.moe.top_k = 2;
  c.moe.expert_hidden = 4;
  c.moe.route_devices = 1;
  c.balance.device_groups = 2;
  c.balance.expert_alpha = 0.1;
  c.balance.device_alpha = 0.2;
  c.balance.comm_alpha = 0.15;
  c.balance.seq_alpha = 0.05;

  const int seqs = 4, local = seqs / world.size(), T = c.model.seq_len;
  auto be = make_cpu_backend<double>();
  Model<double> model(c, *be, world, local, &world);
  model.init_params(3);
  std::vector<int32_t> tokens(seqs * T), targets(seqs * T);
  Rng rng(9);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(c.model.vocab_size));
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(c.model.vocab_size));
  const int64_t first = (int64_t)world.rank() * local * T;
  ForwardOpts opts;
  opts.tokens_global = seqs * T;
  opts.token_offset = first;
  auto loss = [&] {
    ForwardResult r = model.forward(tokens.data() + first, targets.data() + first, local, opts);
    world.allreduce_sum(&r.ce_sum, 1);
    return r.ce_sum / (seqs * T) + r.aux_loss;
  };

  model.zero_grads();
  loss();
  model.backward();
  for (const auto& t : model.table().tensors())
    if (!t.expert_sharded) world.allreduce_sum(model.grads() + t.offset, t.numel);

  const ExpertPlacement& place = model.placement();
  const double h = 1e-5;
  Rng pick(21);  // the same choices on every rank
  for (const auto& t : model.table().tensors()) {
    for (int s = 0; s < 3; ++s) {
      // An element of the whole tensor; for an expert tensor only its owner perturbs it.
      const int64_t global_numel = t.numel / t.shape[0] * t.global_dim0;
      const int64_t g = static_cast<int64_t>(pick.below(global_numel));
      const int64_t row = t.numel / t.shape[0], expert = g / row;
      const bool mine = !t.expert_sharded || place.owner(static_cast<int>(expert)) == place.ep_rank;
      const int64_t i = t.at(t.expert_sharded ? g - t.expert_first * row : g);
      double* p = model.params();
      const double keep = mine ? p[i] : 0;
      if (mine) p[i] = keep + h;
      const double lp = loss();
      if (mine) p[i] = keep - h;
      const double lm = loss();
      if (mine) p[i] = keep;
      const double fd = (lp - lm) / (2 * h);
      if (mine) {
        EXPECT_NEAR(model.grads()[i], fd, 1e-7 + 1e-5 * std::fabs(fd)) << t.name << " element " << g;
      }
    }
  }
}

}  // namespace
}  // namespace dsmoe
