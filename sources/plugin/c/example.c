/* An archgate source plugin in C: proof that the ABI is not Rust-only.
 *
 * Its location is a directory holding x86_64.oci.tar (built); it reports
 * aarch64 failed. The JSON handling is deliberately minimal.
 *
 * Build: cc -shared -fPIC -o libexample.so example.c
 * -DABI=N, -DMODE=1 (invalid JSON), 2 (schema violation), 3 (an error)
 * build the misbehaving variants archgate's tests use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archgate_plugin.h"

#ifndef ABI
#define ABI ARCHGATE_ABI_VERSION
#endif
#ifndef MODE
#define MODE 0
#endif

/* The value of "location" in the request, or "" (no escapes handled). */
static void location_of(const char *request, char *out, size_t n) {
    const char *key = "\"location\":\"";
    const char *p = strstr(request, key);
    out[0] = '\0';
    if (!p) return;
    p += strlen(key);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < n) { out[i] = p[i]; i++; }
    out[i] = '\0';
}

static char *load(const char *request) {
    const char *fixed = NULL;
    if (MODE == 1) fixed = "this is not json";
    if (MODE == 2) fixed = "{\"ok\":{\"id\":1}}";
    if (MODE == 3) fixed = "{\"error\":\"the build system is down\"}";
    if (fixed) return strdup(fixed);
    char dir[4096];
    location_of(request, dir, sizeof dir);
    const char *fmt =
        "{\"ok\":{\"id\":\"CRemix-1-20241101.0\",\"status\":\"FINISHED_INCOMPLETE\",\"release\":\"1\","
        "\"images\":{\"fedora\":["
        "{\"arch\":\"x86_64\",\"built\":{\"location\":\"%s/x86_64.oci.tar\"}},"
        "{\"arch\":\"aarch64\",\"failed\":\"the C remix's aarch64 builder is offline\"}]}}}";
    size_t len = strlen(fmt) + strlen(dir) + 1;
    char *out = malloc(len);
    if (!out) return strdup("{\"error\":\"out of memory\"}");
    snprintf(out, len, fmt, dir);
    return out;
}

static void free_string(char *s) { free(s); }

static const archgate_plugin_v1 plugin = { ABI, "c-example", load, free_string };

const archgate_plugin_v1 *archgate_plugin_entry(void) { return &plugin; }
