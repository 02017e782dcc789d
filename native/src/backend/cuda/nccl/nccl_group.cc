#include "backend/cuda/nccl/nccl_group.h"

#include <set>
#include <string>

#include "common/error.h"

namespace gptoss::cuda {
namespace {

void nccl_check(ncclResult_t status, const char* what) {
  if (status != ncclSuccess) {
    throw Error(GPTOSS_ERR_BACKEND, std::string("NCCL error in ") + what + ": " + ncclGetErrorString(status));
  }
}

}  // namespace

NcclGroup::NcclGroup(const std::vector<int>& devices) : comms_(devices.size()) {
  if (std::set<int>(devices.begin(), devices.end()).size() != devices.size()) {
    throw Error(GPTOSS_ERR_BACKEND, "NCCL needs one device per rank");
  }
  nccl_check(ncclCommInitAll(comms_.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
}

NcclGroup::~NcclGroup() {
  for (ncclComm_t c : comms_) ncclCommDestroy(c);
}

void NcclGroup::all_reduce(const std::vector<float*>& bufs, size_t count, const RankStreams& ranks) const {
  nccl_check(ncclGroupStart(), "ncclGroupStart");
  ranks.each([&](int r) {
    nccl_check(ncclAllReduce(bufs[r], bufs[r], count, ncclFloat, ncclSum, comms_[r], ranks.stream(r)), "ncclAllReduce");
  });
  nccl_check(ncclGroupEnd(), "ncclGroupEnd");
}

}  // namespace gptoss::cuda
