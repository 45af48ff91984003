/*
 * peercred: the kernel's word on who is on the other end of a Unix socket, for the agent's
 * Workload API listener. Plain Node-API (node_api.h), no node-addon-api, Linux only.
 *
 *   getPeerCred(fd)     -> { pid, uid, gid }  getsockopt(SO_PEERCRED): the credentials the peer
 *                                             had when it called connect(); throws on error.
 *   getPeerGroups(fd)   -> number[]              getsockopt(SO_PEERGROUPS) (Linux >= 4.13): the
 *                                             peer's supplementary groups when it called
 *                                             connect(); throws (.code ENOPROTOOPT, a message
 *                                             naming the kernel requirement) where unsupported.
 *   pidfdOpen(pid)      -> fd | -1            pidfd_open(2) (Linux >= 5.3); -1 when the kernel or
 *                                             a seccomp filter does not offer it (ENOSYS/EPERM/
 *                                             EACCES). Any other failure (e.g. ESRCH: no such
 *                                             process) throws an Error with .code = errno name.
 *                                             The fd is O_CLOEXEC; close it with fs.closeSync.
 *   pidfdAlive(pidfd)   -> boolean            poll(POLLIN, timeout 0): a pidfd becomes readable
 *                                             when its process exits, so "not readable" = alive.
 *
 * A pidfd refers to one process, never to a later process that reuses the pid: that is what
 * makes it a PID-reuse guard. Keep this file small: everything else lives in TypeScript.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <node_api.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* asm-generic value, Linux >= 4.13 */
#endif

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* same number on every architecture */
#endif

/* Names for the errno values these calls can produce (Node's convention: err.code = "ESRCH"). */
static const char *errno_name(int err) {
  switch (err) {
    case ESRCH: return "ESRCH";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ERANGE: return "ERANGE";
    default: return "EUNKNOWN";
  }
}

/* Throws an Error with .code (errno name) and .errno; returns NULL for the caller to return. */
static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  napi_value code, message, error, num;
  snprintf(msg, sizeof msg, "%s failed: %s", what, strerror(err));
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

/* Reads the single int32 argument of every function here; throws a TypeError if it is not one. */
static int int_arg(napi_env env, napi_callback_info info, int32_t *out) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &type) != napi_ok || type != napi_number ||
      napi_get_value_int32(env, argv[0], out) != napi_ok || *out < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a non-negative integer");
    return 0;
  }
  return 1;
}

static void set_int(napi_env env, napi_value obj, const char *key, int64_t v) {
  napi_value n;
  napi_create_int64(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

static napi_value get_peer_cred(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct ucred cred;
  socklen_t len = sizeof cred;
  napi_value result;
  if (!int_arg(env, info, &fd)) return NULL;
  memset(&cred, 0, sizeof cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  napi_create_object(env, &result);
  set_int(env, result, "pid", cred.pid);
  set_int(env, result, "uid", cred.uid);
  set_int(env, result, "gid", cred.gid);
  return result;
}

/*
 * The group list is as long as the peer's (up to NGROUPS_MAX, 65536): start with room for 64 and,
 * when the kernel answers ERANGE, retry once with the size it wrote back into len. The list was
 * fixed at connect(), so the second answer fits; a bounded loop anyway.
 */
static napi_value get_peer_groups(napi_env env, napi_callback_info info) {
  int32_t fd;
  gid_t small[64];
  gid_t *groups = small;
  socklen_t len = sizeof small;
  napi_value result, n;
  int tries;
  if (!int_arg(env, info, &fd)) return NULL;
  for (tries = 0;; tries++) {
    socklen_t cap = len;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) break;
    int err = errno;
    if (err == ERANGE && tries < 3 && len > cap && len <= 65536 * sizeof(gid_t)) {
      gid_t *bigger = (gid_t *)malloc(len);
      if (groups != small) free(groups);
      groups = bigger;
      if (groups == NULL) return throw_errno(env, "getsockopt(SO_PEERGROUPS)", ENOMEM);
      continue;
    }
    if (groups != small) free(groups);
    if (err == ENOPROTOOPT) {
      napi_value code, message, error;
      napi_create_string_utf8(env, "ENOPROTOOPT", NAPI_AUTO_LENGTH, &code);
      napi_create_string_utf8(env,
                              "getsockopt(SO_PEERGROUPS) is not supported by this kernel (it needs Linux 4.13 or newer): "
                              "the agent cannot learn a caller's supplementary groups from the kernel",
                              NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, code, message, &error);
      napi_throw(env, error);
      return NULL;
    }
    return throw_errno(env, "getsockopt(SO_PEERGROUPS)", err);
  }
  napi_create_array_with_length(env, len / sizeof(gid_t), &result);
  for (size_t i = 0; i < len / sizeof(gid_t); i++) {
    napi_create_uint32(env, groups[i], &n);
    napi_set_element(env, result, (uint32_t)i, n);
  }
  if (groups != small) free(groups);
  return result;
}

static napi_value pidfd_open(napi_env env, napi_callback_info info) {
  int32_t pid;
  napi_value result;
  long fd;
  if (!int_arg(env, info, &pid)) return NULL;
  fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) {
    int err = errno;
    if (err != ENOSYS && err != EPERM && err != EACCES) return throw_errno(env, "pidfd_open", err);
    fd = -1; /* not offered here: callers fall back to /proc start-time checks */
  }
  napi_create_int32(env, (int32_t)fd, &result);
  return result;
}

static napi_value pidfd_alive(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct pollfd p;
  int n;
  napi_value result;
  if (!int_arg(env, info, &fd)) return NULL;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  do n = poll(&p, 1, 0); while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "poll(pidfd)", errno);
  if (p.revents & POLLNVAL) return throw_errno(env, "poll(pidfd)", EBADF);
  napi_get_boolean(env, n == 0, &result); /* nothing readable: the process has not exited */
  return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"getPeerCred", NULL, get_peer_cred, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getPeerGroups", NULL, get_peer_groups, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pidfdOpen", NULL, pidfd_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pidfdAlive", NULL, pidfd_alive, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
