/* Shared by the SOCKS server's files. */
#ifndef TWINE_SOCKS_INTERNAL_H
#define TWINE_SOCKS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* A DNS host name as the endpoint parser takes one: labels of letters,
 * digits, '-' and '_' (1-63 bytes each, 253 in all), one final dot allowed. */
bool tw__socks_host_name_ok(const char *s, size_t len);

#endif
