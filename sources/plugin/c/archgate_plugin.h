/* archgate source plugin ABI, version 1. See docs/plugins.md. */
#ifndef ARCHGATE_PLUGIN_H
#define ARCHGATE_PLUGIN_H

#include <stdint.h>

#define ARCHGATE_ABI_VERSION 1

typedef struct archgate_plugin_v1 {
    /* Must be ARCHGATE_ABI_VERSION. */
    uint32_t abi_version;
    /* Static, NUL-terminated. */
    const char *name;
    /* request: JSON, NUL-terminated, owned by archgate, valid during the call.
     * Returns JSON, NUL-terminated, allocated by the plugin, never NULL;
     * archgate gives it back to free_string. */
    char *(*load)(const char *request);
    void (*free_string)(char *s);
} archgate_plugin_v1;

/* The one symbol archgate looks up. */
const archgate_plugin_v1 *archgate_plugin_entry(void);

#endif
