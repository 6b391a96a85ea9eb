/*
 * retry_after.h - the Retry-After header of HTTP (RFC 9110 section 10.2.3):
 * a number of seconds, or an HTTP date.
 */
#ifndef TR_RETRY_AFTER_H
#define TR_RETRY_AFTER_H

#include "lib/base/error.h"

/* Longest wait a Retry-After may ask for; longer values are cut to it (one day). */
#define TR_RETRY_AFTER_MAX_S 86400.0

/*
 * Parses the header value s (n bytes, surrounding blanks allowed) received at
 * wall-clock time now (seconds since the epoch). On success stores the
 * seconds to wait in *wait (0 for a date in the past, at most
 * TR_RETRY_AFTER_MAX_S) and returns 0; returns TR_EINVAL for anything else.
 * Dates are IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the form
 * servers must send; the obsolete RFC 850 and asctime forms are refused.
 */
int tr_retry_after_parse(const char *s, size_t n, double now, double *wait) TR_MUST_CHECK;

#endif
