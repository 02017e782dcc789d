// NcclGroup: NCCL over the ranks of one process (ncclCommInitAll), the
// general all-reduce path and the comparison for the peer kernel. Built only
// where nccl.h and libnccl exist (GPTOSS_WITH_NCCL); NCCL needs one device
// per rank.
#pragma once

#include <nccl.h>

#include <cstddef>
#include <vector>

#include "backend/cuda/rank_streams.h"

namespace gptoss::cuda {

class NcclGroup {
 public:
  explicit NcclGroup(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  // Sums `count` floats of bufs[r] over the ranks, in place, each rank on
  // ranks.stream(r); one NCCL group call (capturable into a graph).
  void all_reduce(const std::vector<float*>& bufs, size_t count, const RankStreams& ranks) const;

 private:
  std::vector<ncclComm_t> comms_;
};

}  // namespace gptoss::cuda
