/* adversarial_text.h -- HotFlip: gradient-guided character flips against a text
 * classifier (adversarial_text.c).  Runtime-internal (the trainer's eval --attack and
 * train --adversarial use it through cdl_adv); not installed.
 *
 * Spec: hotflip[:flips=N,cand=K,ratio=R,show=S] (cdl_attack_parse hands it here):
 *   flips  characters flipped per word at most (1; kept in cdl_attack.steps)
 *   cand   candidates per word and flip confirmed by a forward pass (10)
 *   ratio  training: the fraction of each batch attacked (0.5)
 *   show   eval: print the first S words whose prediction the attack changed (0)
 */
#ifndef CDL_ADVERSARIAL_TEXT_H
#define CDL_ADVERSARIAL_TEXT_H

#include "cdl.h"

#include <stdio.h>

/* An attack spec "name[:key=value,...]" taken apart in a copy, for cdl_attack_parse and
 * cdl_hotflip_parse (adversarial.c), so that both word their errors alike. */
typedef struct adv_spec {
    const char *spec;             /* as given, for messages */
    char buf[256], *rest, *save;  /* the copy: name, then the key=value list (NULL: none) */
    int started, failed;          /* failed: a pair was not key=value (the message is set) */
} adv_spec;
/* The name (the part before ':'); NULL and "spec too long". */
const char *adv_spec_open(adv_spec *s, const char *spec);
/* The next pair: 1 with *key and *val set; 0 at the end, or with s->failed set and the
 * message "'kv' is not key=value". */
int adv_spec_next(adv_spec *s, char **key, char **val);

int cdl_hotflip_parse(cdl_attack *a, const char *spec);     /* -1 and a message */
void cdl_hotflip_str(const cdl_attack *a, char *buf, size_t n);

/* What the attack needs besides the model: the ids input (i32 [B, T], id 0 padding,
 * 1 unknown), the labels input (i32 [B]), the vocabulary (cdl_vocab text form,
 * "chars:..."; its ids 2..n-1 are the candidate characters) and, for printing examples,
 * the class names (one a line, or NULL) and where to print them (NULL: nowhere). */
typedef struct cdl_hotflip_io {
    int ids, labels;
    const char *vocab, *classes;
    FILE *show;
} cdl_hotflip_io;

typedef struct cdl_hotflip cdl_hotflip;
/* The model must have a perturb() input (CDL_T_PERTURB, [B, T, D]: the gradient with
 * respect to the embedding output) and one trainable table [V, D] (V at least the
 * vocabulary's size): the embedding feeding it.  All the scratch is allocated here,
 * once.  NULL and a message. */
cdl_hotflip *cdl_hotflip_new(const cdl_model *m, const cdl_attack *a, const cdl_hotflip_io *io);
void cdl_hotflip_free(cdl_hotflip *h);
/* Flip characters of rows 0..rows-1 of net->in[ids] (see adversarial_text.c): the
 * other inputs are left as they were.  No allocation.  0, or -1 and a message. */
int cdl_hotflip_perturb(cdl_hotflip *h, cdl_net *net, int rows);
/* Words attacked (correct when clean), words whose prediction the attack changed, and
 * characters flipped, since cdl_hotflip_new. */
void cdl_hotflip_counts(const cdl_hotflip *h, int64_t *attacked, int64_t *changed, int64_t *flips);

/* adversarial.c: a cdl_adv running HotFlip (cdl_adv_perturb calls cdl_hotflip_perturb),
 * and its HotFlip state (NULL for the other attacks). */
cdl_adv *cdl_adv_new_text(const cdl_model *m, const cdl_attack *a, const cdl_hotflip_io *io);
const cdl_hotflip *cdl_adv_text(const cdl_adv *s);

#endif
