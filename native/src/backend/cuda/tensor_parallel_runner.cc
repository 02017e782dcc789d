#include "backend/cuda/tensor_parallel_runner.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/peer_all_reduce.h"
#include "backend/cuda/rank_streams.h"
#ifdef GPTOSS_WITH_NCCL
#include "backend/cuda/nccl/nccl_group.h"
#endif
#include "common/error.h"
#include "model/weights.h"
#include "runtime/sliced_sampling.h"

namespace gptoss {

using cuda::DeviceScope;

class TensorParallelCudaRunner final : public ModelRunner {
 public:
  TensorParallelCudaRunner(const ModelConfig& config, const Weights& host, const TensorParallelPlan& plan,
                           TpAllReduce all_reduce)
      : config_(config), streams_(cuda::devices_for_ranks(plan.world_size(), false)) {
#ifdef GPTOSS_WITH_NCCL
    if (all_reduce == TpAllReduce::Nccl) use_nccl();
#endif
    for (int32_t r = 0; r < plan.world_size(); ++r) {
      const DeviceScope scope(streams_.device(r));
      const cuda::RankShape shape = cuda::RankShape::of(plan, r);
      // One rank's shard at a time: its strided copies are freed once uploaded.
      cuda::DeviceWeights weights =
          cuda::DeviceWeights::upload(shard_weights(host, config, plan, r), config, shape);
      ranks_.push_back(std::make_unique<CudaRunner>(config, std::move(weights), shape, streams_.stream(r)));
      ranks_.back()->rank_ = r;
      ranks_.back()->partials_summed_ = nccl_summed();
      cudaEvent_t done;
      GPTOSS_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
      done_.push_back(done);
    }
  }

  ~TensorParallelCudaRunner() override {
    drop_graphs();
    for (int32_t r = 0; r < world(); ++r) {
      cudaSetDevice(streams_.device(r));  // no throwing DeviceScope here; RankStreams' destructor follows
      cudaEventDestroy(done_[r]);
    }
  }

  const ModelConfig& config() const override { return config_; }

  // A block holds every rank's KV heads of its positions.
  size_t kv_block_bytes(AttnKind kind, int32_t block_size) const override {
    size_t bytes = 0;
    for (const auto& rank : ranks_) bytes += rank->kv_block_bytes(kind, block_size);
    return bytes;
  }

  void allocate_kv_cache(const KvCacheShape& shape) override {
    each([&](int32_t r) { ranks_[r]->allocate_kv_cache(shape); });
    drop_graphs();  // they address the old pools
  }

  uint64_t weight_bytes() const override {
    uint64_t bytes = 0;
    for (const auto& rank : ranks_) bytes += rank->weight_bytes();
    return bytes;
  }

  // Every rank holds the same share of a block, so the device with the least
  // room per rank on it bounds the blocks. (Ranks sharing a device each keep
  // their own work buffers; the reserve counts one: the small-model check.)
  uint64_t kv_budget_bytes(float memory_utilization) const override {
    uint64_t per_rank = std::numeric_limits<uint64_t>::max();
    for (int32_t r = 0; r < world(); ++r) {
      const int d = streams_.device(r);
      uint64_t sharing = 0;
      for (int32_t q = 0; q < world(); ++q) sharing += streams_.device(q) == d;
      const DeviceScope scope(d);
      per_rank = std::min(per_rank, ranks_[r]->kv_budget_bytes(memory_utilization) / sharing);
    }
    return per_rank * world();
  }

  void device_memory(uint64_t* used, uint64_t* total) const override {
    *used = *total = 0;
    std::vector<int> seen;
    for (int32_t r = 0; r < world(); ++r) {
      const int d = streams_.device(r);
      if (std::find(seen.begin(), seen.end(), d) != seen.end()) continue;
      seen.push_back(d);
      const DeviceScope scope(d);
      uint64_t u = 0, t = 0;
      ranks_[r]->device_memory(&u, &t);
      *used += u;
      *total += t;
    }
  }

  bool samples_on_device() const override { return true; }

  void forward(const BatchPlan& plan, std::vector<float>& logits) override {
    const int32_t rows = launch(plan);
    logits.resize(static_cast<size_t>(rows) * config_.vocab_size);
    if (rows > 0) gather_logits(logits.data(), rows);
    synchronize();
  }

  // Sampling over the ranks' vocabulary slices (runtime/sliced_sampling.h):
  // each rank processes and summarizes its slice of every row, the summaries
  // come to the host and merge there; a walked draw runs on the rank it lands
  // in; a row whose candidates reach past the lists is gathered on rank 0
  // (already processed) for the one-device sampler.
  void forward_sampled(const BatchPlan& plan, const std::vector<RowSampling>& rows,
                       std::vector<SampledToken>& out, const std::function<void()>& await_masks) override {
    if (static_cast<int32_t>(rows.size()) != plan.num_logit_rows())
      throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "forward_sampled: one RowSampling per logits row");
    out.clear();
    const int32_t n = launch(plan);
    if (n == 0) {  // a step of prompt chunks only
      synchronize();
      return;
    }
    fork_from_stream0();  // each rank's logits are final on its stream
    // Every rank's step is queued: the caller's token masks are computed while they run.
    if (await_masks) await_masks();
    summarize(rows, n);
    out.resize(n);
    merges_.resize(n);
    std::vector<std::vector<cuda::SliceWalk>> walks(world());
    std::vector<std::vector<int32_t>> walk_rows(world());
    std::vector<int32_t> whole_rows;
    std::vector<SliceSummary> row_slices(world());
    for (int32_t i = 0; i < n; ++i) {
      for (int32_t r = 0; r < world(); ++r) row_slices[r] = summaries_host_[r][i];
      SliceMerge& m = merges_[i] = merge_slices(row_slices.data(), world(), *rows[i].params, rows[i].counter);
      if (m.kind == SliceMerge::Kind::Walk) {
        walks[m.walk_slice].push_back(cuda::SliceWalk{i, m.max, m.target});
        walk_rows[m.walk_slice].push_back(i);
      } else if (m.kind == SliceMerge::Kind::WholeRow) {
        whole_rows.push_back(i);
      } else {
        out[i] = m.token;
      }
    }
    walk(walks, walk_rows, out);
    sample_whole_rows(rows, whole_rows, out);
  }

 private:
  int32_t world() const { return static_cast<int32_t>(ranks_.size()); }

  void each(const std::function<void(int32_t)>& fn) const {
    streams_.each([&](int r) { fn(static_cast<int32_t>(r)); });
  }

  void drop_graphs() {
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
  }

  // The step is done (stream 0 waited for every rank), so the next one may
  // rewrite the ranks' host metadata.
  void synchronize() const {
    const DeviceScope scope(streams_.device(0));
    GPTOSS_CUDA_CHECK(cudaStreamSynchronize(streams_.stream(0)));
  }

  // Stream 0 waits for everything enqueued so far on the other ranks' streams.
  void join_into_stream0() {
    for (int32_t r = 1; r < world(); ++r) {
      {
        const DeviceScope scope(streams_.device(r));
        GPTOSS_CUDA_CHECK(cudaEventRecord(done_[r], streams_.stream(r)));
      }
      const DeviceScope scope(streams_.device(0));
      GPTOSS_CUDA_CHECK(cudaStreamWaitEvent(streams_.stream(0), done_[r], 0));
    }
  }

  // Every rank's stream waits for everything enqueued so far on stream 0 (a
  // decode graph runs every rank's part as one launch on stream 0).
  void fork_from_stream0() {
    {
      const DeviceScope scope(streams_.device(0));
      GPTOSS_CUDA_CHECK(cudaEventRecord(done_[0], streams_.stream(0)));
    }
    for (int32_t r = 1; r < world(); ++r) {
      const DeviceScope scope(streams_.device(r));
      GPTOSS_CUDA_CHECK(cudaStreamWaitEvent(streams_.stream(r), done_[0], 0));
    }
  }

  // After the ranks' prepare: every rank's buffers grow alike, and when they
  // did, graphs address the old ones and the all-reduce may be too small.
  void follow_capacity() {
    const CudaRunner::Capacity& cap = ranks_[0]->cap_;
    if (all_reduce_ && cap.tokens == cap_.tokens && cap.logit_rows == cap_.logit_rows &&
        std::equal(cap.max_blocks, cap.max_blocks + kNumAttnKinds, cap_.max_blocks))
      return;
    drop_graphs();
    if (!all_reduce_ || cap.tokens > cap_.tokens) {
      streams_.synchronize();
      std::vector<int> devices;
      for (int32_t r = 0; r < world(); ++r) devices.push_back(streams_.device(r));
      all_reduce_.reset();  // its flags restart at zero on every rank together
      all_reduce_ = std::make_unique<cuda::PeerAllReduce>(devices, 2,
                                                          static_cast<int64_t>(cap.tokens) * config_.hidden_size);
      for (auto& rank : ranks_) rank->all_reduce_ = all_reduce_.get();
    }
    cap_ = cap;
  }

#ifdef GPTOSS_WITH_NCCL
  // NCCL sums the partials (one device per rank); the ranks then add them
  // with add_rmsnorm. Checked before any weight is uploaded.
  void use_nccl() {
    std::vector<int> devices;
    for (int32_t r = 0; r < streams_.world(); ++r) devices.push_back(streams_.device(r));
    nccl_ = std::make_unique<cuda::NcclGroup>(devices);  // Error(BACKEND) when ranks share a device
  }
#endif

  bool nccl_summed() const {
#ifdef GPTOSS_WITH_NCCL
    return nccl_ != nullptr;
#else
    return false;
#endif
  }

  // Every rank's part of the all-reduce at `site` (then `norm_part` on every
  // rank): the peer kernel there, or NCCL's group call over all ranks first.
  void enqueue_all_reduce(int32_t site, int32_t n_tokens, const std::function<void(int32_t)>& norm_part) {
#ifdef GPTOSS_WITH_NCCL
    if (nccl_) {
      std::vector<float*> partials;
      for (int32_t r = 0; r < world(); ++r) partials.push_back(all_reduce_->partial(site, r));
      nccl_->all_reduce(partials, static_cast<size_t>(n_tokens) * config_.hidden_size, streams_);
    }
#endif
    each(norm_part);
  }

  // Part by part across the ranks: the work before an all-reduce on every
  // rank, then that all-reduce on every rank, then the next part. A spinning
  // all-reduce waits for its peers' launches, and a launch on the host may
  // have to wait for the device: the first launch of a kernel (CUDA lazy
  // loading, cuBLASLt's kernels included) or a larger local-memory need
  // synchronizes the context. Launched layer by layer (rank 0's whole layer,
  // then rank 1's), rank 0's attention all-reduce was spinning while the
  // host launched rank 0's router product for the first time, and the host
  // waited in that launch for the all-reduce, which waited for rank 1's,
  // not yet launched: the 10 s trap (docs/cuda-notes.md, call 12). Here the
  // only launches while an all-reduce waits for an unlaunched peer are the
  // peers' all-reduces: the same kernel, loaded by the first. It also holds
  // where two ranks' streams share one hardware queue.
  void enqueue(const std::vector<CudaRunner::Step>& steps) {
    each([&](int32_t r) { ranks_[r]->enqueue_embed(steps[r]); });
    const int32_t n_tokens = steps[0].n_tokens;
    for (int32_t l = 0; l < config_.num_layers; ++l) {
      each([&](int32_t r) { ranks_[r]->enqueue_attention(steps[r], l); });
      enqueue_all_reduce(0, n_tokens, [&](int32_t r) { ranks_[r]->enqueue_attention_norm(steps[r], l); });
      each([&](int32_t r) { ranks_[r]->enqueue_moe(steps[r], l); });
      enqueue_all_reduce(1, n_tokens, [&](int32_t r) { ranks_[r]->enqueue_moe_norm(steps[r], l); });
    }
    each([&](int32_t r) { ranks_[r]->enqueue_head(steps[r]); });
  }

  // Enqueues the step on every rank; stream 0 is then ordered after all of
  // it. Returns the step's logits rows.
  int32_t launch(const BatchPlan& plan) {
    ranks_[0]->validate(plan);
    if (plan.tokens.empty()) return 0;
    std::vector<CudaRunner::Step> steps;
    each([&](int32_t r) { steps.push_back(ranks_[r]->prepare(plan)); });
    follow_capacity();
    const CudaRunner::Step& step = steps[0];
    if (!ranks_[0]->graphed(step)) {
      enqueue(steps);
      join_into_stream0();
      return step.real_logit_rows;
    }
    join_into_stream0();  // the graph forks from stream 0: after every rank's metadata copy
    const auto key = std::make_tuple(step.n_tokens, cap_.max_blocks[0], cap_.max_blocks[1]);
    auto it = graphs_.find(key);
    if (it == graphs_.end()) it = graphs_.emplace(key, streams_.capture([&] { enqueue(steps); })).first;
    const DeviceScope scope(streams_.device(0));
    GPTOSS_CUDA_CHECK(cudaGraphLaunch(it->second, streams_.stream(0)));
    return step.real_logit_rows;
  }

  // Every rank: its slice of each row processed in place and summarized; the
  // summaries land in summaries_host_[rank] once this returns.
  void summarize(const std::vector<RowSampling>& rows, int32_t n) {
    summaries_.resize(world());
    summaries_host_.resize(world());
    each([&](int32_t r) {
      CudaRunner& rank = *ranks_[r];
      const int32_t n_pen = rank.upload_sampling(rows);
      if (summaries_[r].size() < static_cast<size_t>(n)) summaries_[r] = cuda::DeviceBuffer<SliceSummary>(n);
      const bool masked = !rank.mask_index_host_.empty();
      cuda::summarize_slices(rank.logits_.get(), n, rank.shape_.vocab, config_.vocab_size, rank.sampling_rows_.get(),
                             rank.penalty_buf_.get(), rank.penalty_buf_.get() + n_pen,
                             masked ? rank.mask_buf_.get() : nullptr, masked ? rank.mask_index_.get() : nullptr,
                             summaries_[r].get(), streams_.stream(r));
    });
    // Copies into pageable memory return once done: every rank's kernel is queued first.
    each([&](int32_t r) {
      summaries_host_[r].resize(n);
      GPTOSS_CUDA_CHECK(cudaMemcpyAsync(summaries_host_[r].data(), summaries_[r].get(), n * sizeof(SliceSummary),
                                        cudaMemcpyDeviceToHost, streams_.stream(r)));
    });
    streams_.synchronize();
  }

  // The walked draws, each on the rank whose slice it lands in.
  void walk(const std::vector<std::vector<cuda::SliceWalk>>& walks, const std::vector<std::vector<int32_t>>& walk_rows,
            std::vector<SampledToken>& out) {
    if (std::all_of(walks.begin(), walks.end(), [](const auto& w) { return w.empty(); })) return;
    std::vector<std::vector<cuda::SliceWalkResult>> results(world());
    walk_buffers_.resize(world());
    each([&](int32_t r) {
      const int32_t n_walks = static_cast<int32_t>(walks[r].size());
      if (n_walks == 0) return;
      WalkBuffers& b = walk_buffers_[r];
      if (b.walks.size() < walks[r].size()) {
        b.walks = cuda::DeviceBuffer<cuda::SliceWalk>(walks[r].size());
        b.results = cuda::DeviceBuffer<cuda::SliceWalkResult>(walks[r].size());
      }
      const cudaStream_t stream = streams_.stream(r);
      GPTOSS_CUDA_CHECK(cudaMemcpyAsync(b.walks.get(), walks[r].data(), n_walks * sizeof(cuda::SliceWalk),
                                        cudaMemcpyHostToDevice, stream));
      cuda::walk_slices(ranks_[r]->logits_.get(), ranks_[r]->shape_.vocab.size(), b.walks.get(), n_walks,
                        b.results.get(), stream);
    });
    each([&](int32_t r) {  // after every rank's kernel is queued, as in summarize
      results[r].resize(walks[r].size());
      if (walks[r].empty()) return;
      GPTOSS_CUDA_CHECK(cudaMemcpyAsync(results[r].data(), walk_buffers_[r].results.get(),
                                        walks[r].size() * sizeof(cuda::SliceWalkResult), cudaMemcpyDeviceToHost,
                                        streams_.stream(r)));
    });
    streams_.synchronize();
    for (int32_t r = 0; r < world(); ++r) {
      for (size_t j = 0; j < walk_rows[r].size(); ++j) {
        const int32_t i = walk_rows[r][j];
        finish_walk(merges_[i], ranks_[r]->shape_.vocab.begin + results[r][j].index, results[r][j].value);
        out[i] = merges_[i].token;
      }
    }
  }

  // Rows whose candidates reach past the lists: their processed slices
  // gathered on rank 0 and sampled whole there, as processed logits
  // (temperature 1 or greedy, no penalties, masks already applied).
  void sample_whole_rows(const std::vector<RowSampling>& rows, const std::vector<int32_t>& whole_rows,
                         std::vector<SampledToken>& out) {
    if (whole_rows.empty()) return;
    const int32_t n = static_cast<int32_t>(whole_rows.size());
    const DeviceScope scope(streams_.device(0));
    const cudaStream_t stream0 = streams_.stream(0);
    const size_t floats = static_cast<size_t>(n) * config_.vocab_size;
    if (gathered_.size() < floats) gathered_ = cuda::DeviceBuffer<float>(floats);
    std::vector<cuda::DeviceSamplingRow> params;
    for (int32_t j = 0; j < n; ++j) {
      const int32_t i = whole_rows[j];
      for (const auto& rank : ranks_) {
        const ShardRange v = rank->shape_.vocab;
        GPTOSS_CUDA_CHECK(cudaMemcpyAsync(gathered_.get() + static_cast<size_t>(j) * config_.vocab_size + v.begin,
                                          rank->logits_.get() + static_cast<size_t>(i) * v.size(),
                                          v.size() * sizeof(float), cudaMemcpyDefault, stream0));
      }
      SamplingParams processed = *rows[i].params;
      if (processed.temperature != 0.0f) processed.temperature = 1.0f;
      processed.presence_penalty = processed.frequency_penalty = 0.0f;
      params.push_back(cuda::DeviceSamplingRow::of(processed, rows[i].counter));
    }
    CudaRunner& rank0 = *ranks_[0];
    GPTOSS_CUDA_CHECK(cudaMemcpyAsync(rank0.sampling_rows_.get(), params.data(), n * sizeof(params[0]),
                                      cudaMemcpyHostToDevice, stream0));
    cuda::sample_rows(gathered_.get(), n, config_.vocab_size, rank0.sampling_rows_.get(), nullptr, nullptr,
                      rank0.sampled_.get(), stream0);
    std::vector<SampledToken> sampled(n);
    GPTOSS_CUDA_CHECK(cudaMemcpyAsync(sampled.data(), rank0.sampled_.get(), n * sizeof(SampledToken),
                                      cudaMemcpyDeviceToHost, stream0));
    GPTOSS_CUDA_CHECK(cudaStreamSynchronize(stream0));
    for (int32_t j = 0; j < n; ++j) out[whole_rows[j]] = sampled[j];
  }

  // Each rank's logits [rows, its vocabulary rows] into its columns of dst
  // [rows, vocab] (host memory or rank 0's device), on stream 0.
  void gather_logits(float* dst, int32_t rows) {
    const DeviceScope scope(streams_.device(0));
    const size_t pitch = static_cast<size_t>(config_.vocab_size) * sizeof(float);
    for (const auto& rank : ranks_) {
      const ShardRange v = rank->shape_.vocab;
      const size_t width = static_cast<size_t>(v.size()) * sizeof(float);
      GPTOSS_CUDA_CHECK(cudaMemcpy2DAsync(dst + v.begin, pitch, rank->logits_.get(), width, width, rows,
                                          cudaMemcpyDefault, streams_.stream(0)));
    }
  }

  const ModelConfig config_;
  cuda::RankStreams streams_;
  // Per rank, its stream's work so far: rank r > 0's for stream 0, rank 0's for the others.
  std::vector<cudaEvent_t> done_;
  std::vector<std::unique_ptr<CudaRunner>> ranks_;
  std::unique_ptr<cuda::PeerAllReduce> all_reduce_;  // with NCCL: only its partial buffers are used
#ifdef GPTOSS_WITH_NCCL
  std::unique_ptr<cuda::NcclGroup> nccl_;
#endif
  CudaRunner::Capacity cap_;  // the ranks' buffers the graphs and all-reduce were made for
  cuda::DeviceBuffer<float> gathered_;  // [rows, vocab] on rank 0's device, for its sampler
  // Sampling over slices: per rank, its summaries of the step's rows (device,
  // host) and its walks; per row, its merge.
  std::vector<cuda::DeviceBuffer<SliceSummary>> summaries_;
  std::vector<std::vector<SliceSummary>> summaries_host_;
  struct WalkBuffers {
    cuda::DeviceBuffer<cuda::SliceWalk> walks;
    cuda::DeviceBuffer<cuda::SliceWalkResult> results;
  };
  std::vector<WalkBuffers> walk_buffers_;
  std::vector<SliceMerge> merges_;
  // Decode graphs over all ranks by (padded tokens, block-table widths).
  std::map<std::tuple<int32_t, int32_t, int32_t>, cudaGraphExec_t> graphs_;
};

std::unique_ptr<ModelRunner> make_cuda_tensor_parallel_runner(const std::string& model_dir,
                                                              int32_t tensor_parallel, MoeSharding moe,
                                                              TpAllReduce all_reduce) {
#ifndef GPTOSS_WITH_NCCL
  if (all_reduce == TpAllReduce::Nccl)  // before reading the checkpoint
    throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "tp_all_reduce \"nccl\": this engine is built without NCCL; use \"peer\"");
#endif
  require_hopper_gpu();
  const ModelConfig config = load_model_config(model_dir);
  const TensorParallelPlan plan(config, tensor_parallel, moe);
  const Weights host = load_weights(model_dir, config);
  return std::make_unique<TensorParallelCudaRunner>(config, host, plan, all_reduce);
}

}  // namespace gptoss
