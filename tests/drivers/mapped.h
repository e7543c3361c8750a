/* mapped.h -- for the test drivers: whether a library is loaded into this process. */
#ifndef CDL_TEST_MAPPED_H
#define CDL_TEST_MAPPED_H
#include <stdio.h>
#include <string.h>

/* 1 when some mapping of this process (/proc/self/maps) has a path containing
 * "/NAME" (e.g. "libmpi"), 0 if none, -1 when maps cannot be read. */
static int lib_mapped(const char *name) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096], pat[256];
    snprintf(pat, sizeof pat, "/%s", name);
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, pat) != NULL;
    fclose(f);
    return found;
}
#endif
