/* CRC-32 check of an artifact's zip archive, as mlffd.artifact.read_metadata(verify=True) does
   in Python (zipfile.testzip): libtorch's reader does not check the CRCs, so a flipped bit in a
   stored tensor would load as a slightly different model without a word.
   SPDX-License-Identifier: GPL-2.0-or-later (see ../LICENSE) */

#ifndef LMP_MLFFD_ARCHIVE_CHECK_H
#define LMP_MLFFD_ARCHIVE_CHECK_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace mlffd_archive {

uint32_t crc32(uint32_t crc, const unsigned char *data, size_t size);

// the name of the first member of the zip archive at 'path' whose CRC-32 differs from the one
// its central directory records ('detail' says both, or why it cannot be read); "" when all
// match, or when 'path' is no zip archive that this check can read (the TorchScript loader then
// says what is wrong with it)
std::string damaged_member(const std::string &path, std::string &detail);

}    // namespace mlffd_archive

#endif
