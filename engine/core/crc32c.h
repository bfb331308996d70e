#ifndef FSN_CRC32C_H
#define FSN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Start with crc = 0; "123456789" gives 0xE3069283. */
uint32_t fsn_crc32c_update(uint32_t crc, const void *data, size_t len);

#endif
