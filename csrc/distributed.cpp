// A small C ABI over PyTorch's c10d (TCPStore, ProcessGroupGloo, ProcessGroupNCCL) for
// `selfsup::distributed` (src/distributed/ffi.rs). Compiled by build.rs with the `distributed`
// feature, against the torch wheel's headers and with torch-sys's flags (C++17, the wheel's
// _GLIBCXX_USE_CXX11_ABI), so `at::Tensor*` here is tch's `C_tensor*`.
//
// Conventions, for every function below:
// - the return value is NULL on success, or an error message allocated with malloc that the
//   caller frees with `selfsup_dist_free_message`; no C++ exception ever crosses the boundary;
// - handles (`selfsup_store`, `selfsup_group`) are opaque, created here, freed here;
// - tensors are borrowed `at::Tensor*` (tch's `Tensor::as_ptr`); a tensor returned through an
//   `at::Tensor**` is a new heap `at::Tensor` that the caller owns (tch's `Tensor::from_ptr`);
// - every collective waits for its `c10d::Work` with the group's timeout.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SELFSUP_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

using Millis = std::chrono::milliseconds;

// A process group: one c10d backend, this process's place in it, and the timeout every wait
// uses. Reference-counted so that a `gather_with_grad` graph keeps its group alive until its
// backward has run, whatever the Rust side drops first.
struct Group : torch::CustomClassHolder {
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int size = 1;
  Millis timeout{0};
};

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, text.c_str(), text.size() + 1);
  }
  return out;
}

// Runs `body`, turning any C++ exception into a message (c10's without its C++ backtrace).
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, const Group& group) {
  // Throws "Operation timed out!" after the timeout, or rethrows the collective's own error
  // (a peer that closed its connection, Gloo's own timeout).
  work->wait(group.timeout);
}

// c10d writes into the tensor's storage directly: run on a contiguous buffer, copy back if
// that was a copy, and bump the version counter as an in-place op would.
template <typename F>
void in_place(at::Tensor& tensor, F&& collective) {
  at::NoGradGuard no_grad;
  at::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  std::vector<at::Tensor> tensors{buffer};
  collective(tensors);
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  } else {
    tensor.unsafeGetTensorImpl()->bump_version();
  }
}

void all_reduce_sum(const Group& group, at::Tensor& tensor) {
  in_place(tensor, [&](std::vector<at::Tensor>& tensors) {
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group.timeout;
    wait(group.backend->allreduce(tensors, opts), group);
  });
}

// [B, ...] on every rank -> [world * B, ...], rank 0's rows first.
at::Tensor all_gather_cat(const Group& group, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  at::Tensor in = input.detach().contiguous();
  std::vector<int64_t> sizes = in.sizes().vec();
  sizes[0] *= group.size;
  at::Tensor out = at::empty(sizes, in.options());
  c10d::AllgatherOptions opts;
  opts.timeout = group.timeout;
  wait(group.backend->_allgather_base(out, in, opts), group);
  return out;
}

// SimCLR's gather: forward is the all-gather; backward sums the incoming gradient over ranks
// and hands this rank its own rows. So rank r's input receives the gradient of every rank's loss
// through rows r (TF's all-reduce gradient in the official SimCLR, lightly's GatherLayer), and
// averaging parameter gradients over ranks then equals the single-process gradient.
struct GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& input,
                            c10::intrusive_ptr<Group> group) {
    ctx->saved_data["rows"] = input.size(0);
    ctx->saved_data["group"] = at::IValue::make_capsule(group);
    return all_gather_cat(*group, input);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto group = c10::static_intrusive_pointer_cast<Group>(ctx->saved_data["group"].toCapsule());
    int64_t rows = ctx->saved_data["rows"].toInt();
    // Defined even where this rank's loss ignored the rows (custom functions materialise
    // missing gradients as zeros), so every rank joins the all-reduce. A copy: c10d writes
    // in place, and the incoming gradient may be shared.
    at::Tensor grad = grads[0].contiguous().clone();
    all_reduce_sum(*group, grad);
    return {grad.narrow(0, group->rank * rows, rows), at::Tensor()};
  }
};

Group* as_group(void* handle) {
  return static_cast<Group*>(handle);
}

}  // namespace

extern "C" {

void selfsup_dist_free_message(char* text) {
  std::free(text);
}

int selfsup_dist_nccl_compiled() {
#ifdef SELFSUP_NCCL
  return 1;
#else
  return 0;
#endif
}

// A TCPStore client, and its server too when `is_server` (rank 0, unless torchrun's agent
// already hosts it). The server waits for `world_size` clients, each client for the server,
// both at most `timeout_ms`.
char* selfsup_dist_store_new(const char* host,
                             uint16_t port,
                             int world_size,
                             int is_server,
                             int64_t timeout_ms,
                             void** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = Millis(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new Store{store};
  });
}

void selfsup_dist_store_free(void* store) {
  delete static_cast<Store*>(store);
}

// A Gloo group over `store` (its keys under `prefix`). The transport device: the interfaces in
// GLOO_SOCKET_IFNAME when set (as PyTorch does), else 127.0.0.1 when `master_host` is a loopback
// address (one machine), else the address this machine's hostname resolves to.
char* selfsup_dist_gloo_new(void* store,
                            const char* prefix,
                            const char* master_host,
                            int rank,
                            int size,
                            int64_t timeout_ms,
                            void** out) {
  return guarded([&] {
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), static_cast<Store*>(store)->store);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> opts;
    if (ifname != nullptr && ifname[0] != '\0') {
      opts = c10d::ProcessGroupGloo::Options::create_default(Millis(timeout_ms));
    } else {
      opts = c10d::ProcessGroupGloo::Options::create(Millis(timeout_ms));
      opts->devices.push_back(is_loopback(master_host)
                                  ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                  : c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->timeout = Millis(timeout_ms);
    auto group = c10::make_intrusive<Group>();
    group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, opts);
    group->rank = rank;
    group->size = size;
    group->timeout = Millis(timeout_ms);
    *out = group.release();
  });
}

// An NCCL group over `store` (keys under `prefix`), for CUDA tensors. Errors when the shim was
// built without NCCL (see build.rs).
char* selfsup_dist_nccl_new(void* store,
                            const char* prefix,
                            int rank,
                            int size,
                            int64_t timeout_ms,
                            void** out) {
  return guarded([&] {
#ifdef SELFSUP_NCCL
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), static_cast<Store*>(store)->store);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = Millis(timeout_ms);
    auto group = c10::make_intrusive<Group>();
    group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, opts);
    group->rank = rank;
    group->size = size;
    group->timeout = Millis(timeout_ms);
    *out = group.release();
#else
    (void)store;
    (void)prefix;
    (void)rank;
    (void)size;
    (void)timeout_ms;
    (void)out;
    throw std::runtime_error("this build of selfsup has no NCCL support (see build.rs)");
#endif
  });
}

void selfsup_dist_group_free(void* group) {
  // Balances the `release()` above; the backend lives on while a graph still holds it.
  c10::intrusive_ptr<Group>::reclaim(as_group(group));
}

char* selfsup_dist_all_reduce_sum(void* group, at::Tensor* tensor) {
  return guarded([&] { all_reduce_sum(*as_group(group), *tensor); });
}

char* selfsup_dist_broadcast(void* group, at::Tensor* tensor, int root) {
  return guarded([&] {
    const Group& g = *as_group(group);
    in_place(*tensor, [&](std::vector<at::Tensor>& tensors) {
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      opts.timeout = g.timeout;
      wait(g.backend->broadcast(tensors, opts), g);
    });
  });
}

char* selfsup_dist_all_gather(void* group, at::Tensor* input, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(all_gather_cat(*as_group(group), *input)); });
}

char* selfsup_dist_gather_with_grad(void* group, at::Tensor* input, at::Tensor** out) {
  return guarded([&] {
    c10::intrusive_ptr<Group> g = c10::intrusive_ptr<Group>::unsafe_reclaim_from_nonowning(as_group(group));
    *out = new at::Tensor(GatherWithGrad::apply(*input, g));
  });
}

char* selfsup_dist_barrier(void* group) {
  return guarded([&] {
    const Group& g = *as_group(group);
    c10d::BarrierOptions opts;
    opts.timeout = g.timeout;
    wait(g.backend->barrier(opts), g);
  });
}

}  // extern "C"
