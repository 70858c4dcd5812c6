/*
 * A stand-in for libcuda.so.1, for testing the CUDA addon and runner on machines without a GPU
 * (tests/cuda-runtime.test.ts builds it with cc and points RETNETC_LIBCUDA at it).
 *
 * "Device" memory is host memory; modules keep their image; kernels do not run: each
 * cuLaunchKernel appends one line to $MOCK_CUDA_LOG describing the launch, with the parameters
 * decoded from the PTX entry's .param list (device pointers as allocation numbers "bufN+offset"
 * with the size in bytes from there to the end of the allocation and the FNV-1a 64-bit hash of
 * those bytes at the launch, 32-bit scalars as integers, f32 scalars as floats):
 *   launch NAME grid X Y Z block X Y Z shared N args buf3:1120:9a3f00c2d1e4b5a6 buf1:64:... i32:2 f32:0.5
 * cuFuncSetAttribute appends "attr NAME ATTRIBUTE VALUE", cuMemAlloc "alloc bufN BYTES". Behaviour switches:
 *   MOCK_CUDA_DEVICES=0   the driver reports no device
 *   MOCK_CUDA_INIT_FAIL=1 cuInit fails with CUDA_ERROR_NO_DEVICE
 *   a module image containing MOCK_JIT_FAIL fails to load with a JIT log
 *   MOCK_CUDA_SYNC_FAIL=1 cuCtxSynchronize fails with CUDA_ERROR_ILLEGAL_ADDRESS
 * and, as the driver does, a launch with more than 48 KiB of dynamic shared memory fails unless
 * cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) allowed it. Allocations above 1 GiB fail
 * with CUDA_ERROR_OUT_OF_MEMORY (host memory stands in for the device's).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

#define OK 0
#define ERR_INVALID_VALUE 1
#define ERR_OUT_OF_MEMORY 2
#define ERR_NO_DEVICE 100
#define ERR_INVALID_IMAGE 200
#define ERR_INVALID_PTX 218
#define ERR_NOT_FOUND 500
#define ERR_ILLEGAL_ADDRESS 700

static const char *env(const char *n) { const char *v = getenv(n); return v && *v ? v : NULL; }

CUresult cuGetErrorName(CUresult e, const char **s) {
  switch (e) {
    case OK: *s = "CUDA_SUCCESS"; break;
    case ERR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case ERR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case ERR_NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; break;
    case ERR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case ERR_INVALID_PTX: *s = "CUDA_ERROR_INVALID_PTX"; break;
    case ERR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case ERR_ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
    default: *s = NULL; return ERR_INVALID_VALUE;
  }
  return OK;
}

CUresult cuGetErrorString(CUresult e, const char **s) {
  switch (e) {
    case OK: *s = "no error"; break;
    case ERR_INVALID_VALUE: *s = "invalid argument"; break;
    case ERR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case ERR_NO_DEVICE: *s = "no CUDA-capable device is detected"; break;
    case ERR_INVALID_IMAGE: *s = "device kernel image is invalid"; break;
    case ERR_INVALID_PTX: *s = "a PTX JIT compilation failed"; break;
    case ERR_NOT_FOUND: *s = "named symbol not found"; break;
    case ERR_ILLEGAL_ADDRESS: *s = "an illegal memory access was encountered"; break;
    default: *s = NULL; return ERR_INVALID_VALUE;
  }
  return OK;
}

CUresult cuInit(unsigned flags) { (void)flags; return env("MOCK_CUDA_INIT_FAIL") ? ERR_NO_DEVICE : OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int *n) { const char *d = env("MOCK_CUDA_DEVICES"); *n = d ? atoi(d) : 1; return OK; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return OK; }
CUresult cuDeviceGetName(char *name, int len, int dev) { (void)dev; snprintf(name, (size_t)len, "Mock CUDA Device"); return OK; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  (void)dev;
  switch (attr) {
    case 1: *v = 1024; break;          /* max threads per block */
    case 5: *v = 2147483647; break;    /* max grid x */
    case 6: case 7: *v = 65535; break; /* max grid y, z */
    case 8: *v = 49152; break;         /* shared per block */
    case 10: *v = 32; break;           /* warp size */
    case 13: *v = 1980000; break;      /* clock kHz */
    case 16: *v = 132; break;          /* multiprocessors */
    case 36: *v = 3201000; break;      /* memory clock kHz */
    case 37: *v = 6144; break;         /* bus width */
    case 38: *v = 52428800; break;     /* L2 bytes */
    case 75: *v = env("MOCK_CUDA_MAJOR") ? atoi(env("MOCK_CUDA_MAJOR")) : 9; break;
    case 76: *v = env("MOCK_CUDA_MINOR") ? atoi(env("MOCK_CUDA_MINOR")) : 0; break;
    case 97: *v = 232448; break;       /* opt-in shared per block */
    default: *v = 0;
  }
  return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *b, int dev) { (void)dev; *b = (size_t)80 << 30; return OK; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *f = (size_t)79 << 30; *t = (size_t)80 << 30; return OK; }

static int ctx_dummy;
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = &ctx_dummy; return OK; }
CUresult cuCtxSetCurrent(void *ctx) { return ctx == &ctx_dummy ? OK : ERR_INVALID_VALUE; }
CUresult cuCtxSynchronize(void) { return env("MOCK_CUDA_SYNC_FAIL") ? ERR_ILLEGAL_ADDRESS : OK; }

static FILE *logf_(void) {
  const char *p = env("MOCK_CUDA_LOG");
  return p ? fopen(p, "a") : NULL;
}

/* ---- memory ---- */
#define MAX_ALLOCS 4096
static struct { char *p; size_t n; } allocs[MAX_ALLOCS];
static int nallocs;

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  if (nallocs >= MAX_ALLOCS || n > ((size_t)1 << 30)) return ERR_OUT_OF_MEMORY;
  char *m = malloc(n ? n : 1);
  if (!m) return ERR_OUT_OF_MEMORY;
  memset(m, 0xA5, n); /* like real memory: not zeroed */
  allocs[nallocs].p = m;
  allocs[nallocs].n = n;
  FILE *l = logf_();
  if (l) { fprintf(l, "alloc buf%d %zu\n", nallocs, n); fclose(l); }
  nallocs++;
  *p = (CUdeviceptr)(uintptr_t)m;
  return OK;
}
static int find_alloc(CUdeviceptr p, size_t n, size_t *off) {
  for (int i = 0; i < nallocs; i++) {
    uintptr_t b = (uintptr_t)allocs[i].p;
    if (allocs[i].p && p >= b && p + n <= b + allocs[i].n) { if (off) *off = (size_t)(p - b); return i; }
  }
  return -1;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  for (int i = 0; i < nallocs; i++) if ((uintptr_t)allocs[i].p == p) { free(allocs[i].p); allocs[i].p = NULL; return OK; }
  return ERR_INVALID_VALUE;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) {
  if (find_alloc(d, n, NULL) < 0) return ERR_INVALID_VALUE;
  memcpy((void *)(uintptr_t)d, h, n);
  return OK;
}
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) {
  if (find_alloc(d, n, NULL) < 0) return ERR_INVALID_VALUE;
  memcpy(h, (void *)(uintptr_t)d, n);
  return OK;
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
  if (find_alloc(d, n, NULL) < 0) return ERR_INVALID_VALUE;
  memset((void *)(uintptr_t)d, v, n);
  return OK;
}

/* ---- modules and functions ---- */
typedef struct { char *image; size_t size; } Module;
typedef struct { Module *mod; char name[256]; int maxdyn; } Function;

CUresult cuModuleLoadDataEx(Module **out, const void *image, unsigned n, int *opts, void **vals) {
  size_t size = 0;
  const char *img = image;
  if (memcmp(img, "\x7f" "ELF", 4) == 0) {
    /* a cubin: ELF64 header, section headers at e_shoff (8 bytes at 0x28), e_shentsize * e_shnum */
    uint64_t shoff; uint16_t shentsize, shnum;
    memcpy(&shoff, img + 0x28, 8); memcpy(&shentsize, img + 0x3A, 2); memcpy(&shnum, img + 0x3C, 2);
    size = (size_t)(shoff + (uint64_t)shentsize * shnum);
  } else {
    size = strlen(img);
    if (strstr(img, "MOCK_JIT_FAIL")) {
      for (unsigned i = 0; i < n; i++) {
        if (opts[i] == 5) snprintf((char *)vals[i], 200, "ptxas application ptx input, line 1; error   : mock JIT failure");
      }
      return ERR_INVALID_PTX;
    }
    if (!strstr(img, ".entry")) return ERR_INVALID_IMAGE;
  }
  Module *m = calloc(1, sizeof *m);
  m->image = malloc(size + 1);
  memcpy(m->image, img, size);
  m->image[size] = 0;
  m->size = size;
  *out = m;
  return OK;
}
CUresult cuModuleUnload(Module *m) { free(m->image); free(m); return OK; }

static const char *find_bytes(const char *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; i + k <= n; i++) if (memcmp(hay + i, needle, k) == 0 && (i + k == n || hay[i + k] == 0 || hay[i + k] == '(' || hay[i + k] == '\n' || hay[i + k] == ' ')) return hay + i;
  return NULL;
}

CUresult cuModuleGetFunction(Function **out, Module *m, const char *name) {
  if (!find_bytes(m->image, m->size, name)) return ERR_NOT_FOUND;
  Function *f = calloc(1, sizeof *f);
  f->mod = m;
  snprintf(f->name, sizeof f->name, "%s", name);
  *out = f;
  return OK;
}
CUresult cuFuncGetAttribute(int *v, int attr, Function *f) {
  (void)f;
  switch (attr) {
    case 0: *v = 1024; break;
    case 4: *v = 40; break;
    case 5: case 6: *v = 90; break;
    case 8: *v = 49152; break;
    default: *v = 0;
  }
  return OK;
}
CUresult cuFuncSetAttribute(Function *f, int attr, int value) {
  if (attr == 8) {
    if (value > 232448) return ERR_INVALID_VALUE;
    f->maxdyn = value;
  }
  FILE *l = logf_();
  if (l) { fprintf(l, "attr %s %d %d\n", f->name, attr, value); fclose(l); }
  return OK;
}

/* FNV-1a, 64 bits. */
static unsigned long long fnv1a(const unsigned char *p, size_t n) {
  unsigned long long h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
  return h;
}

/* Parameter sizes of an entry from its PTX: ".param .u64 NAME" -> 8, ".param .u32/.s32/.f32/.b32" -> 4. */
static int param_kinds(Function *f, char kinds[64]) {
  char pat[300];
  snprintf(pat, sizeof pat, ".entry %s(", f->name);
  const char *p = strstr(f->mod->image, pat);
  if (!p) return -1;
  const char *end = strchr(p, ')');
  int n = 0;
  for (const char *q = strstr(p, ".param"); q && q < end && n < 64; q = strstr(q + 6, ".param")) {
    const char *t = q + 6;
    while (*t == ' ') t++;
    if (!strncmp(t, ".u64", 4) || !strncmp(t, ".b64", 4) || !strncmp(t, ".s64", 4)) kinds[n++] = 'p';
    else if (!strncmp(t, ".f32", 4)) kinds[n++] = 'f';
    else kinds[n++] = 'i';
  }
  return n;
}

CUresult cuLaunchKernel(Function *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared,
                        void *stream, void **params, void **extra) {
  (void)stream; (void)extra;
  if (!gx || !gy || !gz || !bx || !by || !bz || bx * by * bz > 1024) return ERR_INVALID_VALUE;
  if (shared > 49152 && (int)shared > f->maxdyn) return ERR_INVALID_VALUE; /* needs cuFuncSetAttribute first */
  FILE *l = logf_();
  if (!l) return OK;
  fprintf(l, "launch %s grid %u %u %u block %u %u %u shared %u args", f->name, gx, gy, gz, bx, by, bz, shared);
  char kinds[64];
  int n = param_kinds(f, kinds);
  for (int i = 0; i < n; i++) {
    if (kinds[i] == 'p') {
      CUdeviceptr d; memcpy(&d, params[i], 8);
      size_t off = 0;
      int a = find_alloc(d, 1, &off);
      if (a < 0) { fprintf(l, " bad:%llx", d); continue; }
      size_t n = allocs[a].n - off;
      if (off) fprintf(l, " buf%d+%zu", a, off); else fprintf(l, " buf%d", a);
      fprintf(l, ":%zu:%016llx", n, fnv1a((const unsigned char *)allocs[a].p + off, n));
    } else if (kinds[i] == 'f') {
      float x; memcpy(&x, params[i], 4); fprintf(l, " f32:%g", (double)x);
    } else {
      int32_t x; memcpy(&x, params[i], 4); fprintf(l, " i32:%d", x);
    }
  }
  if (n < 0) fprintf(l, " (no PTX entry)");
  fprintf(l, "\n");
  fclose(l);
  return OK;
}

/* ---- events ---- */
static int event_count;
CUresult cuEventCreate(int **e, unsigned flags) { (void)flags; *e = malloc(sizeof(int)); **e = event_count++; return OK; }
CUresult cuEventRecord(int *e, void *stream) { (void)stream; *e = event_count++; return OK; }
CUresult cuEventSynchronize(int *e) { (void)e; return OK; }
CUresult cuEventElapsedTime_v2(float *ms, int *a, int *b) { *ms = (float)(*b - *a) * 0.5f; return OK; }
CUresult cuEventDestroy_v2(int *e) { free(e); return OK; }
