/* optim_groups.c -- parameter groups: per-tensor learning rate and weight decay, and
 * frozen tensors, chosen by name patterns (the trainer's --groups, --no-decay and
 * --freeze; see optim_groups.h and docs/trainer.md).
 *
 * A pattern is a glob (fnmatch: `*` matches any run of characters, dots included,
 * `?` one character) matched against a trainable tensor's dotted name or any of its
 * dotted suffixes: `bias` matches `fc1.bias` and `block2.conv1.bias`, `conv1.*`
 * matches `conv1.weight` and `enc.conv1.bias`.  The word `norm` also matches every
 * rank-1 tensor named `*.weight`: the scales of the normalisation layers (the layers'
 * other weights have rank >= 2), so `bias,norm` is PyTorch's usual AdamW recipe (no
 * decay where `p.ndim < 2`).  groups "PATTERNS:lr=X,weight_decay=Y;..." are
 * torch.optim's param groups (a group's lr follows the schedule in proportion: X * lr_t
 * / cfg.lr); no_decay sets weight decay 0 (over a group's); freeze wins over both: no
 * update, no optimizer state change, and cdl_optim_zero_frozen zeroes the gradient
 * before the norm (requires_grad=False).  A pattern that matches no trainable tensor
 * is an error (a typo would otherwise train the whole model silently), and so is a
 * tensor in two groups, as in torch.optim.
 */
#include "optim_groups.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Does pattern pat (one item) match tensor t? */
static int group_match(const char *pat, const cdl_tensor *t) {
    if (strcmp(pat, "norm") == 0 && t->rank == 1) {
        size_t n = strlen(t->name);
        if (n >= 7 && strcmp(t->name + n - 7, ".weight") == 0) return 1;
    }
    for (const char *s = t->name; s; s = strchr(s, '.')) {
        if (*s == '.') s++;
        if (fnmatch(pat, s, 0) == 0) return 1;
    }
    return 0;
}

/* Apply fn(o, i, arg) to each trainable tensor i matched by one of the comma-separated
 * patterns of list; -1 and a message when a pattern matches nothing.  what names the
 * option in messages. */
static int group_each(cdl_optim *o, const char *list, const char *what, int (*fn)(cdl_optim *, int, const void *),
                      const void *arg) {
    char buf[512], *save = NULL;
    size_t len = strlen(list);
    if (len >= sizeof buf) return cdl_fail("%s '%s': too long", what, list);
    memcpy(buf, list, len + 1);
    const cdl_model *m = o->model;
    for (char *pat = strtok_r(buf, ",", &save); pat; pat = strtok_r(NULL, ",", &save)) {
        while (*pat == ' ') pat++;
        for (char *e = pat + strlen(pat); e > pat && e[-1] == ' ';) *--e = 0;
        if (!*pat) continue;
        int hits = 0;
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *t = &m->params[i];
            if ((t->flags & CDL_T_STATE) || !group_match(pat, t)) continue;
            if (fn(o, i, arg) < 0) return -1;
            hits++;
        }
        if (!hits)
            return cdl_fail("%s: pattern '%s' matches no trainable parameter of model %s", what, pat, m->name);
    }
    return 0;
}

typedef struct group_set {
    int group;                   /* 1-based group number */
    double lr, wd;               /* < 0: keep */
} group_set;

static int set_group(cdl_optim *o, int i, const void *arg) {
    const group_set *g = arg;
    cdl_optim_pset *p = &o->pset[i];
    if (p->group && p->group != g->group)
        return cdl_fail("--groups: parameter %s is in group %d and group %d", o->model->params[i].name, p->group,
                        g->group);
    p->group = g->group;
    if (g->lr >= 0) p->lr_scale = g->lr / o->cfg.lr;
    if (g->wd >= 0) p->weight_decay = g->wd;
    return 0;
}

static int set_no_decay(cdl_optim *o, int i, const void *arg) {
    (void)arg;
    o->pset[i].weight_decay = 0;
    return 0;
}

static int set_frozen(cdl_optim *o, int i, const void *arg) {
    (void)arg;
    o->pset[i].frozen = 1;
    return 0;
}

/* One group "PATTERNS:lr=X,weight_decay=Y" (number n). */
static int group_parse_one(cdl_optim *o, char *spec, int n) {
    char *keys = strchr(spec, ':');
    if (!keys) return cdl_fail("--groups '%s': want PATTERNS:lr=X,weight_decay=Y", spec);
    *keys++ = 0;
    group_set g = {n, -1, -1};
    char *save = NULL;
    for (char *kv = strtok_r(keys, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        while (*kv == ' ') kv++;
        char *val = strchr(kv, '=');
        double v;
        if (!val || cdl_parse_f64(val + 1, &v) < 0 || !(v >= 0))
            return cdl_fail("--groups: group %d: '%s' needs a number >= 0 (lr=X, weight_decay=Y)", n, kv);
        *val = 0;
        if (strcmp(kv, "lr") == 0) g.lr = v;
        else if (strcmp(kv, "weight_decay") == 0 || strcmp(kv, "wd") == 0) g.wd = v;
        else return cdl_fail("--groups: group %d: unknown key '%s' (lr, weight_decay)", n, kv);
    }
    if (g.lr >= 0 && !(o->cfg.lr > 0))
        return cdl_fail("--groups: group %d sets lr, which scales with the optimizer's lr; that is %g", n, o->cfg.lr);
    return group_each(o, spec, "--groups", set_group, &g);
}

/* NULL and "none" (which clears a setting of the model's train {} section) mean "". */
static const char *group_off(const char *s) { return !s || strcmp(s, "none") == 0 ? "" : s; }

int cdl_optim_groups(cdl_optim *o, const char *groups, const char *no_decay, const char *freeze) {
    groups = group_off(groups), no_decay = group_off(no_decay), freeze = group_off(freeze);
    if (!*groups && !*no_decay && !*freeze) return 0;
    const cdl_model *m = o->model;
    free(o->pset);
    if (!(o->pset = calloc((size_t)m->n_params, sizeof *o->pset)))
        return cdl_fail("cdl_optim_groups: out of memory");
    for (int i = 0; i < m->n_params; i++) o->pset[i] = (cdl_optim_pset){1, o->cfg.weight_decay, 0, 0};
    char buf[1024], *save = NULL;
    size_t len = strlen(groups);
    if (len >= sizeof buf) return cdl_fail("--groups: too long");
    memcpy(buf, groups, len + 1);
    int n = 0;
    for (char *g = strtok_r(buf, ";", &save); g; g = strtok_r(NULL, ";", &save))
        if (group_parse_one(o, g, ++n) < 0) return -1;
    if (*no_decay && group_each(o, no_decay, "--no-decay", set_no_decay, NULL) < 0) return -1;
    if (*freeze && group_each(o, freeze, "--freeze", set_frozen, NULL) < 0) return -1;
    return 0;
}

void cdl_optim_zero_frozen(const cdl_optim *o, cdl_net *net) {
    if (!o->pset) return;
    const cdl_model *m = o->model;
    for (int i = 0; i < m->n_params; i++)
        if (o->pset[i].frozen && !(m->params[i].flags & CDL_T_STATE))
            memset((char *)net->grad + m->params[i].offset * (size_t)m->real_size, 0,
                   (size_t)cdl_tensor_numel(&m->params[i], m->batch) * (size_t)m->real_size);
}

int cdl_optim_describe(const cdl_optim *o, char *buf, size_t size) {
    int frozen = 0, nodecay = 0, grouped = 0;
    if (!o->pset) return snprintf(buf, size, "one group");
    for (int i = 0; i < o->model->n_params; i++) {
        if (o->model->params[i].flags & CDL_T_STATE) continue;
        frozen += o->pset[i].frozen;
        nodecay += !o->pset[i].frozen && o->pset[i].weight_decay == 0 && o->cfg.weight_decay != 0;
        grouped += o->pset[i].group != 0;
    }
    return snprintf(buf, size, "%d tensors frozen, %d without weight decay, %d in --groups", frozen, nodecay, grouped);
}
