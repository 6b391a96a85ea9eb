/*
 * guard_pii.c - personal data in text (guard_pii.h).
 *
 * One left-to-right pass. Only a token start (a byte that may begin an
 * address or a number, after one that is not a letter or a digit) costs
 * more than a table lookup; there the candidates are tried in order (an
 * e-mail address, an IBAN, a card number, a phone number) and the first that
 * holds is reported and skipped over, so findings come in text order and
 * never overlap. Each try looks at a bounded window, so a scan is linear.
 *
 * What counts (docs/guardrails.md): a card is 13 to 19 digits, in groups
 * split by single spaces or dashes, starting with 2 to 6, passing Luhn. A
 * phone number either starts with '+' (8 to 15 digits) or has separators
 * (10 to 15 digits in groups of at most 4, the first may be in parentheses);
 * dates (2024-01-15 10 30), IP addresses and bare digit runs are not phones.
 * An IBAN is two capital letters, two check digits and up to 30 letters or
 * digits (groups of four split by spaces allowed), whose mod 97 is 1.
 */
#include "worker/guard_pii.h"

#include <pthread.h>
#include <string.h>

#include "lib/base/error.h"

const char *const tr_pii_kind_names[TR_PII_KIND_COUNT] = {"email", "phone", "card", "iban"};

static const char *const placeholders[TR_PII_KIND_COUNT] = {"[EMAIL]", "[PHONE]", "[CARD]",
                                                            "[IBAN]"};

enum
{
    C_ALNUM = 1,  /* letter or digit */
    C_LOCAL = 2,  /* may appear in an address's local part */
    C_DOMAIN = 4, /* may appear in a domain label */
    C_START = 8,  /* may begin a finding */
};

static uint8_t cls[256];
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;

static void init_classes(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum)
            v |= C_ALNUM | C_LOCAL | C_DOMAIN | C_START;
        if (c == '.' || c == '_' || c == '%' || c == '+' || c == '-')
            v |= C_LOCAL;
        if (c == '-')
            v |= C_DOMAIN;
        if (c == '+' || c == '(')
            v |= C_START;
        cls[c] = v;
    }
}

#define CL(c) cls[(unsigned char)(c)]
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_UPPER(c) ((c) >= 'A' && (c) <= 'Z')

bool tr_pii_luhn(const char *d, size_t n)
{
    unsigned sum = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned v = (unsigned)(d[n - 1 - k] - '0');
        if (k & 1) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return n > 0 && sum % 10 == 0;
}

/* s: the IBAN's letters and digits without spaces. */
bool tr_pii_iban_ok(const char *s, size_t len)
{
    if (len < 15 || len > 34 || !IS_UPPER(s[0]) || !IS_UPPER(s[1]) || !IS_DIGIT(s[2]) ||
        !IS_DIGIT(s[3]))
        return false;
    unsigned rem = 0;
    for (size_t k = 0; k < len; k++) {
        char c = s[(k + 4) % len];
        if (IS_DIGIT(c))
            rem = (rem * 10 + (unsigned)(c - '0')) % 97;
        else if (IS_UPPER(c))
            rem = (rem * 100 + (unsigned)(c - 'A' + 10)) % 97;
        else
            return false;
    }
    return rem == 1;
}

/* ====================================================================== */
/* Candidates: each returns the end of a finding starting at p, or 0      */
/* ====================================================================== */

/* An e-mail address whose local part is s[p, at); at is the '@'. */
static size_t try_email(const char *s, size_t len, size_t p, size_t at)
{
    while (p < at && !(CL(s[p]) & C_ALNUM))
        p++;
    if (p == at || s[at - 1] == '.')
        return 0;
    size_t q = at + 1, end = 0, labels = 0, label_start = q;
    while (q < len && q - at <= 253) {
        char c = s[q];
        if (CL(c) & C_DOMAIN) {
            q++;
            continue;
        }
        if (c == '.' && q > label_start && q + 1 < len && (CL(s[q + 1]) & C_ALNUM)) {
            labels++;
            q++;
            label_start = q;
            continue;
        }
        break;
    }
    if (q == label_start || labels == 0)
        return 0;
    /* The top-level label: letters only, at least two. */
    for (size_t k = label_start; k < q; k++) {
        if (IS_DIGIT(s[k]) || s[k] == '-')
            return 0;
    }
    end = q - label_start >= 2 ? q : 0;
    return end;
}

/* An IBAN at p (two capitals and two digits are checked by the caller). */
static size_t try_iban(const char *s, size_t len, size_t p)
{
    char buf[40];
    size_t n = 0, ends[40], nn[40], k = 0, q = p;
    while (q < len && n < 34) {
        char c = s[q];
        if (IS_UPPER(c) || IS_DIGIT(c)) {
            buf[n++] = c;
            q++;
            continue;
        }
        if (c == ' ' && q + 1 < len && (IS_UPPER(s[q + 1]) || IS_DIGIT(s[q + 1])) && n >= 4) {
            ends[k] = q;
            nn[k++] = n;
            q++;
            continue;
        }
        break;
    }
    /* A group running on into a word ends no IBAN; earlier boundaries may. */
    if (!(q < len && (CL(s[q]) & C_ALNUM))) {
        ends[k] = q;
        nn[k++] = n;
    }
    /* The longest prefix ending at a group boundary that checks. */
    while (k-- > 0) {
        if (tr_pii_iban_ok(buf, nn[k]))
            return ends[k];
    }
    return 0;
}

/* A card or a phone number at p; *kind says which. */
static size_t try_number(const char *s, size_t len, size_t p, uint8_t *kind)
{
    char d[24];
    uint8_t groups[16];
    size_t nd = 0, ng = 0, q = p;
    bool plus = false, paren = false, dot = false, other_sep = false;
    if (s[q] == '+') {
        plus = true;
        q++;
    }
    if (q < len && s[q] == '(') {
        paren = true;
        q++;
    }
    if (q >= len || !IS_DIGIT(s[q]))
        return 0;
    size_t end = q;
    uint8_t cur = 0;
    while (q < len) {
        char c = s[q];
        if (IS_DIGIT(c)) {
            if (nd >= 20)
                return 0; /* a long number, not a card or a phone */
            d[nd++] = c;
            cur++;
            q++;
            end = q;
            continue;
        }
        /* Between groups: one separator, or a parenthesis and a space. */
        size_t r = q;
        int seps = 0;
        bool paren_sep = false, sep_dot = false, sep_other = false, open = paren;
        while (r < len && seps < 2 &&
               (s[r] == ' ' || s[r] == '-' || s[r] == '.' || (s[r] == ')' && open) ||
                (s[r] == '(' && !open && ng == 0))) {
            if (s[r] == '.')
                sep_dot = true;
            else if (s[r] == '-' || s[r] == ' ')
                sep_other = true;
            if (s[r] == '(' || s[r] == ')') {
                open = s[r] == '(';
                paren_sep = true;
            }
            r++;
            seps++;
        }
        if (seps == 0 || r >= len || !IS_DIGIT(s[r]) || (seps == 2 && !paren_sep))
            break;
        /* The separator holds: it joins this group to the next. */
        dot |= sep_dot;
        other_sep |= sep_other;
        paren = open;
        if (ng >= 15)
            return 0;
        groups[ng++] = cur;
        cur = 0;
        q = r;
    }
    groups[ng++] = cur;
    if (end < len && (CL(s[end]) & C_ALNUM))
        return 0;
    if (end < len && s[end] == '@')
        return 0;
    /* A card: 13 to 19 digits, plain groups, a card network's first digit, Luhn. */
    if (nd >= 13 && nd <= 19 && !plus && !dot && s[p] != '(' && d[0] >= '2' && d[0] <= '6' &&
        tr_pii_luhn(d, nd)) {
        bool groups_ok = true;
        for (size_t g = 0; g < ng && ng > 1; g++)
            groups_ok &= groups[g] >= 3 && groups[g] <= 6;
        if (groups_ok) {
            *kind = TR_PII_CARD;
            return end;
        }
    }
    /* A phone number. */
    if (plus) {
        if (nd < 8 || nd > 15)
            return 0;
        for (size_t g = 0; g < ng; g++) {
            if (groups[g] > 12)
                return 0;
        }
        *kind = TR_PII_PHONE;
        return end;
    }
    if (nd < 10 || nd > 15 || ng < 2)
        return 0;
    /* Groups of four, like a card's, that failed the card checks: not a phone either. */
    bool fours = ng >= 3;
    for (size_t g = 0; fours && g + 1 < ng; g++)
        fours = groups[g] == 4;
    if (fours)
        return 0;
    for (size_t g = 0; g < ng; g++) {
        if (groups[g] > 4 || (g > 0 && groups[g] < 2))
            return 0;
    }
    /* A date (2024-01-15, 2024 01 15 10 30) is not a phone number. */
    if (groups[0] == 4 && (memcmp(d, "19", 2) == 0 || memcmp(d, "20", 2) == 0) && ng >= 3 &&
        groups[1] <= 2 && groups[2] <= 2)
        return 0;
    /* Dotted: only 555.123.4567 and 01.23.45.67.89 shapes (not IP addresses or versions). */
    if (dot) {
        if (other_sep)
            return 0;
        bool us = ng == 3 && groups[0] == 3 && groups[1] == 3 && groups[2] == 4;
        bool pairs = ng == 5;
        for (size_t g = 0; pairs && g < ng; g++)
            pairs = groups[g] == 2;
        if (!us && !pairs)
            return 0;
    }
    *kind = TR_PII_PHONE;
    return end;
}

size_t tr_pii_scan(const char *s, size_t len, unsigned mask, struct tr_pii_span *out,
                   size_t cap)
{
    pthread_once(&cls_once, init_classes);
    size_t found = 0;
    size_t no_at_until = 0; /* the local-part run from here on has no '@' after it */
    size_t i = 0;
    while (i < len) {
        uint8_t c = CL(s[i]);
        if (!(c & (C_START | C_LOCAL)) || (i > 0 && (CL(s[i - 1]) & C_ALNUM))) {
            i++;
            continue;
        }
        size_t end = 0;
        uint8_t kind = 0;
        if ((mask & (1u << TR_PII_EMAIL)) && i >= no_at_until) {
            size_t e = i;
            while (e < len && e - i <= 64 && (CL(s[e]) & C_LOCAL))
                e++;
            if (e < len && s[e] == '@' && e > i && e - i <= 64) {
                end = try_email(s, len, i, e);
                kind = TR_PII_EMAIL;
                if (end != 0) {
                    /* The address starts at its local part's first letter or digit. */
                    while (!(CL(s[i]) & C_ALNUM))
                        i++;
                }
            } else if (e - i <= 64) {
                no_at_until = e;
            }
        }
        if (end == 0 && (mask & (1u << TR_PII_IBAN)) && i + 4 <= len && IS_UPPER(s[i]) &&
            IS_UPPER(s[i + 1]) && IS_DIGIT(s[i + 2]) && IS_DIGIT(s[i + 3])) {
            end = try_iban(s, len, i);
            kind = TR_PII_IBAN;
        }
        if (end == 0 && (mask & ((1u << TR_PII_CARD) | (1u << TR_PII_PHONE))) &&
            (IS_DIGIT(s[i]) || s[i] == '+' || s[i] == '(')) {
            end = try_number(s, len, i, &kind);
            if (end != 0 && !(mask & (1u << kind)))
                end = 0;
        }
        if (end == 0) {
            i++;
            continue;
        }
        if (found < cap)
            out[found] = (struct tr_pii_span){.start = i, .end = end, .kind = kind};
        found++;
        i = end;
    }
    return found;
}

int tr_pii_redact(const char *s, size_t len, unsigned mask, struct tr_buf *b, size_t *n)
{
    struct tr_pii_span spans[64];
    size_t pos = 0;
    *n = 0;
    /* In windows of 64 findings, so a text with many needs no big array. */
    for (;;) {
        size_t total = tr_pii_scan(s + pos, len - pos, mask, spans, TR_ARRAY_LEN(spans));
        size_t k = TR_MIN(total, TR_ARRAY_LEN(spans));
        size_t at = pos;
        for (size_t j = 0; j < k; j++) {
            const char *ph = placeholders[spans[j].kind];
            if (tr_buf_add(b, s + at, pos + spans[j].start - at) < 0 ||
                tr_buf_add(b, ph, strlen(ph)) < 0)
                return TR_ENOMEM;
            at = pos + spans[j].end;
        }
        *n += k;
        if (total <= TR_ARRAY_LEN(spans)) {
            if (tr_buf_add(b, s + at, len - at) < 0)
                return TR_ENOMEM;
            return 0;
        }
        /* The next window starts after the last replaced finding. Starting
         * mid-text at a finding's end keeps token boundaries: the byte
         * before is the finding's last, a letter or digit, as in the text. */
        pos = at;
    }
}
