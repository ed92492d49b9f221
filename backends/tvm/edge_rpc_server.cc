/*
 * edge_rpc_server.cc: a TVM RPC server without Python, for aarch64 boards and qemu-aarch64.
 *
 *   edge_rpc_server HOST PORT WORKDIR      (PORT 0: any free port)
 *
 * It does what `python -m tvm.exec.rpc_server` does for one client at a time: the RPC
 * handshake (magic 0xff271, the client's key, "server:" back; keys are not matched), the
 * two functions the client expects the server to provide (tvm.rpc.server.workpath and
 * tvm.rpc.server.load_module, uploads land in WORKDIR), then the TVM runtime's own
 * rpc.ServerLoop on the socket. Linked against libtvm_runtime.so and libtvm_ffi.so of the
 * same TVM version as the client (backends/tvm/edge_rpc.py takes them from PyPI's aarch64
 * wheels). It prints "listening on HOST:PORT" once ready, and serves until killed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

using tvm::ffi::Function;
using tvm::ffi::String;

constexpr int kRpcMagic = 0xff271;  // tvm/rpc/base.py RPC_MAGIC; success code is the same

bool RecvAll(int fd, void* buf, size_t n) {
  for (char* p = static_cast<char*>(buf); n > 0;) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r);
  }
  return true;
}

bool SendAll(int fd, const void* buf, size_t n) {
  for (const char* p = static_cast<const char*>(buf); n > 0;) {
    ssize_t r = send(fd, p, n, 0);
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r);
  }
  return true;
}

// The server side of tvm/rpc/server.py `_accept_conn`.
bool Handshake(int fd) {
  int magic = 0, keylen = 0;
  if (!RecvAll(fd, &magic, 4) || magic != kRpcMagic || !RecvAll(fd, &keylen, 4)) return false;
  if (keylen < 0 || keylen > 4096) return false;
  std::string key(static_cast<size_t>(keylen), '\0');
  if (!RecvAll(fd, key.data(), key.size()) || key.rfind("client:", 0) != 0) return false;
  const std::string server_key = "server:";
  int code = kRpcMagic, len = static_cast<int>(server_key.size());
  return SendAll(fd, &code, 4) && SendAll(fd, &len, 4) && SendAll(fd, server_key.data(), len);
}

void RegisterServerEnv(const std::string& workdir) {
  auto in_workdir = [workdir](const String& name) { return workdir + "/" + std::string(name); };
  Function::SetGlobal("tvm.rpc.server.workpath", Function::FromTyped(
      [in_workdir](String name) { return String(in_workdir(name)); }), true);
  Function::SetGlobal("tvm.rpc.server.load_module", Function::FromTyped(
      [in_workdir](String name) { return tvm::ffi::Module::LoadFromFile(in_workdir(name)); }),
      true);
}

int Listen(const char* host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t size = sizeof(addr);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), size) != 0 || listen(fd, 1) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    perror("edge_rpc_server: listen");
    exit(1);
  }
  printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
  fflush(stdout);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST PORT WORKDIR\n", argv[0]);
    return 2;
  }
  RegisterServerEnv(argv[3]);
  Function serve = Function::GetGlobalRequired("rpc.ServerLoop");
  int listen_fd = Listen(argv[1], atoi(argv[2]));
  for (;;) {
    int fd = accept(listen_fd, nullptr, nullptr);
    if (fd < 0) continue;
    try {
      if (Handshake(fd)) serve(fd);  // returns when the client closes the session
    } catch (const std::exception& e) {  // a broken session must not end the server
      fprintf(stderr, "edge_rpc_server: session ended: %s\n", e.what());
    }
    close(fd);
  }
}
