#include "kernels/ops.h"

namespace lmrt {

int64_t kv_row_bytes(KVDType dt, int head_dim) {
  switch (dt) {
    case KVDType::F32: return 4 * static_cast<int64_t>(head_dim);
    case KVDType::BF16: return 2 * static_cast<int64_t>(head_dim);
    case KVDType::I8: return head_dim;
    case KVDType::I4:
    case KVDType::I4Channel: return head_dim / 2;
  }
  return 0;
}

}  // namespace lmrt
