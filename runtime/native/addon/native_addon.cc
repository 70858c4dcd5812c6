// The native target's addon (node-addon-api): dlopen()s shared libraries compiled from kernel IR
// (targets/native/compile.ts) and runs their kernel functions over a launch's workgroups on a
// pool of threads (one per hardware thread; RETNETC_NATIVE_THREADS overrides), the calling thread
// among them. A kernel function has the signature of targets/native/printer.ts:
//   void k(void *const *bufs, const int64_t *lens, const int32_t *scalars, const int32_t *grid,
//          int64_t begin, int64_t end, unsigned char *scratch, int32_t *err)
// and runs workgroups [begin, end). Each thread has its own scratch (the workgroup arrays).
//
// Exports:
//   open(path) -> library id         (dlopen RTLD_NOW | RTLD_LOCAL; throws the dlerror line)
//   symbol(library, name) -> kernel id
//   run(kernel, buffers: TypedArray[], scalars: Int32Array, grid: Int32Array(3),
//       scratchBytes, err: Int32Array(8))   synchronous; err is the kernel's error record
//   runList(tensors: TypedArray[], code: Int32Array, err: Int32Array(8), times?: Float64Array)
//       -> index of the launch whose kernel reported an error, else -1. A whole launch list in
//       one call (runtime/native/launch-list.ts): each launch is
//         kernel, nbuf, nscalar, grid x, y, z, scratchBytes, nbuf tensor indices, nscalar scalars
//       (scalars as i32 bits); a buffer is tensors[index] (its data pointer and element count,
//       resolved once per call). Stops at the first launch that reports an error. With `times`,
//       times[i] is launch i's milliseconds (the per kernel profile).
//   threads() -> number of threads a run uses
//   abiVersion
#include <napi.h>
#include <dlfcn.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int ABI_VERSION = 1;

using KernelFn = void (*)(void *const *, const int64_t *, const int32_t *, const int32_t *, int64_t, int64_t, unsigned char *, int32_t *);

std::vector<void *> libraries;
std::vector<KernelFn> kernels;

struct Scratch {
  unsigned char *p = nullptr;
  size_t n = 0;
  unsigned char *get(size_t bytes) {
    if (bytes > n) {
      std::free(p);
      n = (bytes + 4095) / 4096 * 4096;
      p = static_cast<unsigned char *>(std::aligned_alloc(64, n));
      if (!p) n = 0;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};

struct Job {
  KernelFn fn;
  void *const *bufs;
  const int64_t *lens;
  const int32_t *scalars;
  const int32_t *grid;
  int64_t total;
  int64_t chunk;
  size_t scratch;
  int32_t *err;
};

class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int i = 1; i < n_; i++) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto &t : workers_) t.join();
  }
  int size() const { return n_; }

  /** Runs the job on all threads; returns false when scratch memory could not be had. */
  bool run(const Job &job) {
    // One workgroup (a decode step's kernels, scalars): run it here. Waking the other threads and
    // waiting for them cost more than the work (a scalar store measured 0.3 ms per launch).
    // Idle workers read job_ only after gen_ changes, so writing it here is safe.
    if (job.total == 1 || workers_.empty()) {
      job_ = job;
      next_.store(0);
      failed_.store(false);
      work();
      return !failed_.load();
    }
    {
      std::lock_guard<std::mutex> l(m_);
      job_ = job;
      next_.store(0);
      active_.store(static_cast<int>(workers_.size()));
      failed_.store(false);
      gen_.fetch_add(1);  // publishes job_ to spinning workers (release)
    }
    cv_.notify_all();
    work();
    // The others finish about when this thread does: spin before sleeping on done_.
    if (!spinUntil([this] { return active_.load() == 0; })) {
      std::unique_lock<std::mutex> l(m_);
      done_.wait(l, [this] { return active_.load() == 0; });
    }
    return !failed_.load();
  }

 private:
  // Spin-then-block, as OpenMP runtimes do: a launch list's next launch follows the last within
  // microseconds, while waking a thread blocked on a futex costs tens of microseconds on a VM
  // (the idle vCPU halts): 220 launches of a training step paid that twice each. Workers spin
  // for RETNETC_NATIVE_SPIN_US (default 200) after a job, then block; 0 never spins.
  template <class Pred>
  bool spinUntil(Pred done) const {
    if (spinUs_ <= 0) return done();
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spinUs_);
    for (int i = 0;; i++) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return done();
    }
  }
  void work() {
    thread_local Scratch scratch;
    const Job job = job_;
    unsigned char *s = job.scratch ? scratch.get(job.scratch) : nullptr;
    if (job.scratch && !s) { failed_.store(true); return; }
    for (;;) {
      const int64_t b = next_.fetch_add(job.chunk);
      if (b >= job.total) break;
      const int64_t e = b + job.chunk < job.total ? b + job.chunk : job.total;
      job.fn(job.bufs, job.lens, job.scalars, job.grid, b, e, s, job.err);
    }
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      if (!spinUntil([&] { return stop_.load() || gen_.load() != seen; })) {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return stop_.load() || gen_.load() != seen; });
      }
      if (stop_.load()) return;
      seen = gen_.load();
      work();
      if (active_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> l(m_);
        done_.notify_all();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  Job job_{};
  std::atomic<int64_t> next_{0};
  std::atomic<bool> failed_{false};
  std::atomic<int> active_{0};
  std::atomic<uint64_t> gen_{0};
  std::atomic<bool> stop_{false};
  const int spinUs_ = [] {
    const char *e = std::getenv("RETNETC_NATIVE_SPIN_US");
    return e && *e ? std::atoi(e) : 200;
  }();
};

Pool *pool() {
  static Pool *p = [] {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (const char *e = std::getenv("RETNETC_NATIVE_THREADS")) {
      const int v = std::atoi(e);
      if (v > 0) n = v;
    }
    if (n < 1) n = 1;
    return new Pool(n);  // never destroyed: its threads live as long as the process
  }();
  return p;
}

void *viewData(const Napi::Value &v, int64_t *elements, const char *what) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a typed array");
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (elements) *elements = static_cast<int64_t>(t.ElementLength());
  return static_cast<unsigned char *>(t.ArrayBuffer().Data()) + t.ByteOffset();
}

// Large tensors are mostly fresh outputs (zero pages V8 has not touched): asking for
// transparent huge pages over their 2 MiB-aligned interior lets the kernels that first write
// them fault 2 MiB at a time instead of 4 KiB (on Linux with THP in 'madvise' mode; advice only,
// pages already there are left as they are).
void adviseHugePages(void *data, int64_t bytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t HUGE = uintptr_t{1} << 21;
  if (bytes < static_cast<int64_t>(4 * HUGE)) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(data), from = (a + HUGE - 1) & ~(HUGE - 1), to = (a + static_cast<uintptr_t>(bytes)) & ~(HUGE - 1);
  if (to > from) madvise(reinterpret_cast<void *>(from), to - from, MADV_HUGEPAGE);
#else
  (void)data; (void)bytes;
#endif
}

Napi::Value Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "open(path)");
  const std::string path = info[0].As<Napi::String>();
  void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    throw Napi::Error::New(env, std::string("dlopen: ") + (e ? e : path));
  }
  libraries.push_back(h);
  return Napi::Number::New(env, static_cast<double>(libraries.size() - 1));
}

Napi::Value Symbol(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) throw Napi::TypeError::New(env, "symbol(library, name)");
  const uint32_t lib = info[0].As<Napi::Number>().Uint32Value();
  if (lib >= libraries.size()) throw Napi::RangeError::New(env, "symbol: unknown library");
  const std::string name = info[1].As<Napi::String>();
  dlerror();
  void *s = dlsym(libraries[lib], name.c_str());
  if (!s) throw Napi::Error::New(env, "dlsym: no symbol " + name);
  kernels.push_back(reinterpret_cast<KernelFn>(s));
  return Napi::Number::New(env, static_cast<double>(kernels.size() - 1));
}

Napi::Value Run(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsNumber() || !info[1].IsArray() || !info[4].IsNumber()) {
    throw Napi::TypeError::New(env, "run(kernel, buffers, scalars, grid, scratchBytes, err)");
  }
  const uint32_t k = info[0].As<Napi::Number>().Uint32Value();
  if (k >= kernels.size()) throw Napi::RangeError::New(env, "run: unknown kernel");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<void *> bufs(arr.Length());
  std::vector<int64_t> lens(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) bufs[i] = viewData(arr.Get(i), &lens[i], "a buffer");
  int64_t ns = 0, ng = 0, ne = 0;
  const int32_t *scalars = static_cast<const int32_t *>(viewData(info[2], &ns, "scalars"));
  const int32_t *grid = static_cast<const int32_t *>(viewData(info[3], &ng, "grid"));
  int32_t *err = static_cast<int32_t *>(viewData(info[5], &ne, "err"));
  if (ng < 3 || ne < 8) throw Napi::RangeError::New(env, "run: grid needs 3 and err 8 elements");
  const double scratch = info[4].As<Napi::Number>().DoubleValue();
  const int64_t total = static_cast<int64_t>(grid[0]) * grid[1] * grid[2];
  if (grid[0] < 0 || grid[1] < 0 || grid[2] < 0) throw Napi::RangeError::New(env, "run: negative grid");
  if (total == 0) return env.Undefined();
  Pool *p = pool();
  const int64_t parts = static_cast<int64_t>(p->size()) * 8;
  int64_t chunk = (total + parts - 1) / parts;
  if (chunk < 1) chunk = 1;
  Job job{kernels[k], bufs.data(), lens.data(), scalars, grid, total, chunk, static_cast<size_t>(scratch), err};
  if (!p->run(job)) throw Napi::Error::New(env, "native target: out of memory for workgroup arrays");
  return env.Undefined();
}

Napi::Value RunList(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArray()) throw Napi::TypeError::New(env, "runList(tensors, code, err, times?)");
  Napi::Array arr = info[0].As<Napi::Array>();
  const uint32_t nt = arr.Length();
  std::vector<void *> ptrs(nt);
  std::vector<int64_t> lens(nt);
  for (uint32_t i = 0; i < nt; i++) {
    const Napi::Value t = arr.Get(i);
    ptrs[i] = viewData(t, &lens[i], "a tensor");
    adviseHugePages(ptrs[i], static_cast<int64_t>(t.As<Napi::TypedArray>().ByteLength()));
  }
  int64_t nc = 0, ne = 0, nm = 0;
  const int32_t *code = static_cast<const int32_t *>(viewData(info[1], &nc, "code"));
  int32_t *err = static_cast<int32_t *>(viewData(info[2], &ne, "err"));
  if (ne < 8) throw Napi::RangeError::New(env, "runList: err needs 8 elements");
  double *times = nullptr;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) throw Napi::TypeError::New(env, "runList: times must be a Float64Array");
    times = static_cast<double *>(viewData(info[3], &nm, "times"));
  }
  // Check the whole list before running any of it: a bad index must not become a wild pointer.
  int64_t launches = 0;
  for (int64_t at = 0; at < nc; launches++) {
    if (at + 7 > nc) throw Napi::RangeError::New(env, "runList: truncated launch");
    const int32_t k = code[at], nb = code[at + 1], ns = code[at + 2];
    if (k < 0 || static_cast<size_t>(k) >= kernels.size()) throw Napi::RangeError::New(env, "runList: unknown kernel");
    if (nb < 0 || ns < 0 || code[at + 3] < 0 || code[at + 4] < 0 || code[at + 5] < 0 || code[at + 6] < 0) throw Napi::RangeError::New(env, "runList: negative count, grid or scratch");
    if (at + 7 + nb + ns > nc) throw Napi::RangeError::New(env, "runList: truncated launch");
    for (int32_t j = 0; j < nb; j++) {
      const int32_t t = code[at + 7 + j];
      if (t < 0 || static_cast<uint32_t>(t) >= nt) throw Napi::RangeError::New(env, "runList: tensor index out of range");
    }
    at += 7 + nb + ns;
  }
  if (times && nm < launches) throw Napi::RangeError::New(env, "runList: times needs one element per launch");
  Pool *p = pool();
  const int64_t parts = static_cast<int64_t>(p->size()) * 8;
  std::vector<void *> bufs;
  std::vector<int64_t> blens;
  int64_t i = 0;
  for (int64_t at = 0; at < nc; i++) {
    const int32_t k = code[at], nb = code[at + 1], ns = code[at + 2];
    const int32_t *grid = code + at + 3;
    const size_t scratch = static_cast<size_t>(code[at + 6]);
    const int32_t *idx = code + at + 7;
    const int32_t *scalars = code + at + 7 + nb;
    at += 7 + nb + ns;
    const auto t0 = times ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    const int64_t total = static_cast<int64_t>(grid[0]) * grid[1] * grid[2];
    if (total > 0) {
      bufs.resize(nb > 0 ? nb : 1);
      blens.resize(nb > 0 ? nb : 1);
      for (int32_t j = 0; j < nb; j++) { bufs[j] = ptrs[idx[j]]; blens[j] = lens[idx[j]]; }
      int64_t chunk = (total + parts - 1) / parts;
      if (chunk < 1) chunk = 1;
      Job job{kernels[k], bufs.data(), blens.data(), scalars, grid, total, chunk, scratch, err};
      if (!p->run(job)) throw Napi::Error::New(env, "native target: out of memory for workgroup arrays");
    }
    if (times) times[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (err[0]) return Napi::Number::New(env, static_cast<double>(i));
  }
  return Napi::Number::New(env, -1);
}

Napi::Value Threads(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), pool()->size()); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open));
  exports.Set("symbol", Napi::Function::New(env, Symbol));
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("runList", Napi::Function::New(env, RunList));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("abiVersion", Napi::Number::New(env, ABI_VERSION));
  return exports;
}

}  // namespace

NODE_API_MODULE(retnetc_native, Init)
