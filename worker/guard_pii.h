/*
 * guard_pii.h - finding personal data in text (trellis.guard's hot part):
 * e-mail addresses, phone numbers, payment card numbers (Luhn-checked) and
 * IBANs (mod-97-checked). One pass over the bytes; docs/guardrails.md says
 * which shapes count and which do not (dates, IP addresses, versions).
 *
 * Pure functions on byte strings: any thread.
 */
#ifndef TR_WORKER_GUARD_PII_H
#define TR_WORKER_GUARD_PII_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/base/buf.h"

enum tr_pii_kind
{
    TR_PII_EMAIL = 0,
    TR_PII_PHONE,
    TR_PII_CARD,
    TR_PII_IBAN,
    TR_PII_KIND_COUNT
};

/* "email", "phone", "card", "iban". */
extern const char *const tr_pii_kind_names[TR_PII_KIND_COUNT];

/* One finding: bytes [start, end) of the text. */
struct tr_pii_span
{
    size_t start;
    size_t end;
    uint8_t kind; /* enum tr_pii_kind */
};

/*
 * Finds the personal data of the kinds in mask (bit 1 << kind) in s[0, len),
 * in text order, without overlaps. Fills at most cap spans and returns how
 * many there are in all (more than cap when some did not fit).
 */
size_t tr_pii_scan(const char *s, size_t len, unsigned mask, struct tr_pii_span *out,
                   size_t cap);

/*
 * Appends s with each finding replaced by "[EMAIL]", "[PHONE]", "[CARD]" or
 * "[IBAN]" to b; *n gets the number of replacements. 0 or TR_ENOMEM.
 */
int tr_pii_redact(const char *s, size_t len, unsigned mask, struct tr_buf *b,
                  size_t *n) TR_MUST_CHECK;

/* The checks, exposed for tests: Luhn over the digits of s, mod 97 of an IBAN. */
bool tr_pii_luhn(const char *digits, size_t n);
bool tr_pii_iban_ok(const char *s, size_t len);

#endif
