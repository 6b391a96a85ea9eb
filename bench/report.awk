# bench/report.awk - the comparison table of bench/run.sh.
#
# Reads result lines "<system> <workload> key=value ..." (trellis-bench's and
# the peers' run_peers.sh output; '#' lines are skipped), takes per system,
# workload and key the median (and range) over all the lines seen (one per
# repeat), and prints one row per metric: Trellis, each peer, and the ratio
# that reads "how many times better Trellis is" (Trellis/peer for throughput,
# peer/Trellis for latency, time and memory), next to the target of the
# foundation issue.
#
# Usage: awk -f report.awk trellis.txt peers.txt

function add(k, v) { vals[k] = (k in vals) ? vals[k] " " v : v }

# Sorts the numbers of list "a b c" into s[1..n]; returns n.
function sorted(list, s,    n, i, j, t) {
    n = split(list, s, " ")
    for (i = 2; i <= n; i++) {
        t = s[i] + 0
        for (j = i - 1; j >= 1 && s[j] + 0 > t; j--) s[j + 1] = s[j]
        s[j + 1] = t
    }
    return n
}

function median(list,    s, n) {
    n = sorted(list, s)
    if (n == 0) return ""
    return (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
}

function range(list, fmt,    s, n) {
    n = sorted(list, s)
    if (n < 2) return ""
    return sprintf(" [" fmt "-" fmt "]", s[1], s[n])
}

function cell(sys, wl, key, fmt, withrange,    k) {
    k = sys SUBSEP wl SUBSEP key
    if (!(k in vals)) return "-"
    return sprintf(fmt, median(vals[k])) (withrange ? range(vals[k], fmt) : "") \
           " (" runs[sys SUBSEP wl] ")"
}

# "12.3x" (better when > 1), "*" appended when the sizes differ; "-" without data.
function ratio(peer, wl, key, higher,    kt, kp, t, p, r, mark) {
    kt = "trellis" SUBSEP wl SUBSEP key
    kp = peer SUBSEP wl SUBSEP key
    if (!(kt in vals) || !(kp in vals)) return "-"
    t = median(vals[kt]); p = median(vals[kp])
    if (t + 0 == 0 || p + 0 == 0) return "-"
    r = higher ? t / p : p / t
    mark = (size["trellis" SUBSEP wl] != size[peer SUBSEP wl]) ? "*" : ""
    if (mark != "") differ = 1
    return sprintf(r >= 100 ? "%.0fx%s" : "%.1fx%s", r, mark)
}

function met(wl, key, op, bound,    k, m) {
    k = "trellis" SUBSEP wl SUBSEP key
    if (!(k in vals)) return "-"
    m = median(vals[k]) + 0
    if (op == ">=") return (m >= bound) ? "yes" : "NO"
    return (m < bound) ? "yes" : "NO"
}

function row(wl, key, label, fmt, higher, target, op, bound) {
    printf "%-3s %-16s %-34s %-18s %-7s %-18s %-7s %-18s %-7s %-10s %s\n", wl, label,
        cell("trellis", wl, key, fmt, 1),
        cell("dask", wl, key, fmt, 0), ratio("dask", wl, key, higher),
        cell("dask-satinf", wl, key, fmt, 0), ratio("dask-satinf", wl, key, higher),
        cell("celery", wl, key, fmt, 0), ratio("celery", wl, key, higher),
        target, (op == "" ? "" : met(wl, key, op, bound))
}

/^#/ || NF < 3 { next }
{
    sys = $1; wl = $2
    runs[sys SUBSEP wl]++
    for (i = 3; i <= NF; i++) {
        eq = index($i, "=")
        if (eq == 0) continue
        key = substr($i, 1, eq - 1); v = substr($i, eq + 1)
        if (key == "n") size[sys SUBSEP wl] = v
        add(sys SUBSEP wl SUBSEP key, v)
    }
}
END {
    printf "Medians over the repeats (number of measured repeats in parentheses); ratio = how\n"
    printf "many times better Trellis is: Trellis/peer for throughput, peer/Trellis for time\n"
    printf "and memory. dask = Dask defaults, dask-satinf = worker-saturation inf.\n\n"
    printf "%-3s %-16s %-34s %-18s %-7s %-18s %-7s %-18s %-7s %-10s %s\n", "", "metric",
        "Trellis [min-max]", "Dask", "ratio", "Dask satinf", "ratio", "Celery", "ratio",
        "target", "met"
    row("W1", "tasks_per_s", "tasks/s", "%.0f", 1, ">= 50000", ">=", 50000)
    row("W1", "wall_s", "wall s", "%.3f", 0, "", "", 0)
    row("W2", "p50_us", "p50 us", "%.0f", 0, "< 1000", "<", 1000)
    row("W2", "p99_us", "p99 us", "%.0f", 0, "", "", 0)
    row("W3", "wall_s", "wall s", "%.3f", 0, "< 0.25", "<", 0.25)
    row("W3", "tasks_per_s", "tasks/s", "%.0f", 1, "", "", 0)
    row("W4", "bytes_per_task", "bytes/task", "%.0f", 0, "< 1024", "<", 1024)
    row("W4", "rss_peak", "peak RSS bytes", "%.0f", 0, "", "", 0)
    row("L", "load_s", "load s", "%.3f", 0, "< 0.5", "<", 0.5)
    row("L", "api_s", "POST s", "%.3f", 0, "", "", 0)
    row("H", "wall_s", "wall s", "%.3f", 0, "< 1.5", "<", 1.5)
    row("H", "in_flight", "calls in flight", "%.0f", 1, "", "", 0)
    row("F", "posts_per_s", "posts/s (64 cl.)", "%.0f", 1, ">= 5000", ">=", 5000)
    if (differ)
        printf "\n* the peer ran another size than Trellis (n=...): that ratio compares " \
               "different work.\n"
    for (k in size) {
        split(k, p, SUBSEP)
        if (p[1] == "trellis") printf "%s%s n=%s", (nsz++ ? ", " : "\nsizes: "), p[2], size[k]
    }
    if (nsz) printf "\n"
}
