/* fuzz_ckpt.c -- libFuzzer harness for the checkpoint loader (runtime/ckpt.c, json.c).
 *
 * Each input is a whole checkpoint file, loaded into a tiny fixed model with and
 * without an Adam optimizer (checkpoints, and parameter files without cdl metadata).  Built by `make fuzz` with -DCDL_FUZZING, which makes
 * the loader accept wrong CRC values so that the fuzzer gets past them to the
 * structural checks.  With CDL_FUZZ_CORPUS=DIR, initialisation saves a valid
 * checkpoint there as a seed.  A refused input must leave the net untouched.
 */
#include "cdl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cdl_tensor params[] = {
    {.name = "fc1.weight", .dtype = CDL_F32, .offset = 0, .rank = 2, .dims = {3, 2}},
    {.name = "fc1.bias", .dtype = CDL_F32, .offset = 6, .rank = 1, .dims = {3}},
    {.name = "bn.mean", .dtype = CDL_F32, .offset = 9, .rank = 1, .dims = {3}, .flags = CDL_T_STATE},
};
/* An input and some activation bytes: every block of the net is non-empty (LeakSanitizer
 * does not see a pointer one past a zero-size block as a reference to it). */
static const cdl_tensor inputs[] = {
    {.name = "x", .dtype = CDL_F32, .rank = 2, .dims = {2, 2}, .flags = CDL_T_BATCHED},
};
static const cdl_model model = {
    .abi = CDL_ABI, .name = "fuzz", .fingerprint = 0xf0f0f0f0deadbeefull, .real_size = 4, .batch = 2,
    .n_params = 3, .params = params, .param_count = 12, .train_count = 9,
    .n_inputs = 1, .inputs = inputs, .act_bytes = 64,
};
static cdl_net *net;
static cdl_optim opt;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    net = cdl_net_new(&model);
    cdl_optim_cfg cfg;
    cdl_optim_defaults(&cfg, CDL_OPT_ADAM);
    if (!net || cdl_optim_init(&opt, &model, &cfg) < 0) abort();
    for (int i = 0; i < 12; i++) ((float *)net->param)[i] = (float)i;
    const char *dir = getenv("CDL_FUZZ_CORPUS");
    if (dir) {
        char p[4096];
        snprintf(p, sizeof p, "%s/seed_adam.ckpt", dir);
        if (cdl_ckpt_save(p, net, &opt, NULL) < 0) fprintf(stderr, "seed: %s\n", cdl_last_error());
        snprintf(p, sizeof p, "%s/seed_plain.ckpt", dir);
        if (cdl_ckpt_save(p, net, NULL, NULL) < 0) fprintf(stderr, "seed: %s\n", cdl_last_error());
        /* A parameter file (no cdl metadata, as PyTorch writes one), F64. */
        double v[12];
        for (int i = 0; i < 12; i++) v[i] = 0.5 * i;
        cdl_st_tensor t[3];
        for (int i = 0; i < 3; i++)
            t[i] = (cdl_st_tensor){params[i].name, CDL_F64, params[i].rank, {0}, v + params[i].offset};
        memcpy(t[0].dims, params[0].dims, sizeof t[0].dims);
        memcpy(t[1].dims, params[1].dims, sizeof t[1].dims);
        memcpy(t[2].dims, params[2].dims, sizeof t[2].dims);
        const char *kv[] = {"format", "pt"};
        snprintf(p, sizeof p, "%s/seed_params.safetensors", dir);
        if (cdl_safetensors_write(p, 3, t, 1, kv) < 0) fprintf(stderr, "seed: %s\n", cdl_last_error());
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    float before[12];
    for (int i = 0; i < 12; i++) ((float *)net->param)[i] = (float)i;
    memcpy(before, net->param, sizeof before);
    if (cdl_ckpt_load_mem(data, size, "fuzz", net, NULL, NULL) < 0 &&
        memcmp(before, net->param, sizeof before) != 0)
        abort();                                  /* a refused file changed the net */
    cdl_ckpt_meta meta;
    cdl_ckpt_load_mem(data, size, "fuzz", net, &opt, &meta);
    return 0;
}
