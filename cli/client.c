/*
 * client.c - blocking HTTP/JSON calls to the scheduler on one curl easy handle.
 *
 * The handle is created once and reused, so consecutive calls of a command
 * (a --wait loop polls many times) ride one keep-alive connection. Answers
 * are read into a tr_buf with a hard maximum, because whatever answers on
 * the other end of the URL is not trusted to be a scheduler. Transport
 * failures are turned into one short sentence that names the URL and the
 * reason ("connection refused"), as users of curl-based CLIs expect.
 * Single-threaded.
 */
#include "cli/client.h"

#include <ctype.h>
#include <curl/curl.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"

/* Answers larger than this are refused: run outputs are bounded far below. */
#define ANSWER_MAX (256u << 20)
#define CONNECT_TIMEOUT_S 5L
#define DEFAULT_TIMEOUT_S 30L

struct tr_client
{
    CURL *curl;                            /* reused for every call */
    char *base;                            /* base URL without trailing slash */
    char *auth_header;                     /* "Authorization: Bearer ..." or NULL */
    char *noproxy;                         /* loopback names plus the user's no_proxy */
    volatile sig_atomic_t *interrupt;      /* set by a signal handler, or NULL */
    struct tr_buf answer;                  /* body of the current answer */
    char error_code[64];                   /* the API's code of the last refusal */
    long status;                           /* HTTP status of the last answer */
};

/* ====================================================================== */
/* {=== construction */

struct tr_client *tr_client_open(const char *base_url, const char *token)
{
    struct tr_client *c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    tr_buf_init(&c->answer, ANSWER_MAX);
    size_t n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    c->base = tr_strndup(base_url, n);
    if (c->base == NULL)
        goto out_free;
    if (token != NULL && token[0] != '\0') {
        struct tr_buf h;
        tr_buf_init(&h, 0);
        if (tr_buf_addf(&h, "Authorization: Bearer %s", token) < 0) {
            tr_buf_release(&h);
            goto out_free;
        }
        c->auth_header = tr_buf_detach(&h, NULL);
        if (c->auth_header == NULL)
            goto out_free;
    }
    /*
     * A loopback scheduler is never reached through a proxy, whatever
     * http_proxy says; CURLOPT_NOPROXY replaces no_proxy, so keep the user's.
     */
    const char *np = getenv("no_proxy");
    if (np == NULL)
        np = getenv("NO_PROXY");
    struct tr_buf npb;
    tr_buf_init(&npb, 0);
    if (tr_buf_addstr(&npb, "localhost,127.0.0.1,::1") < 0 ||
        (np != NULL && np[0] != '\0' && tr_buf_addf(&npb, ",%s", np) < 0)) {
        tr_buf_release(&npb);
        goto out_free;
    }
    c->noproxy = tr_buf_detach(&npb, NULL);
    if (c->noproxy == NULL)
        goto out_free;
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        goto out_free;
    return c;

out_free:
    tr_client_close(c);
    return NULL;
}

void tr_client_close(struct tr_client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    if (c->auth_header != NULL) {
        /* The token should not linger in freed heap memory. */
        memset(c->auth_header, 0, strlen(c->auth_header));
        tr_free(c->auth_header);
    }
    tr_free(c->noproxy);
    tr_free(c->base);
    tr_buf_release(&c->answer);
    tr_free(c);
}

const char *tr_client_url(const struct tr_client *c)
{
    return c->base;
}

void tr_client_set_interrupt(struct tr_client *c, volatile sig_atomic_t *flag)
{
    c->interrupt = flag;
}

const char *tr_client_error_code(const struct tr_client *c)
{
    return c->error_code;
}

long tr_client_status(const struct tr_client *c)
{
    return c->status;
}

char *tr_client_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    struct tr_buf b;
    tr_buf_init(&b, 0);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc;
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            rc = tr_buf_addch(&b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = tr_buf_add(&b, e, sizeof(e));
        }
        if (rc < 0) {
            tr_buf_release(&b);
            return NULL;
        }
    }
    return tr_buf_detach(&b, NULL);
}

/* ====================================================================== */
/* {=== one call */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct tr_client *c = ud;
    size_t n = size * nmemb;
    /* Returning less than n makes curl fail the transfer with CURLE_WRITE_ERROR. */
    if (tr_buf_add(&c->answer, ptr, n) < 0)
        return 0;
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct tr_client *c = ud;
    return c->interrupt != NULL && *c->interrupt ? 1 : 0;
}

/* Lowercases the first letter of a system message ("Connection refused"). */
static void lower_first(char *s)
{
    if (s[0] != '\0' && isupper((unsigned char)s[0]) &&
        (s[1] == '\0' || !isupper((unsigned char)s[1])))
        s[0] = (char)tolower((unsigned char)s[0]);
}

/* Sets err for a call that got no answer from the scheduler. */
static int transport_error(struct tr_client *c, CURLcode cc, long timeout_s,
                           const char *curl_msg, struct tr_error *err)
{
    char why[512];
    long os_errno = 0;
    curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
    switch (cc) {
    case CURLE_ABORTED_BY_CALLBACK:
        return tr_error_set(err, TR_ECANCELED, "interrupted");
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(why, sizeof(why), "cannot resolve the host name");
        break;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(why, sizeof(why), "no answer within %ld s", timeout_s);
        break;
    case CURLE_WRITE_ERROR:
        if (c->answer.len + 1 >= ANSWER_MAX)
            return tr_error_set(err, TR_E2BIG, "answer from %s is larger than %u MiB", c->base,
                                ANSWER_MAX >> 20);
        snprintf(why, sizeof(why), "out of memory while reading the answer");
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return tr_error_set(err, TR_EINVAL, "invalid scheduler URL '%s': %s", c->base,
                            curl_msg[0] ? curl_msg : curl_easy_strerror(cc));
    default:
        if (os_errno != 0)
            snprintf(why, sizeof(why), "%s", strerror((int)os_errno));
        else
            snprintf(why, sizeof(why), "%s", curl_msg[0] ? curl_msg : curl_easy_strerror(cc));
        break;
    }
    lower_first(why);
    return tr_error_set(err, TR_EUNAVAIL, "cannot reach scheduler at %s: %s", c->base, why);
}

/* Maps the API's stable error code to ours, for callers that branch on it. */
static int code_from_api(const char *code)
{
    static const struct
    {
        const char *name;
        int code;
    } map[] = {
        {"malformed_json", TR_EJSON},      {"invalid_request", TR_EINVAL},
        {"invalid_argument", TR_EINVAL},   {"lua_error", TR_ELUA},
        {"cycle", TR_ECYCLE},              {"unknown_dependency", TR_EDEP},
        {"duplicate_task", TR_EDUP},       {"limit_exceeded", TR_ELIMIT},
        {"unauthorized", TR_EACCES},       {"not_found", TR_ENOENT},
        {"method_not_allowed", TR_EINVAL}, {"conflict", TR_ECONFLICT},
        {"too_large", TR_E2BIG},           {"unavailable", TR_EAGAIN},
    };
    for (size_t i = 0; i < TR_ARRAY_LEN(map); i++) {
        if (strcmp(map[i].name, code) == 0)
            return map[i].code;
    }
    return TR_EIO;
}

/* Turns a 4xx/5xx answer into err; the body should be {"error": {...}}. */
static int refusal(struct tr_client *c, json_t *body, struct tr_error *err)
{
    json_t *e = json_object_get(body, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code == NULL || msg == NULL) {
        char sample[120];
        tr_log_escape(sample, sizeof(sample), c->answer.buf, c->answer.len);
        return tr_error_set(err, TR_EPROTO, "%s answered HTTP %ld: %s", c->base, c->status,
                            sample);
    }
    snprintf(c->error_code, sizeof(c->error_code), "%s", code);
    int rc = code_from_api(code);
    if (rc == TR_EACCES)
        return tr_error_set(err, rc, "%s (set TRELLIS_TOKEN or use --token-file)", msg);
    return tr_error_set(err, rc, "%s", msg);
}

static int call_once(struct tr_client *c, const char *method, const char *path,
                     const json_t *body, long timeout_s, json_t **out, struct tr_error *err);

/* Redirects followed per call: a standby points at the leader, which answers. */
#define REDIRECTS_MAX 3

/*
 * The leader a standby's 307 names (docs/ha.md): the JSON error's "leader",
 * an http(s) base URL. NULL when the answer is no such redirect.
 */
static char *leader_of(const struct tr_client *c, const json_t *body)
{
    if (c->status != 307 && c->status != 308)
        return NULL;
    const char *l = json_string_value(json_object_get(json_object_get(body, "error"), "leader"));
    if (l == NULL || (strncmp(l, "http://", 7) != 0 && strncmp(l, "https://", 8) != 0))
        return NULL;
    size_t n = strlen(l);
    while (n > 0 && l[n - 1] == '/')
        n--;
    return tr_strndup(l, n);
}

int tr_client_call(struct tr_client *c, const char *method, const char *path,
                   const json_t *body, long timeout_s, json_t **out, struct tr_error *err)
{
    int rc = 0;
    for (int hop = 0;; hop++) {
        rc = call_once(c, method, path, body, timeout_s, out, err);
        if (rc == 0 || c->status == 0 || hop == REDIRECTS_MAX)
            break;
        json_t *j = json_loadb(c->answer.buf, c->answer.len, 0, NULL);
        char *leader = leader_of(c, j);
        json_decref(j);
        if (leader == NULL)
            break;
        if (strcmp(leader, c->base) == 0) {
            tr_free(leader); /* pointed back at itself: no progress to make */
            break;
        }
        /* The leader serves this client's later calls as well. */
        tr_free(c->base);
        c->base = leader;
        if (err != NULL)
            tr_error_init(err);
    }
    return rc;
}

static int call_once(struct tr_client *c, const char *method, const char *path,
                     const json_t *body, long timeout_s, json_t **out, struct tr_error *err)
{
    *out = NULL;
    c->error_code[0] = '\0';
    c->status = 0;
    tr_buf_reset(&c->answer);

    int rc = TR_ENOMEM;
    char *url = NULL;
    char *payload = NULL;
    struct curl_slist *headers = NULL;
    struct tr_buf u;
    tr_buf_init(&u, 0);
    if (tr_buf_addf(&u, "%s%s", c->base, path) < 0)
        goto out;
    url = tr_buf_detach(&u, NULL);
    if (url == NULL)
        goto out;
    if (body != NULL) {
        /* jansson allocates with malloc: copy into our allocator's domain. */
        char *p = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (p == NULL)
            goto out;
        payload = tr_strdup(p);
        free(p);
        if (payload == NULL)
            goto out;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (h == NULL)
        goto out;
    headers = h;
    if (body != NULL) {
        h = curl_slist_append(headers, "Content-Type: application/json");
        if (h == NULL)
            goto out;
    }
    if (c->auth_header != NULL) {
        h = curl_slist_append(headers, c->auth_header);
        if (h == NULL)
            goto out;
    }
    /* Without Expect, curl would wait a second for "100 Continue" on large bodies. */
    h = curl_slist_append(headers, "Expect:");
    if (h == NULL)
        goto out;

    CURL *k = c->curl;
    char curl_msg[CURL_ERROR_SIZE] = "";
    curl_easy_reset(k);
    curl_easy_setopt(k, CURLOPT_URL, url);
    curl_easy_setopt(k, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(k, CURLOPT_TIMEOUT, timeout_s > 0 ? timeout_s : DEFAULT_TIMEOUT_S);
    curl_easy_setopt(k, CURLOPT_NOPROXY, c->noproxy);
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(k, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(k, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(k, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(k, CURLOPT_USERAGENT, "trellis-cli");
    if (payload != NULL) {
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }

    CURLcode cc = curl_easy_perform(k);
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, NULL);
    if (cc != CURLE_OK) {
        lower_first(curl_msg);
        rc = transport_error(c, cc, timeout_s > 0 ? timeout_s : DEFAULT_TIMEOUT_S, curl_msg,
                             err);
        goto out;
    }
    curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &c->status);

    json_t *j;
    if (c->answer.len == 0) {
        j = json_null();
    } else {
        json_error_t jerr;
        j = json_loadb(c->answer.buf, c->answer.len, JSON_DECODE_ANY, &jerr);
        if (j == NULL) {
            char sample[120];
            tr_log_escape(sample, sizeof(sample), c->answer.buf, c->answer.len);
            rc = tr_error_set(err, TR_EPROTO,
                              "unexpected answer from %s (HTTP %ld, not JSON): %s", c->base,
                              c->status, sample);
            goto out;
        }
    }
    if (c->status >= 200 && c->status < 300) {
        *out = j;
        rc = 0;
    } else {
        rc = refusal(c, j, err);
        json_decref(j);
    }

out:
    if (rc == TR_ENOMEM)
        tr_error_set(err, rc, "out of memory");
    curl_slist_free_all(headers);
    tr_free(payload);
    tr_free(url);
    tr_buf_release(&u);
    return rc;
}

int tr_client_get(struct tr_client *c, const char *path, json_t **out, struct tr_error *err)
{
    return tr_client_call(c, "GET", path, NULL, DEFAULT_TIMEOUT_S, out, err);
}

int tr_client_post(struct tr_client *c, const char *path, const json_t *body, json_t **out,
                   struct tr_error *err)
{
    return tr_client_call(c, "POST", path, body, DEFAULT_TIMEOUT_S, out, err);
}
