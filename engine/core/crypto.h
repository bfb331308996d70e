/* libcrypto's SHA-256, loaded on first use.
 *
 * Linking libcrypto made every process that loads the engine pay for it at
 * start: ~4 ms of relocations and OpenSSL's provider start-up, most of an
 * icp-sim call's CPU, in processes (icp-sim's calls, fleetsnap commands
 * that only read documents) that never hash a byte. The library is opened
 * with dlopen by its soname the first time something is hashed. */
#ifndef FSN_CRYPTO_H
#define FSN_CRYPTO_H

#include <openssl/err.h>
#include <openssl/evp.h>

#include "err.h"

typedef struct fsn_crypto {
  const EVP_MD *sha256; /* fetched once, shared read-only by every thread */
  __typeof__(EVP_MD_CTX_new) *ctx_new;
  __typeof__(EVP_MD_CTX_free) *ctx_free;
  __typeof__(EVP_DigestInit_ex2) *init;
  __typeof__(EVP_DigestUpdate) *update;
  __typeof__(EVP_DigestFinal_ex) *final;
  __typeof__(ERR_get_error) *err_get;
  __typeof__(ERR_error_string_n) *err_string;
  __typeof__(ERR_clear_error) *err_clear;
} fsn_crypto;

/* The loaded library (the same pointer on every call, from any thread), or
 * NULL with ECRYPTO naming the library and why it could not be used. */
const fsn_crypto *fsn_crypto_load(fsn_err *err);

#endif
