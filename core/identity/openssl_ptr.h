#pragma once
// Owning pointers for the OpenSSL objects identity/ uses, so every early
// return frees what it allocated.

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include <memory>

namespace agentgate::identity {

template <auto free_fn>
struct openssl_deleter {
  template <typename T>
  void operator()(T* p) const { free_fn(p); }
};

using evp_pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using evp_pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_deleter<EVP_PKEY_CTX_free>>;
using evp_md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_deleter<EVP_MD_CTX_free>>;
using evp_md_ptr = std::unique_ptr<EVP_MD, openssl_deleter<EVP_MD_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BN_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_deleter<ECDSA_SIG_free>>;
using param_bld_ptr = std::unique_ptr<OSSL_PARAM_BLD, openssl_deleter<OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, openssl_deleter<OSSL_PARAM_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;

// Shared, read-only key handle: one EVP_PKEY is used by every shard's
// verifications at once, which OpenSSL 3 allows for keys nobody mutates.
using shared_pkey = std::shared_ptr<EVP_PKEY>;
inline shared_pkey share_pkey(evp_pkey_ptr key) {
  return shared_pkey(key.release(), openssl_deleter<EVP_PKEY_free>());
}

}  // namespace agentgate::identity
