/* optim_groups.h -- parameter groups of cdl_optim (optim_groups.c has the rules). */
#ifndef CDL_OPTIM_GROUPS_H
#define CDL_OPTIM_GROUPS_H
#include "cdl.h"

/* One trainable tensor's settings under parameter groups (cdl_optim.pset[param]). */
typedef struct cdl_optim_pset {
    double lr_scale;             /* its lr = lr_scale * the step's lr (group lr / optimizer lr) */
    double weight_decay;
    int frozen;                  /* no update, no optimizer state change, gradient zeroed */
    int group;                   /* 1-based --groups entry, 0: none */
} cdl_optim_pset;

/* After cdl_optim_init: groups "PATTERNS:lr=X,weight_decay=Y;...", no_decay and freeze
 * "PATTERNS" ("", NULL or "none": unused).  -1 and a message on a pattern matching
 * nothing, a tensor in two groups, a bad key. */
int cdl_optim_groups(cdl_optim *o, const char *groups, const char *no_decay, const char *freeze);
/* Zero the frozen tensors' gradients (before the gradient norm and clipping). */
void cdl_optim_zero_frozen(const cdl_optim *o, cdl_net *net);
/* "N tensors frozen, M without weight decay, K in --groups" (or "one group"). */
int cdl_optim_describe(const cdl_optim *o, char *buf, size_t size);

#endif
