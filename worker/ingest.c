/*
 * ingest.c - text normalisation and HTML text extraction (the chunker and
 * the file functions of worker/ingest.h live in ingest_chunk.c).
 *
 * Both are single passes over the input that append to a tr_buf, so memory
 * is bounded by the buffer's maximum and the output never reads outside the
 * input whatever bytes it holds.
 */
#include "worker/ingest.h"

#include <uninorm.h>

/* ====================================================================== */
/* UTF-8                                                                  */
/* ====================================================================== */

#define REPLACEMENT 0xFFFDu

/* Decodes one code point at p; returns the bytes it took (invalid: 1, cp U+FFFD). */
static size_t utf8_next(const unsigned char *p, size_t len, uint32_t *cp)
{
    unsigned char c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = REPLACEMENT;
        return 1;
    }
    if (n > len) {
        *cp = REPLACEMENT;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *cp = REPLACEMENT;
            return 1;
        }
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = REPLACEMENT;
        return 1;
    }
    *cp = v;
    return n;
}

static int utf8_put(struct tr_buf *b, uint32_t cp)
{
    char s[4];
    size_t n;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        cp = REPLACEMENT;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18));
        s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return tr_buf_add(b, s, n);
}

/* ====================================================================== */
/* Normalisation                                                          */
/* ====================================================================== */

static bool is_space_cp(uint32_t c)
{
    return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Characters that carry nothing visible: zero-width ones and controls. */
static bool is_dropped_cp(uint32_t c)
{
    return c == 0x200B || c == 0x200C || c == 0x200D || c == 0x2060 || c == 0xFEFF ||
           (c < 0x20 && c != '\n') || c == 0x7F || (c >= 0x80 && c <= 0x9F);
}

static int normalize_spaces(const char *p, size_t len, struct tr_buf *out);

/*
 * Composes out's bytes from start on into Unicode NFC (libunistring), so
 * that "e" + U+0301 and U+00E9 index and compare as the same text. The bytes
 * are valid UTF-8 by then (invalid input became U+FFFD); ASCII is already NFC.
 */
static int compose_nfc(struct tr_buf *out, size_t start)
{
    const uint8_t *seg = (const uint8_t *)out->buf + start;
    size_t n = out->len - start;
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++)
        ascii = seg[i] < 0x80;
    if (ascii)
        return 0;
    size_t rlen = 0;
    uint8_t *nfc = u8_normalize(UNINORM_NFC, seg, n, NULL, &rlen);
    if (nfc == NULL)
        return errno == ENOMEM ? TR_ENOMEM : TR_EINVAL;
    out->len = start;
    out->buf[start] = '\0';
    int rc = tr_buf_add(out, nfc, rlen);
    free(nfc); /* libunistring's allocation */
    return rc;
}

int tr_ingest_normalize(const char *p, size_t len, struct tr_buf *out)
{
    size_t start = out->len;
    int nrc = normalize_spaces(p, len, out);
    return nrc < 0 ? nrc : compose_nfc(out, start);
}

static int normalize_spaces(const char *p, size_t len, struct tr_buf *out)
{
    const unsigned char *s = (const unsigned char *)p;
    bool emitted = false, space = false;
    unsigned newlines = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (cp == '\r') {
            cp = '\n';
            if (i + 1 < len && s[i + 1] == '\n')
                n = 2;
        }
        if (cp == '\n') {
            newlines++;
            space = false; /* spaces at a line end go */
        } else if (is_space_cp(cp)) {
            space = true;
        } else if (!is_dropped_cp(cp)) {
            int rc = 0;
            if (emitted && newlines > 0)
                rc = tr_buf_add(out, "\n\n", newlines >= 2 ? 2 : 1);
            else if (emitted && space)
                rc = tr_buf_addch(out, ' ');
            if (rc == 0)
                rc = cp == REPLACEMENT && n == 1 ? utf8_put(out, cp) : tr_buf_add(out, s + i, n);
            if (rc < 0)
                return rc;
            emitted = true;
            space = false;
            newlines = 0;
        }
        i += n;
    }
    return 0;
}

/* ====================================================================== */
/* HTML                                                                   */
/* ====================================================================== */

static const struct
{
    const char *name;
    uint32_t cp;
} entities[] = {
    {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},
    {"apos", '\''},    {"nbsp", 0xA0},    {"ndash", 0x2013}, {"mdash", 0x2014},
    {"hellip", 0x2026}, {"copy", 0xA9},   {"reg", 0xAE},     {"laquo", 0xAB},
    {"raquo", 0xBB},   {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},
    {"rdquo", 0x201D},
};

/* Elements whose content is not text. */
static const char *const skipped[] = {"script", "style", "noscript", "template", "svg"};

/* Elements that break a paragraph, and those that break a line. */
static const char *const para_tags[] = {
    "p",      "div",    "section", "article", "header",     "footer", "nav",   "aside",
    "main",   "blockquote", "pre", "ul",      "ol",         "table",  "title", "hr",
    "dl",     "figure", "figcaption", "form", "address",    "body",   "html",
};
static const char *const line_tags[] = {"br", "li", "tr", "dt", "dd", "caption"};

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

static bool alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Finds needle (ASCII, lowercase) at or after i, case-insensitively; len when absent. */
static size_t find_ci(const char *p, size_t len, size_t i, const char *needle)
{
    size_t nl = strlen(needle);
    for (; i + nl <= len; i++) {
        size_t k = 0;
        while (k < nl && (p[i + k] | 0x20) == needle[k])
            k++;
        if (k == nl)
            return i;
    }
    return len;
}

/* Decodes the entity at p[i] == '&'; returns the bytes it took, 0 when it is none. */
static size_t entity(const char *p, size_t len, size_t i, uint32_t *cp)
{
    size_t j = i + 1, end = TR_MIN(len, i + 12);
    if (j < end && p[j] == '#') {
        j++;
        bool hex = j < end && (p[j] == 'x' || p[j] == 'X');
        if (hex)
            j++;
        uint32_t v = 0;
        size_t digits = 0;
        for (; j < end && p[j] != ';'; j++, digits++) {
            int d;
            char c = p[j];
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                d = (c | 0x20) - 'a' + 10;
            else
                return 0;
            v = v * (hex ? 16 : 10) + (uint32_t)d;
            if (v > 0x10FFFF)
                v = 0x110000; /* stays invalid, and no overflow */
        }
        if (j >= end || digits == 0)
            return 0;
        *cp = v;
        return j + 1 - i;
    }
    size_t k = j;
    while (k < end && alpha((unsigned char)p[k]))
        k++;
    if (k >= end || p[k] != ';')
        return 0;
    for (size_t e = 0; e < TR_ARRAY_LEN(entities); e++) {
        if (strlen(entities[e].name) == k - j && memcmp(entities[e].name, p + j, k - j) == 0) {
            *cp = entities[e].cp;
            return k + 1 - i;
        }
    }
    return 0;
}

/* The index just past the '>' that ends the tag opened at i, honouring quotes. */
static size_t tag_end(const char *p, size_t len, size_t i)
{
    char quote = 0;
    for (; i < len; i++) {
        if (quote) {
            if (p[i] == quote)
                quote = 0;
        } else if (p[i] == '"' || p[i] == '\'') {
            quote = p[i];
        } else if (p[i] == '>') {
            return i + 1;
        }
    }
    return len;
}

int tr_ingest_html_text(const char *p, size_t len, struct tr_buf *out)
{
    bool in_heading = false;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        char c = p[i];
        if (c == '&') {
            uint32_t cp;
            size_t n = entity(p, len, i, &cp);
            if (n > 0) {
                rc = utf8_put(out, cp);
                i += n;
                continue;
            }
        }
        if (c != '<') {
            if (in_heading && (c == '\n' || c == '\r'))
                c = ' '; /* a heading stays on its line */
            rc = tr_buf_addch(out, c);
            i++;
            continue;
        }
        if (len - i >= 4 && memcmp(p + i, "<!--", 4) == 0) {
            size_t e = find_ci(p, len, i + 4, "-->");
            i = e == len ? len : e + 3;
            continue;
        }
        if (len - i >= 9 && memcmp(p + i, "<![CDATA[", 9) == 0) {
            size_t e = find_ci(p, len, i + 9, "]]>");
            i = e == len ? len : e + 3;
            continue;
        }
        if (i + 1 < len && (p[i + 1] == '!' || p[i + 1] == '?')) {
            i = tag_end(p, len, i + 1);
            continue;
        }
        size_t j = i + 1;
        bool closing = j < len && p[j] == '/';
        if (closing)
            j++;
        if (j >= len || !alpha((unsigned char)p[j])) {
            rc = tr_buf_addch(out, c); /* a lone '<' is text */
            i++;
            continue;
        }
        char name[16];
        size_t nl = 0;
        while (j < len && (alpha((unsigned char)p[j]) || (p[j] >= '0' && p[j] <= '9'))) {
            if (nl < sizeof(name) - 1)
                name[nl++] = (char)(p[j] | 0x20);
            j++;
        }
        name[nl] = '\0';
        i = tag_end(p, len, j);
        if (!closing && in_list(name, skipped, TR_ARRAY_LEN(skipped))) {
            char close[24];
            snprintf(close, sizeof(close), "</%s", name);
            size_t e = find_ci(p, len, i, close);
            i = e == len ? len : tag_end(p, len, e);
            continue;
        }
        if (nl == 2 && name[0] == 'h' && name[1] >= '1' && name[1] <= '6') {
            in_heading = !closing;
            rc = tr_buf_addstr(out, "\n\n");
            if (rc == 0 && !closing) {
                for (int k = 0; k < name[1] - '0' && rc == 0; k++)
                    rc = tr_buf_addch(out, '#');
                if (rc == 0)
                    rc = tr_buf_addch(out, ' ');
            }
        } else if (in_list(name, para_tags, TR_ARRAY_LEN(para_tags))) {
            rc = tr_buf_addstr(out, "\n\n");
        } else if (!closing && in_list(name, line_tags, TR_ARRAY_LEN(line_tags))) {
            rc = tr_buf_addch(out, '\n');
        } else if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0) {
            rc = tr_buf_addch(out, ' ');
        }
    }
    return rc;
}
