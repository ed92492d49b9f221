/*
 * edge_runner.c: runs an etch edge artifact without a TVM runtime (see backends/tvm/edge.py).
 *
 *   edge_runner MODEL.so PLAN.txt CONSTS.bin INPUTS.bin OUTPUTS.bin
 *
 * MODEL.so is the artifact's own library (the one deployed over TVM RPC). Its kernels are
 * TVM-FFI "safe call" functions, exported as __tvm_ffi_<name>. This program plays the part
 * of the TVM runtime for them:
 *   - it defines TVMFFIErrorSetRaisedFromCStrParts (the one TVM symbol the library leaves
 *     undefined; linked with -rdynamic so dlopen resolves it from here);
 *   - it fills the library's context pointers (__TVMBackendAllocWorkspace, ...): workspace
 *     from posix_memalign, parallel launches run serially as one task (what TVM's own
 *     thread pool does with one thread), and calls into other packed functions fail;
 *   - it replays PLAN, the Relax VM's call sequence extracted at compile time: static
 *     storage, tensors on it, constants, reshapes as views, kernel calls in order.
 * Inputs are read from INPUTS.bin at the offsets PLAN names; outputs are written to
 * OUTPUTS.bin back to back, in order. Exit status: 0 ok, 1 a kernel failed, 2 bad usage
 * or plan, 3 the library could not be loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tvm/ffi/c_api.h>

enum { kMaxTensors = 8192, kMaxStorage = 8192, kMaxDims = 16, kMaxArgs = 256, kAlign = 64 };

typedef struct {
  DLTensor t;
  int64_t shape[kMaxDims];
} Tensor;

typedef struct {
  void* sync_handle;
  int32_t num_task;
} ParallelEnv;  /* TVMParallelGroupEnv, tvm/runtime/c_backend_api.h */

typedef int (*ParallelLambda)(int task_id, ParallelEnv* env, void* cdata);

static Tensor g_tensors[kMaxTensors];
static char* g_storage[kMaxStorage];
static uint64_t g_storage_size[kMaxStorage];
static char g_error[8192];

static void Fail(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("edge_runner: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(code);
}

static void* AlignedAlloc(uint64_t nbytes) {
  void* p = NULL;
  if (posix_memalign(&p, kAlign, nbytes ? nbytes : 1) != 0) Fail(1, "out of memory (%llu bytes)",
                                                                  (unsigned long long)nbytes);
  return p;
}

/* ---- what the generated code calls ---- */

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  snprintf(g_error, sizeof(g_error), "%s: ", kind);
  for (int32_t i = 0; i < n; ++i) strncat(g_error, parts[i], sizeof(g_error) - strlen(g_error) - 1);
}

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  TVMFFIErrorSetRaisedFromCStrParts(kind, &message, 1);
}

static void* AllocWorkspace(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  (void)device_type, (void)device_id, (void)code, (void)bits;
  return AlignedAlloc(nbytes);
}

static int FreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  free(ptr);
  return 0;
}

/* Serial: one task does all the work, as TVM's runtime does with one thread. */
static int ParallelLaunch(ParallelLambda f, void* cdata, int num_task) {
  (void)num_task;
  ParallelEnv env = {NULL, 1};
  return f(0, &env, cdata);
}

static int ParallelBarrier(int task_id, ParallelEnv* env) {
  (void)task_id, (void)env;
  return 0;
}

static int ModLookupFromImports(void* ctx, const char* name, void** out) {
  (void)ctx, (void)out;
  snprintf(g_error, sizeof(g_error), "the kernel calls packed function %s, which the standalone "
           "runner does not provide; run this artifact over --rpc", name);
  return -1;
}

static int FunctionCall(void* f, TVMFFIAny* args, int32_t n, TVMFFIAny* result) {
  (void)f, (void)args, (void)n, (void)result;
  snprintf(g_error, sizeof(g_error), "the kernel calls a packed function, which the standalone "
           "runner does not provide; run this artifact over --rpc");
  return -1;
}

static int HandleInitOnce(void** handle, int (*init)(void** result)) {
  return *handle ? 0 : init(handle);
}

static void SetContext(void* lib) {
  static const struct { const char* name; void* fn; } slots[] = {
      {"__TVMBackendAllocWorkspace", (void*)AllocWorkspace},
      {"__TVMBackendFreeWorkspace", (void*)FreeWorkspace},
      {"__TVMBackendParallelLaunch", (void*)ParallelLaunch},
      {"__TVMBackendParallelBarrier", (void*)ParallelBarrier},
      {"__TVMFFIErrorSetRaisedFromCStr", (void*)TVMFFIErrorSetRaisedFromCStr},
      {"__TVMFFIEnvModLookupFromImports", (void*)ModLookupFromImports},
      {"__TVMFFIFunctionCall", (void*)FunctionCall},
      {"__TVMFFIHandleInitOnce", (void*)HandleInitOnce},
  };
  for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); ++i) {
    void** slot = (void**)dlsym(lib, slots[i].name);
    if (slot) *slot = slots[i].fn;
  }
}

/* ---- the plan ---- */

static char* ReadFile(const char* path, uint64_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) Fail(2, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = AlignedAlloc((uint64_t)n);
  if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) Fail(2, "cannot read %s", path);
  fclose(f);
  *size = (uint64_t)n;
  return buf;
}

static long long NextInt(char** cursor, int line) {
  char* end = NULL;
  long long v = strtoll(*cursor, &end, 10);
  if (end == *cursor) Fail(2, "plan line %d: expected an integer at '%.20s'", line, *cursor);
  *cursor = end;
  return v;
}

static uint64_t NumBytes(const DLTensor* t) {
  uint64_t n = ((uint64_t)t->dtype.bits * t->dtype.lanes + 7) / 8;
  for (int i = 0; i < t->ndim; ++i) n *= (uint64_t)t->shape[i];
  return n;
}

static int TensorId(char** cursor, int line) {
  long long id = NextInt(cursor, line);
  if (id < 0 || id >= kMaxTensors) Fail(2, "plan line %d: tensor id %lld out of range", line, id);
  return (int)id;
}

/* Reads "CODE BITS LANES NDIM D0 D1 ..." into tensor `id`; data is set by the caller. */
static DLTensor* ReadTensor(int id, char** cursor, int line) {
  Tensor* t = &g_tensors[id];
  memset(t, 0, sizeof(*t));
  t->t.device.device_type = kDLCPU;
  t->t.dtype.code = (uint8_t)NextInt(cursor, line);
  t->t.dtype.bits = (uint8_t)NextInt(cursor, line);
  t->t.dtype.lanes = (uint16_t)NextInt(cursor, line);
  t->t.ndim = (int32_t)NextInt(cursor, line);
  if (t->t.ndim < 0 || t->t.ndim > kMaxDims) Fail(2, "plan line %d: bad rank", line);
  for (int i = 0; i < t->t.ndim; ++i) t->shape[i] = NextInt(cursor, line);
  t->t.shape = t->shape;
  return &t->t;
}

static void* CopyOut(const char* blob, uint64_t blob_size, uint64_t off, uint64_t n, int line) {
  if (off + n > blob_size) Fail(2, "plan line %d: data [%llu, +%llu) past the end of its file",
                                line, (unsigned long long)off, (unsigned long long)n);
  void* p = AlignedAlloc(n);
  memcpy(p, blob + off, n);
  return p;
}

static void Call(void* lib, char* cursor, int line) {
  char name[512] = "__tvm_ffi_";
  int used = 0;
  if (sscanf(cursor, "%480s%n", name + strlen(name), &used) != 1) Fail(2, "plan line %d", line);
  cursor += used;
  TVMFFISafeCallType fn = (TVMFFISafeCallType)dlsym(lib, name);
  if (!fn) Fail(3, "the library has no kernel %s", name);
  TVMFFIAny args[kMaxArgs];
  long long nargs = NextInt(&cursor, line);
  if (nargs < 0 || nargs > kMaxArgs) Fail(2, "plan line %d: too many arguments", line);
  memset(args, 0, sizeof(args));
  for (int i = 0; i < nargs; ++i) {
    while (*cursor == ' ') ++cursor;
    char kind = *cursor++;
    if (kind == 't') {
      args[i].type_index = kTVMFFIDLTensorPtr;
      args[i].v_ptr = &g_tensors[TensorId(&cursor, line)].t;
    } else if (kind == 'i') {
      args[i].type_index = kTVMFFIInt;
      args[i].v_int64 = NextInt(&cursor, line);
    } else {
      Fail(2, "plan line %d: bad argument kind '%c'", line, kind);
    }
  }
  TVMFFIAny result;
  memset(&result, 0, sizeof(result));
  g_error[0] = '\0';
  if (fn(NULL, args, (int32_t)nargs, &result) != 0) Fail(1, "%s failed: %s", name + 10, g_error);
}

int main(int argc, char** argv) {
  if (argc != 6) Fail(2, "usage: edge_runner MODEL.so PLAN CONSTS INPUTS OUTPUTS");
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) Fail(3, "cannot load %s: %s", argv[1], dlerror());
  SetContext(lib);
  uint64_t nconsts = 0, ninputs = 0;
  char* consts = ReadFile(argv[3], &nconsts);
  char* inputs = ReadFile(argv[4], &ninputs);
  FILE* plan = fopen(argv[2], "r");
  FILE* out = fopen(argv[5], "wb");
  if (!plan || !out) Fail(2, "cannot open %s or %s", argv[2], argv[5]);
  char buf[1 << 16], word[32];
  for (int line = 1; fgets(buf, sizeof(buf), plan); ++line) {
    int used = 0;
    if (buf[0] == '#' || sscanf(buf, "%31s%n", word, &used) != 1) continue;
    char* cursor = buf + used;
    if (!strcmp(word, "storage")) {
      long long s = NextInt(&cursor, line);
      if (s < 0 || s >= kMaxStorage) Fail(2, "plan line %d: storage id out of range", line);
      g_storage_size[s] = (uint64_t)NextInt(&cursor, line);
      g_storage[s] = AlignedAlloc(g_storage_size[s]);
      memset(g_storage[s], 0, g_storage_size[s]);
    } else if (!strcmp(word, "input") || !strcmp(word, "const")) {
      int id = TensorId(&cursor, line);
      uint64_t off = (uint64_t)NextInt(&cursor, line);
      DLTensor* t = ReadTensor(id, &cursor, line);
      int is_input = word[0] == 'i';
      t->data = CopyOut(is_input ? inputs : consts, is_input ? ninputs : nconsts, off,
                        NumBytes(t), line);
    } else if (!strcmp(word, "alloc")) {
      int id = TensorId(&cursor, line);
      long long s = NextInt(&cursor, line);
      uint64_t off = (uint64_t)NextInt(&cursor, line);
      DLTensor* t = ReadTensor(id, &cursor, line);
      if (s < 0 || s >= kMaxStorage || !g_storage[s] || off + NumBytes(t) > g_storage_size[s])
        Fail(2, "plan line %d: tensor does not fit its storage", line);
      t->data = g_storage[s] + off;
    } else if (!strcmp(word, "view")) {
      int id = TensorId(&cursor, line);
      int src = TensorId(&cursor, line);
      DLTensor* t = ReadTensor(id, &cursor, line);
      if (NumBytes(t) != NumBytes(&g_tensors[src].t)) Fail(2, "plan line %d: view size", line);
      t->data = g_tensors[src].t.data;
    } else if (!strcmp(word, "call")) {
      Call(lib, cursor, line);
    } else if (!strcmp(word, "output")) {
      const DLTensor* t = &g_tensors[TensorId(&cursor, line)].t;
      if (fwrite(t->data, 1, NumBytes(t), out) != NumBytes(t)) Fail(2, "cannot write outputs");
    } else {
      Fail(2, "plan line %d: unknown entry '%s'", line, word);
    }
  }
  fclose(plan);
  return fclose(out) == 0 ? 0 : 2;
}
