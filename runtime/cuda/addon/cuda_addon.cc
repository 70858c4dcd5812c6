// retnetc CUDA addon: a thin node-addon-api binding of the CUDA driver API.
//
// libcuda.so.1 is dlopen()ed at run time, so the addon builds with no CUDA headers and loads on
// machines without a driver; there `available()` says why in one line and every other call
// throws that reason. The few driver types and entry points used are declared here (values as
// in CUDA's cuda.h; the driver ABI is stable). Every failing driver call becomes a JS Error
// "cuXxx: CUDA_ERROR_NAME: the driver's error string".
//
// Handles (modules, functions, events) and device pointers are passed to JS as BigInts.
// Everything runs on the calling thread, synchronously, on device 0's primary context
// (made current on first use and on each new thread).
#include <napi.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

// ---- the driver API, declared by hand -------------------------------------------------------

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef int CUjit_option;

constexpr CUresult CUDA_SUCCESS = 0;

// CUdevice_attribute
constexpr int ATTR_MAX_THREADS_PER_BLOCK = 1;
constexpr int ATTR_MAX_GRID_DIM_X = 5;
constexpr int ATTR_MAX_GRID_DIM_Y = 6;
constexpr int ATTR_MAX_GRID_DIM_Z = 7;
constexpr int ATTR_MAX_SHARED_MEMORY_PER_BLOCK = 8;
constexpr int ATTR_WARP_SIZE = 10;
constexpr int ATTR_CLOCK_RATE = 13;
constexpr int ATTR_MULTIPROCESSOR_COUNT = 16;
constexpr int ATTR_MEMORY_CLOCK_RATE = 36;
constexpr int ATTR_GLOBAL_MEMORY_BUS_WIDTH = 37;
constexpr int ATTR_L2_CACHE_SIZE = 38;
constexpr int ATTR_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int ATTR_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;

// CUfunction_attribute
constexpr int FATTR_MAX_THREADS_PER_BLOCK = 0;
constexpr int FATTR_SHARED_SIZE_BYTES = 1;
constexpr int FATTR_LOCAL_SIZE_BYTES = 3;
constexpr int FATTR_NUM_REGS = 4;
constexpr int FATTR_PTX_VERSION = 5;
constexpr int FATTR_BINARY_VERSION = 6;
constexpr int FATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

// CUjit_option
constexpr CUjit_option JIT_INFO_LOG_BUFFER = 3;
constexpr CUjit_option JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
constexpr CUjit_option JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

struct Driver {
  void* lib = nullptr;
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*cuDeviceTotalMem_v2)(size_t*, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxSynchronize)() = nullptr;
  CUresult (*cuMemGetInfo_v2)(size_t*, size_t*) = nullptr;
  CUresult (*cuModuleLoadDataEx)(CUmodule*, const void*, unsigned, CUjit_option*, void**) = nullptr;
  CUresult (*cuModuleUnload)(CUmodule) = nullptr;
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*cuFuncGetAttribute)(int*, int, CUfunction) = nullptr;
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int) = nullptr;
  CUresult (*cuMemAlloc_v2)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*cuMemFree_v2)(CUdeviceptr) = nullptr;
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void*, size_t) = nullptr;
  CUresult (*cuMemcpyDtoH_v2)(void*, CUdeviceptr, size_t) = nullptr;
  CUresult (*cuMemsetD8_v2)(CUdeviceptr, unsigned char, size_t) = nullptr;
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void**, void**) = nullptr;
  CUresult (*cuEventCreate)(CUevent*, unsigned) = nullptr;
  CUresult (*cuEventRecord)(CUevent, CUstream) = nullptr;
  CUresult (*cuEventSynchronize)(CUevent) = nullptr;
  CUresult (*cuEventElapsedTime)(float*, CUevent, CUevent) = nullptr;
  CUresult (*cuEventDestroy_v2)(CUevent) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char**) = nullptr;
};

Driver drv;
std::once_flag loadOnce;
bool loaded = false;       // libcuda loaded, cuInit succeeded, a device exists
std::string unavailable;   // else: why, in one line
int driverVersion = 0;
CUdevice device0 = 0;
CUcontext primaryCtx = nullptr;
thread_local bool ctxCurrent = false;

std::string oneLine(std::string s) {
  for (char& c : s) if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string errorText(CUresult r) {
  const char* name = nullptr;
  const char* str = nullptr;
  if (drv.cuGetErrorName) drv.cuGetErrorName(r, &name);
  if (drv.cuGetErrorString) drv.cuGetErrorString(r, &str);
  std::string out = name ? name : ("CUDA error " + std::to_string(r));
  if (str) out += std::string(": ") + str;
  return oneLine(out);
}

template <typename F>
bool sym(F& fn, const char* name, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(drv.lib, name));
  if (!fn && missing.empty()) missing = name;
  return fn != nullptr;
}

void loadDriver() {
  const char* override = std::getenv("RETNETC_LIBCUDA");
  const char* libName = (override && *override) ? override : "libcuda.so.1";
  drv.lib = dlopen(libName, RTLD_NOW | RTLD_LOCAL);
  if (!drv.lib) {
    const char* e = dlerror();
    std::string why = e ? oneLine(e) : "";
    if (why.find("No such file") != std::string::npos || why.empty())
      unavailable = std::string("no CUDA driver: ") + libName + " not found";
    else
      unavailable = std::string("no CUDA driver: cannot load ") + libName + ": " + why;
    return;
  }
  std::string missing;
  sym(drv.cuGetErrorString, "cuGetErrorString", missing);
  sym(drv.cuGetErrorName, "cuGetErrorName", missing);
  sym(drv.cuInit, "cuInit", missing);
  sym(drv.cuDriverGetVersion, "cuDriverGetVersion", missing);
  sym(drv.cuDeviceGetCount, "cuDeviceGetCount", missing);
  sym(drv.cuDeviceGet, "cuDeviceGet", missing);
  sym(drv.cuDeviceGetName, "cuDeviceGetName", missing);
  sym(drv.cuDeviceGetAttribute, "cuDeviceGetAttribute", missing);
  sym(drv.cuDeviceTotalMem_v2, "cuDeviceTotalMem_v2", missing);
  sym(drv.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", missing);
  sym(drv.cuCtxSetCurrent, "cuCtxSetCurrent", missing);
  sym(drv.cuCtxSynchronize, "cuCtxSynchronize", missing);
  sym(drv.cuMemGetInfo_v2, "cuMemGetInfo_v2", missing);
  sym(drv.cuModuleLoadDataEx, "cuModuleLoadDataEx", missing);
  sym(drv.cuModuleUnload, "cuModuleUnload", missing);
  sym(drv.cuModuleGetFunction, "cuModuleGetFunction", missing);
  sym(drv.cuFuncGetAttribute, "cuFuncGetAttribute", missing);
  sym(drv.cuFuncSetAttribute, "cuFuncSetAttribute", missing);
  sym(drv.cuMemAlloc_v2, "cuMemAlloc_v2", missing);
  sym(drv.cuMemFree_v2, "cuMemFree_v2", missing);
  sym(drv.cuMemcpyHtoD_v2, "cuMemcpyHtoD_v2", missing);
  sym(drv.cuMemcpyDtoH_v2, "cuMemcpyDtoH_v2", missing);
  sym(drv.cuMemsetD8_v2, "cuMemsetD8_v2", missing);
  sym(drv.cuLaunchKernel, "cuLaunchKernel", missing);
  sym(drv.cuEventCreate, "cuEventCreate", missing);
  sym(drv.cuEventRecord, "cuEventRecord", missing);
  sym(drv.cuEventSynchronize, "cuEventSynchronize", missing);
  sym(drv.cuEventDestroy_v2, "cuEventDestroy_v2", missing);
  // cuEventElapsedTime_v2 (CUDA 12.8+) is what cuda.h maps the name to; older drivers lack it.
  drv.cuEventElapsedTime = reinterpret_cast<decltype(drv.cuEventElapsedTime)>(dlsym(drv.lib, "cuEventElapsedTime_v2"));
  if (!drv.cuEventElapsedTime) sym(drv.cuEventElapsedTime, "cuEventElapsedTime", missing);
  if (!missing.empty()) {
    unavailable = "CUDA driver too old: " + std::string(libName) + " lacks " + missing;
    return;
  }
  CUresult r = drv.cuInit(0);
  if (r != CUDA_SUCCESS) {
    unavailable = "no CUDA device: cuInit: " + errorText(r);
    return;
  }
  drv.cuDriverGetVersion(&driverVersion);
  int count = 0;
  r = drv.cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) {
    unavailable = "no CUDA device: cuDeviceGetCount: " + errorText(r);
    return;
  }
  if (count < 1) {
    unavailable = "no CUDA device: the driver reports none";
    return;
  }
  r = drv.cuDeviceGet(&device0, 0);
  if (r != CUDA_SUCCESS) {
    unavailable = "no CUDA device: cuDeviceGet: " + errorText(r);
    return;
  }
  loaded = true;
}

void ensureLoaded() { std::call_once(loadOnce, loadDriver); }

struct CudaError {
  std::string message;
};

void check(CUresult r, const char* call) {
  if (r != CUDA_SUCCESS) throw CudaError{std::string(call) + ": " + errorText(r)};
}

// Throws unless the driver is usable; makes device 0's primary context current on this thread.
void ready() {
  ensureLoaded();
  if (!loaded) throw CudaError{unavailable};
  if (!primaryCtx) check(drv.cuDevicePrimaryCtxRetain(&primaryCtx, device0), "cuDevicePrimaryCtxRetain");
  if (!ctxCurrent) {
    check(drv.cuCtxSetCurrent(primaryCtx), "cuCtxSetCurrent");
    ctxCurrent = true;
  }
}

// ---- JS helpers -------------------------------------------------------------------------------

[[noreturn]] void jsThrow(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F body) {
  try {
    return body();
  } catch (const CudaError& e) {
    jsThrow(info.Env(), e.message);
  }
}

uint64_t handleArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsBigInt()) jsThrow(info.Env(), std::string(what) + " must be a bigint handle");
  bool lossless = true;
  uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) jsThrow(info.Env(), std::string(what) + " is not a valid handle");
  return v;
}

Napi::BigInt handleOut(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

uint32_t uintArg(const Napi::CallbackInfo& info, const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) jsThrow(info.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint64_t>(d)))
    jsThrow(info.Env(), std::string(what) + " must be a non-negative 32-bit integer, got " + std::to_string(d));
  return static_cast<uint32_t>(d);
}

// The bytes of a Buffer, TypedArray or ArrayBuffer argument.
void bytesArg(const Napi::CallbackInfo& info, size_t i, const char* what, void** data, size_t* size) {
  if (info.Length() <= i) jsThrow(info.Env(), std::string(what) + " is missing");
  Napi::Value v = info[i];
  if (v.IsTypedArray()) {
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    *data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    *size = t.ByteLength();
  } else if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer b = v.As<Napi::ArrayBuffer>();
    *data = b.Data();
    *size = b.ByteLength();
  } else if (v.IsDataView()) {
    Napi::DataView d = v.As<Napi::DataView>();
    *data = static_cast<uint8_t*>(d.ArrayBuffer().Data()) + d.ByteOffset();
    *size = d.ByteLength();
  } else {
    jsThrow(info.Env(), std::string(what) + " must be a Buffer, TypedArray or ArrayBuffer");
  }
}

// ---- exports ----------------------------------------------------------------------------------

Napi::Value Available(const Napi::CallbackInfo& info) {
  ensureLoaded();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("ok", Napi::Boolean::New(info.Env(), loaded));
  if (!loaded) o.Set("reason", Napi::String::New(info.Env(), unavailable));
  return o;
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ready();
    Napi::Env env = info.Env();
    char name[256] = {0};
    check(drv.cuDeviceGetName(name, sizeof(name) - 1, device0), "cuDeviceGetName");
    auto attr = [&](int a) {
      int v = 0;
      check(drv.cuDeviceGetAttribute(&v, a, device0), "cuDeviceGetAttribute");
      return v;
    };
    size_t total = 0;
    check(drv.cuDeviceTotalMem_v2(&total, device0), "cuDeviceTotalMem");
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, name));
    o.Set("major", attr(ATTR_COMPUTE_CAPABILITY_MAJOR));
    o.Set("minor", attr(ATTR_COMPUTE_CAPABILITY_MINOR));
    o.Set("multiprocessors", attr(ATTR_MULTIPROCESSOR_COUNT));
    o.Set("warpSize", attr(ATTR_WARP_SIZE));
    o.Set("maxThreadsPerBlock", attr(ATTR_MAX_THREADS_PER_BLOCK));
    Napi::Array grid = Napi::Array::New(env, 3);
    grid.Set(0u, attr(ATTR_MAX_GRID_DIM_X));
    grid.Set(1u, attr(ATTR_MAX_GRID_DIM_Y));
    grid.Set(2u, attr(ATTR_MAX_GRID_DIM_Z));
    o.Set("maxGrid", grid);
    o.Set("maxSharedPerBlock", attr(ATTR_MAX_SHARED_MEMORY_PER_BLOCK));
    o.Set("maxSharedPerBlockOptin", attr(ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN));
    o.Set("clockKHz", attr(ATTR_CLOCK_RATE));
    o.Set("memoryClockKHz", attr(ATTR_MEMORY_CLOCK_RATE));
    o.Set("memoryBusWidth", attr(ATTR_GLOBAL_MEMORY_BUS_WIDTH));
    o.Set("l2Bytes", attr(ATTR_L2_CACHE_SIZE));
    o.Set("totalMemory", Napi::Number::New(env, static_cast<double>(total)));
    o.Set("driverVersion", driverVersion);
    return o;
  });
}

Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ready();
    size_t freeB = 0, totalB = 0;
    check(drv.cuMemGetInfo_v2(&freeB, &totalB), "cuMemGetInfo");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("free", Napi::Number::New(info.Env(), static_cast<double>(freeB)));
    o.Set("total", Napi::Number::New(info.Env(), static_cast<double>(totalB)));
    return o;
  });
}

// loadModule(image: Buffer) -> module handle. PTX must be NUL-terminated: a copy with a NUL is
// passed when the image does not end in one (a cubin, an ELF file, is passed as it is).
Napi::Value LoadModule(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    void* data = nullptr;
    size_t size = 0;
    bytesArg(info, 0, "module image", &data, &size);
    ready();
    std::vector<char> copy;
    const void* image = data;
    const bool elf = size >= 4 && std::memcmp(data, "\x7f" "ELF", 4) == 0;
    if (!elf && (size == 0 || static_cast<const char*>(data)[size - 1] != '\0')) {
      copy.assign(static_cast<const char*>(data), static_cast<const char*>(data) + size);
      copy.push_back('\0');
      image = copy.data();
    }
    std::vector<char> errLog(16384, 0), infoLog(4096, 0);
    CUjit_option opts[4] = {JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES, JIT_INFO_LOG_BUFFER, JIT_INFO_LOG_BUFFER_SIZE_BYTES};
    void* vals[4] = {errLog.data(), reinterpret_cast<void*>(static_cast<uintptr_t>(errLog.size() - 1)), infoLog.data(),
                     reinterpret_cast<void*>(static_cast<uintptr_t>(infoLog.size() - 1))};
    CUmodule mod = nullptr;
    CUresult r = drv.cuModuleLoadDataEx(&mod, image, 4, opts, vals);
    if (r != CUDA_SUCCESS) {
      std::string msg = "cuModuleLoadDataEx: " + errorText(r);
      std::string log = oneLine(errLog.data());
      if (!log.empty()) msg += " (JIT: " + log.substr(0, 2000) + ")";
      throw CudaError{msg};
    }
    return handleOut(info.Env(), reinterpret_cast<uint64_t>(mod));
  });
}

Napi::Value UnloadModule(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t m = handleArg(info, 0, "module");
    ready();
    check(drv.cuModuleUnload(reinterpret_cast<CUmodule>(m)), "cuModuleUnload");
    return info.Env().Undefined();
  });
}

Napi::Value GetFunction(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t m = handleArg(info, 0, "module");
    if (info.Length() < 2 || !info[1].IsString()) jsThrow(info.Env(), "function name must be a string");
    std::string name = info[1].As<Napi::String>().Utf8Value();
    ready();
    CUfunction f = nullptr;
    CUresult r = drv.cuModuleGetFunction(&f, reinterpret_cast<CUmodule>(m), name.c_str());
    if (r != CUDA_SUCCESS) throw CudaError{"cuModuleGetFunction(" + name + "): " + errorText(r)};
    return handleOut(info.Env(), reinterpret_cast<uint64_t>(f));
  });
}

Napi::Value FuncAttributes(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t f = handleArg(info, 0, "function");
    ready();
    auto attr = [&](int a) {
      int v = 0;
      check(drv.cuFuncGetAttribute(&v, a, reinterpret_cast<CUfunction>(f)), "cuFuncGetAttribute");
      return v;
    };
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("maxThreadsPerBlock", attr(FATTR_MAX_THREADS_PER_BLOCK));
    o.Set("staticSharedBytes", attr(FATTR_SHARED_SIZE_BYTES));
    o.Set("localBytes", attr(FATTR_LOCAL_SIZE_BYTES));
    o.Set("registers", attr(FATTR_NUM_REGS));
    o.Set("ptxVersion", attr(FATTR_PTX_VERSION));
    o.Set("binaryVersion", attr(FATTR_BINARY_VERSION));
    o.Set("maxDynamicSharedBytes", attr(FATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES));
    return o;
  });
}

// setMaxDynamicShared(fn, bytes): needed before a launch with more than 48 KiB of dynamic shared memory.
Napi::Value SetMaxDynamicShared(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t f = handleArg(info, 0, "function");
    uint32_t bytes = uintArg(info, info.Length() > 1 ? info[1] : info.Env().Undefined(), "bytes");
    ready();
    check(drv.cuFuncSetAttribute(reinterpret_cast<CUfunction>(f), FATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes)),
          "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
    return info.Env().Undefined();
  });
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsNumber()) jsThrow(info.Env(), "alloc(bytes): bytes must be a number");
    double d = info[0].As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d < 9007199254740992.0) || d != static_cast<double>(static_cast<uint64_t>(d)))
      jsThrow(info.Env(), "alloc(bytes): bytes must be a non-negative integer");
    ready();
    CUdeviceptr p = 0;
    size_t bytes = static_cast<size_t>(d);
    CUresult r = drv.cuMemAlloc_v2(&p, bytes == 0 ? 4 : bytes);
    if (r != CUDA_SUCCESS) throw CudaError{"cuMemAlloc(" + std::to_string(bytes) + " bytes): " + errorText(r)};
    return handleOut(info.Env(), p);
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t p = handleArg(info, 0, "device pointer");
    ready();
    check(drv.cuMemFree_v2(p), "cuMemFree");
    return info.Env().Undefined();
  });
}

// memsetZero(ptr, bytes)
Napi::Value MemsetZero(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t p = handleArg(info, 0, "device pointer");
    if (info.Length() < 2 || !info[1].IsNumber()) jsThrow(info.Env(), "memsetZero(ptr, bytes): bytes must be a number");
    size_t bytes = static_cast<size_t>(info[1].As<Napi::Number>().DoubleValue());
    ready();
    if (bytes) check(drv.cuMemsetD8_v2(p, 0, bytes), "cuMemsetD8");
    return info.Env().Undefined();
  });
}

// upload(ptr, data): copies all of data's bytes to ptr.
Napi::Value Upload(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t p = handleArg(info, 0, "device pointer");
    void* data = nullptr;
    size_t size = 0;
    bytesArg(info, 1, "upload data", &data, &size);
    ready();
    if (size) check(drv.cuMemcpyHtoD_v2(p, data, size), "cuMemcpyHtoD");
    return info.Env().Undefined();
  });
}

// download(ptr, dest): fills all of dest's bytes from ptr (synchronous).
Napi::Value Download(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t p = handleArg(info, 0, "device pointer");
    void* data = nullptr;
    size_t size = 0;
    bytesArg(info, 1, "download destination", &data, &size);
    ready();
    if (size) check(drv.cuMemcpyDtoH_v2(data, p, size), "cuMemcpyDtoH");
    return info.Env().Undefined();
  });
}

// launch(fn, grid[3], block[3], dynamicSharedBytes, args[]): args are bigint device pointers
// (8-byte parameters) or {i32: n} / {f32: x} scalars (4-byte parameters), in parameter order.
Napi::Value Launch(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    uint64_t f = handleArg(info, 0, "function");
    auto dims = [&](size_t i, const char* what, uint32_t out[3]) {
      if (info.Length() <= i || !info[i].IsArray()) jsThrow(env, std::string(what) + " must be an array of 3 numbers");
      Napi::Array a = info[i].As<Napi::Array>();
      if (a.Length() != 3) jsThrow(env, std::string(what) + " must be an array of 3 numbers");
      for (uint32_t k = 0; k < 3; k++) out[k] = uintArg(info, a.Get(k), what);
    };
    uint32_t grid[3], block[3];
    dims(1, "grid", grid);
    dims(2, "block", block);
    uint32_t shared = uintArg(info, info.Length() > 3 ? info[3] : env.Undefined(), "dynamicSharedBytes");
    if (info.Length() <= 4 || !info[4].IsArray()) jsThrow(env, "args must be an array");
    Napi::Array args = info[4].As<Napi::Array>();
    const uint32_t n = args.Length();
    std::vector<uint64_t> storage(n);  // 8 bytes per parameter, enough for pointers and scalars
    std::vector<void*> params(n);
    for (uint32_t k = 0; k < n; k++) {
      Napi::Value a = args.Get(k);
      if (a.IsBigInt()) {
        bool lossless = true;
        storage[k] = a.As<Napi::BigInt>().Uint64Value(&lossless);
        if (!lossless) jsThrow(env, "args[" + std::to_string(k) + "] is not a valid device pointer");
      } else if (a.IsObject()) {
        Napi::Object o = a.As<Napi::Object>();
        if (o.Has("i32")) {
          Napi::Value v = o.Get("i32");
          if (!v.IsNumber()) jsThrow(env, "args[" + std::to_string(k) + "].i32 must be a number");
          int32_t x = v.As<Napi::Number>().Int32Value();
          std::memcpy(&storage[k], &x, sizeof x);
        } else if (o.Has("f32")) {
          Napi::Value v = o.Get("f32");
          if (!v.IsNumber()) jsThrow(env, "args[" + std::to_string(k) + "].f32 must be a number");
          float x = v.As<Napi::Number>().FloatValue();
          std::memcpy(&storage[k], &x, sizeof x);
        } else {
          jsThrow(env, "args[" + std::to_string(k) + "] must be a bigint pointer, {i32} or {f32}");
        }
      } else {
        jsThrow(env, "args[" + std::to_string(k) + "] must be a bigint pointer, {i32} or {f32}");
      }
      params[k] = &storage[k];
    }
    ready();
    CUresult r = drv.cuLaunchKernel(reinterpret_cast<CUfunction>(f), grid[0], grid[1], grid[2], block[0], block[1], block[2], shared,
                                    nullptr, n ? params.data() : nullptr, nullptr);
    if (r != CUDA_SUCCESS) {
      throw CudaError{"cuLaunchKernel(grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) + "x" + std::to_string(grid[2]) +
                      ", block " + std::to_string(block[0]) + "x" + std::to_string(block[1]) + "x" + std::to_string(block[2]) +
                      ", shared " + std::to_string(shared) + "): " + errorText(r)};
    }
    return env.Undefined();
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ready();
    check(drv.cuCtxSynchronize(), "cuCtxSynchronize");
    return info.Env().Undefined();
  });
}

Napi::Value EventCreate(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ready();
    CUevent e = nullptr;
    check(drv.cuEventCreate(&e, 0), "cuEventCreate");
    return handleOut(info.Env(), reinterpret_cast<uint64_t>(e));
  });
}

Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t e = handleArg(info, 0, "event");
    ready();
    check(drv.cuEventRecord(reinterpret_cast<CUevent>(e), nullptr), "cuEventRecord");
    return info.Env().Undefined();
  });
}

Napi::Value EventSynchronize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t e = handleArg(info, 0, "event");
    ready();
    check(drv.cuEventSynchronize(reinterpret_cast<CUevent>(e)), "cuEventSynchronize");
    return info.Env().Undefined();
  });
}

// eventElapsed(start, end) -> milliseconds between two recorded (and completed) events.
Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t a = handleArg(info, 0, "start event");
    uint64_t b = handleArg(info, 1, "end event");
    ready();
    float ms = 0;
    check(drv.cuEventElapsedTime(&ms, reinterpret_cast<CUevent>(a), reinterpret_cast<CUevent>(b)), "cuEventElapsedTime");
    return Napi::Number::New(info.Env(), ms);
  });
}

Napi::Value EventDestroy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    uint64_t e = handleArg(info, 0, "event");
    ready();
    check(drv.cuEventDestroy_v2(reinterpret_cast<CUevent>(e)), "cuEventDestroy");
    return info.Env().Undefined();
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("available", Napi::Function::New(env, Available, "available"));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo, "deviceInfo"));
  exports.Set("memInfo", Napi::Function::New(env, MemInfo, "memInfo"));
  exports.Set("loadModule", Napi::Function::New(env, LoadModule, "loadModule"));
  exports.Set("unloadModule", Napi::Function::New(env, UnloadModule, "unloadModule"));
  exports.Set("getFunction", Napi::Function::New(env, GetFunction, "getFunction"));
  exports.Set("funcAttributes", Napi::Function::New(env, FuncAttributes, "funcAttributes"));
  exports.Set("setMaxDynamicShared", Napi::Function::New(env, SetMaxDynamicShared, "setMaxDynamicShared"));
  exports.Set("alloc", Napi::Function::New(env, Alloc, "alloc"));
  exports.Set("free", Napi::Function::New(env, Free, "free"));
  exports.Set("memsetZero", Napi::Function::New(env, MemsetZero, "memsetZero"));
  exports.Set("upload", Napi::Function::New(env, Upload, "upload"));
  exports.Set("download", Napi::Function::New(env, Download, "download"));
  exports.Set("launch", Napi::Function::New(env, Launch, "launch"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("eventCreate", Napi::Function::New(env, EventCreate, "eventCreate"));
  exports.Set("eventRecord", Napi::Function::New(env, EventRecord, "eventRecord"));
  exports.Set("eventSynchronize", Napi::Function::New(env, EventSynchronize, "eventSynchronize"));
  exports.Set("eventElapsed", Napi::Function::New(env, EventElapsed, "eventElapsed"));
  exports.Set("eventDestroy", Napi::Function::New(env, EventDestroy, "eventDestroy"));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(retnetc_cuda, Init)
