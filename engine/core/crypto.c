/* libcrypto opened on first use: see crypto.h for why. */
#define _GNU_SOURCE
#include "crypto.h"

#include <dlfcn.h>
#include <openssl/opensslv.h>
#include <pthread.h>
#include <stdio.h>

#define FSN_STR2(x) #x
#define FSN_STR(x) FSN_STR2(x)
/* The soname of the major version the engine was compiled against. */
#define LIBCRYPTO "libcrypto.so." FSN_STR(OPENSSL_VERSION_MAJOR)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static fsn_crypto lib;
static int loaded;
static char failure[512];

static void *symbol(void *so, const char *name) {
  void *p = dlsym(so, name);
  if (!p) snprintf(failure, sizeof failure, "%s has no %s", LIBCRYPTO, name);
  return p;
}

#define GET(field, name) \
  if (!(lib.field = (__typeof__(lib.field))symbol(so, name))) return

static void load(void) {
  void *so = dlopen(LIBCRYPTO, RTLD_NOW | RTLD_LOCAL);
  if (!so) {
    const char *why = dlerror();
    snprintf(failure, sizeof failure, "cannot load %s: %s", LIBCRYPTO, why ? why : "unknown error");
    return;
  }
  __typeof__(EVP_MD_fetch) *fetch;
  if (!(fetch = (__typeof__(EVP_MD_fetch) *)symbol(so, "EVP_MD_fetch"))) return;
  GET(ctx_new, "EVP_MD_CTX_new");
  GET(ctx_free, "EVP_MD_CTX_free");
  GET(init, "EVP_DigestInit_ex2");
  GET(update, "EVP_DigestUpdate");
  GET(final, "EVP_DigestFinal_ex");
  GET(err_get, "ERR_get_error");
  GET(err_string, "ERR_error_string_n");
  GET(err_clear, "ERR_clear_error");
  /* Kept for the life of the process, like the library itself. */
  lib.sha256 = fetch(NULL, "SHA256", NULL);
  if (!lib.sha256) {
    char text[256] = "unknown OpenSSL error";
    unsigned long e = lib.err_get();
    if (e) lib.err_string(e, text, sizeof text);
    lib.err_clear();
    snprintf(failure, sizeof failure, "fetch SHA256 from %s: %s", LIBCRYPTO, text);
    return;
  }
  loaded = 1;
}

const fsn_crypto *fsn_crypto_load(fsn_err *err) {
  pthread_once(&once, load);
  if (loaded) return &lib;
  fsn_fail(err, "ECRYPTO", "%s", failure);
  return NULL;
}
