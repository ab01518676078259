/* SHA-256 (FIPS 180-4) of a file. SPDX-License-Identifier: GPL-2.0-or-later (see ../LICENSE) */

#include "sha256.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace mlffd_sha256 {

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

Sha256::Sha256() :
    h{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
{
}

void Sha256::block(const unsigned char *p)
{
  uint32_t w[64];
  for (int t = 0; t < 16; t++)
    w[t] = (uint32_t) p[4 * t] << 24 | (uint32_t) p[4 * t + 1] << 16 | (uint32_t) p[4 * t + 2] << 8 |
        (uint32_t) p[4 * t + 3];
  for (int t = 16; t < 64; t++) {
    const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int t = 0; t < 64; t++) {
    const uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
}

void Sha256::update(const unsigned char *data, size_t size)
{
  length += size;
  if (buffered) {
    const size_t take = std::min(size, sizeof(buffer) - buffered);
    std::memcpy(buffer + buffered, data, take);
    buffered += take;
    data += take;
    size -= take;
    if (buffered < sizeof(buffer)) return;
    block(buffer);
    buffered = 0;
  }
  for (; size >= 64; data += 64, size -= 64) block(data);
  std::memcpy(buffer, data, size);
  buffered = size;
}

std::string Sha256::hexdigest()
{
  const uint64_t bits = length * 8;
  unsigned char pad[72] = {0x80};
  // 0x80, zeros up to 56 mod 64, then the message length in bits (big endian)
  const size_t npad = (buffered < 56 ? 56 : 120) - buffered;
  for (int i = 0; i < 8; i++) pad[npad + i] = (unsigned char) (bits >> (56 - 8 * i));
  const uint64_t keep = length;
  update(pad, npad + 8);
  length = keep;
  static const char *hex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : h)
    for (int shift = 28; shift >= 0; shift -= 4) out += hex[(v >> shift) & 0xf];
  return out;
}

bool file_digest(const std::string &path, std::string &digest, std::string &error)
{
  FILE *fp = std::fopen(path.c_str(), "rb");
  if (!fp) {
    error = std::strerror(errno);
    return false;
  }
  Sha256 sha;
  std::vector<unsigned char> chunk(1 << 20);
  size_t n;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), fp)) > 0) sha.update(chunk.data(), n);
  const bool failed = std::ferror(fp);
  std::fclose(fp);
  if (failed) {
    error = "read error";
    return false;
  }
  digest = sha.hexdigest();
  return true;
}

}    // namespace mlffd_sha256
