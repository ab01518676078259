/* CRC-32 check of an artifact's zip archive. SPDX-License-Identifier: GPL-2.0-or-later (see ../LICENSE) */

#include "archive_check.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace mlffd_archive {

uint32_t crc32(uint32_t crc, const unsigned char *data, size_t size)
{
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t n = 0; n < 256; n++) {
      uint32_t c = n;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; i++) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

namespace {
uint64_t le(const unsigned char *p, int bytes)
{
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// 'size' bytes at 'offset' of the file, false when it is shorter
bool read_at(FILE *fp, uint64_t offset, size_t size, std::vector<unsigned char> &out)
{
  out.resize(size);
  return std::fseek(fp, (long) offset, SEEK_SET) == 0 && std::fread(out.data(), 1, size, fp) == size;
}

struct Member {
  std::string name;
  uint32_t crc;
};

// the members of the central directory; false when the file is not a zip archive read here
bool central_directory(FILE *fp, std::vector<Member> &members)
{
  if (std::fseek(fp, 0, SEEK_END) != 0) return false;
  const long end = std::ftell(fp);
  if (end < 22) return false;
  // the end-of-central-directory record: the last 22 bytes, or before a comment of < 64 KiB
  const size_t tail = (size_t) std::min<long>(end, 22 + 65535);
  std::vector<unsigned char> buf;
  if (!read_at(fp, end - tail, tail, buf)) return false;
  long eocd = -1;
  for (long i = (long) tail - 22; i >= 0; i--)
    if (le(&buf[i], 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) return false;
  uint64_t count = le(&buf[eocd + 10], 2), size = le(&buf[eocd + 12], 4), offset = le(&buf[eocd + 16], 4);
  if (count == 0xffff || size == 0xffffffff || offset == 0xffffffff) {    // ZIP64: the locator just before
    const long locator = end - (long) tail + eocd - 20;
    std::vector<unsigned char> loc, rec;
    if (locator < 0 || !read_at(fp, locator, 20, loc) || le(&loc[0], 4) != 0x07064b50) return false;
    if (!read_at(fp, le(&loc[8], 8), 56, rec) || le(&rec[0], 4) != 0x06064b50) return false;
    count = le(&rec[32], 8);
    size = le(&rec[40], 8);
    offset = le(&rec[48], 8);
  }
  if (size > (uint64_t) end || offset > (uint64_t) end - size) return false;
  std::vector<unsigned char> cd;
  if (!read_at(fp, offset, (size_t) size, cd)) return false;
  size_t p = 0;
  for (uint64_t k = 0; k < count; k++) {
    if (p + 46 > cd.size() || le(&cd[p], 4) != 0x02014b50) return false;
    const size_t n = le(&cd[p + 28], 2), extra = le(&cd[p + 30], 2), comment = le(&cd[p + 32], 2);
    if (p + 46 + n > cd.size()) return false;
    members.push_back({std::string(cd.begin() + p + 46, cd.begin() + p + 46 + n), (uint32_t) le(&cd[p + 16], 4)});
    p += 46 + n + extra + comment;
  }
  return true;
}
}    // namespace

std::string damaged_member(const std::string &path, std::string &detail)
{
  std::vector<Member> members;
  FILE *fp = std::fopen(path.c_str(), "rb");
  if (!fp) return "";
  const bool ok = central_directory(fp, members);
  std::fclose(fp);
  if (!ok || members.empty()) return "";
  try {
    // libtorch's reader inflates compressed members; its record names omit the archive's
    // top-level folder
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const Member &m : members) {
      const size_t slash = m.name.find('/');
      if (slash == std::string::npos || m.name.back() == '/') continue;
      const std::string record = m.name.substr(slash + 1);
      if (!reader.hasRecord(record)) continue;
      try {
        auto [data, n] = reader.getRecord(record);
        const uint32_t crc = crc32(0, static_cast<const unsigned char *>(data.get()), n);
        if (crc != m.crc) {
          char text[96];
          std::snprintf(text, sizeof(text), "recorded %08x, computed %08x", m.crc, crc);
          detail = text;
          return m.name;
        }
      } catch (const std::exception &e) {
        detail = std::string("cannot be read: ") + e.what();
        detail = detail.substr(0, detail.find('\n'));
        return m.name;
      }
    }
  } catch (const std::exception &) {
    return "";    // not an archive libtorch reads: its loader says so
  }
  return "";
}

}    // namespace mlffd_archive
