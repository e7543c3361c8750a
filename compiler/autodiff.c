/* autodiff.c -- reverse mode, symbol to symbol.
 *
 * The gradient of the loss is built as ordinary IR appended to the graph: each op's
 * gradient rule (beside its shape rule in ops_*.c) makes nodes from ordinary ops, and
 * fan-out is summed by one helper (ad_acc), which also undoes broadcasting.  So the
 * optimizer passes and the emitters need no special cases for backward code, and
 * gradients with respect to inputs (adversarial training) come for free.
 *
 * Only nodes on a path from a requested leaf (parameters and/or real inputs) to the
 * loss are differentiated; everything else is pruned before it is made.
 *
 * Loops: a LOOP node's backward is another LOOP node over the same steps in reverse.
 * Its body is the forward body differentiated by the same machinery, reading the
 * forward values of step t through LOOP_SAVED nodes (the plan keeps exactly those per
 * step); it carries the gradients of the loop-carried values and one accumulator per
 * captured outer value (shared parameters sum over steps; a weight gradient's GEMM adds
 * into its accumulator itself).  Sums follow the tape's order, so that static and tape
 * agree bit for bit: an accumulator starts from the gradient of the readers after the
 * loop and adds each part of a step in turn.  A captured value read only as one step slice
 * x[.., t, ..] instead gets its gradient collected per step and stacked after the loop.
 */
#include "cdlc.h"

#include <string.h>

/* One term of a captured value's gradient in a loop body.  gemm: a GEMM a gradient
 * rule made for that input alone (ad_acc_gemm), which the tape runs with beta = 1 into
 * the gradient so far. */
typedef struct {
    int g;
    bool gemm;
} Part;

struct AD {
    const Graph *src;      /* the graph being differentiated (immutable during the sweep) */
    Graph *dst;            /* where gradient nodes go */
    bool *need;            /* src node lies on a wrt -> loss path */
    int *gsum;             /* src node -> dst node of its accumulated gradient, or -1 */
    int *xmap;             /* src node -> dst node holding its forward value, -1 = not yet */
    int **cot;             /* LOOP src node -> cotangents of its results (dst ids or -1) */
    /* loop bodies only */
    int fwd_loop;          /* the forward LOOP node's id in the enclosing dst graph */
    int *caps;             /* enclosing dst id -> capture node in dst body (lazy), or -1 */
    Part **parts;          /* capture src node -> its gradient's parts, in sweep order */
    int *nparts;
};

Graph *ad_dst(AD *ad) { return ad->dst; }
const Graph *ad_src(AD *ad) { return ad->src; }

/* ------------------------------------------------------------------ body value maps */

static const char *fwd_name(const Node *n);

/* The capture node of outer value `outer` in the backward body (made once); it goes by
 * the outer value's name, a gradient's too. */
static int body_capture(AD *ad, int outer) {
    if (ad->caps[outer] >= 0) return ad->caps[outer];
    Attrs at = {.i = {outer}};
    const Node *o = &ad->dst->parent->n[outer];
    int c = ir_add(ad->dst, OP_LOOP_CAPTURE, o->loc, 0, NULL, &at, NULL, DT_REAL);
    if (c < 0) die("capture failed");
    Node *x = &ad->dst->n[c];
    if (o->flags & NF_GRAD) x->flags |= NF_GRAD, x->grad_of = o->grad_of;
    else x->var = fwd_name(o);
    ad->caps[outer] = c;
    return c;
}

/* Is body node s a chain of views over a LOOP_CAPTURE? */
static bool invariant_view(const Graph *b, int s) {
    while (op_info[b->n[s].op].flags & OPF_VIEW) s = b->n[s].in[0];
    return b->n[s].op == OP_LOOP_CAPTURE;
}

int ad_x(AD *ad, int s) {
    if (!ad->caps) return s; /* top level: the gradient graph extends the forward one */
    if (ad->xmap[s] >= 0) return ad->xmap[s];
    const Node *n = &ad->src->n[s];
    int x;
    if (n->op == OP_LOOP_CAPTURE) {
        x = body_capture(ad, capture_of(n));
    } else if ((op_info[n->op].flags & OPF_VIEW) && n->nin == 1 && invariant_view(ad->src, s)) {
        /* A view of a captured outer value is the same at every step and has no per-step
         * storage to save: rebuild it over the capture, which makes the outer value an
         * input of the backward loop, alive until that loop has run. */
        int in = ad_x(ad, n->in[0]);
        Attrs at;
        memcpy(at.i, n->ia, sizeof at.i);
        memcpy(at.f, n->fa, sizeof at.f);
        x = ir_add(ad->dst, n->op, n->loc, 1, &in, &at, &n->shape, n->dtype);
        if (x < 0) die("view of a capture failed");
        ad->dst->n[x].var = n->var;
    } else {
        Attrs at = {.i = {ad->fwd_loop, s}};
        x = ir_add(ad->dst, OP_LOOP_SAVED, n->loc, 0, NULL, &at, &n->shape, n->dtype);
        if (x < 0) die("saved value failed");
        ad->dst->n[x].var = fwd_name(n);
    }
    ad->xmap[s] = x;
    return x;
}

int ad_add(AD *ad, int s, Op op, int nin, const int *in, const Attrs *at, const Shape *hint) {
    Loc loc = ad->src->n[s].loc;
    int id = ir_add(ad->dst, op, loc, nin, in, at, hint, DT_REAL);
    if (id < 0) die("gradient of %s (node %d) made an ill-shaped %s", op_info[ad->src->n[s].op].name, s, op_info[op].name);
    bool grad = false;   /* a gradient when made from one; a leaf is a forward constant */
    for (int k = 0; k < nin && !grad; k++) grad = ad->dst->n[in[k]].flags & NF_GRAD;
    if (grad) ad->dst->n[id].flags |= NF_GRAD;
    return id;
}

int ad_zero_grad(AD *ad, int src_node, const Shape *s) {
    int z = ad_add(ad, src_node, OP_CONST, 0, NULL, &(Attrs){0}, s);
    ad->dst->n[z].flags |= NF_GRAD;
    return z;
}

static void name_grad(Graph *dst, int g, const Node *n);

/* Zeros shaped like src node s: the initial value of its gradient (a loop's carried
 * gradient or accumulator), named after it. */
static int zeros_like(AD *ad, int s) {
    const Node *n = &ad->src->n[s];
    int z = ad_zero_grad(ad, s, &n->shape);
    name_grad(ad->dst, z, n);
    return z;
}

/* Sum grad (a dst node) over the axes that broadcasting added to reach src node s's shape. */
static int unbroadcast(AD *ad, int s, int grad) {
    const Shape *want = &ad->src->n[s].shape;
    Shape have = ad->dst->n[grad].shape;
    if (shape_eq(want, &have)) return grad;
    int64_t mask = 0;
    int lead = have.rank - want->rank;
    if (lead < 0) die("unbroadcast: gradient rank %d below value rank %d", have.rank, want->rank);
    for (int i = 0; i < have.rank; i++)
        if (i < lead || (want->d[i - lead] == 1 && have.d[i] != 1)) mask |= (int64_t)1 << i;
    int r = grad;
    if (mask) {
        Attrs at = {.i = {mask, 1}};
        r = ad_add(ad, s, OP_SUM, 1, &r, &at, NULL);
    }
    if (!shape_eq(&ad->dst->n[r].shape, want)) {
        Shape h = *want;
        r = ad_add(ad, s, OP_RESHAPE, 1, &r, NULL, &h);
    }
    return r;
}

/* gsum + m as the tape computes it: when m is a GEMM a rule made for this input alone,
 * the tape runs it with beta = 1 into the gradient so far (tape_gemm_dst), so here it
 * becomes matmul(a, b, gsum): the same GEMM call, so the same rounding (an add after
 * the product differs in the last bits once the BLAS blocks the inner dimension), and
 * one pass and one buffer fewer (the VAE's h feeds mu and logvar: GEMM, GEMM with
 * beta = 1; opt_inplace lets it write over gsum when gsum dies there).  Any other part
 * is added, as the tape adds it (a GEMM's product an add passes on included). */
static int acc_add(AD *ad, int s, int gsum, int m, bool gemm) {
    const Node *x = &ad->dst->n[m], *a = &ad->dst->n[gsum];
    if (gemm && x->op == OP_MATMUL && x->nin == 2 && shape_eq(&x->shape, &a->shape) && x->shape.batched == a->shape.batched) {
        int in[3] = {x->in[0], x->in[1], gsum};
        Attrs at = {.i = {x->ia[0], x->ia[1]}};
        return ad_add(ad, s, OP_MATMUL, 3, in, &at, NULL);
    }
    int in[2] = {gsum, m};
    return ad_add(ad, s, OP_ADD, 2, in, NULL, NULL);
}

/* A captured value's gradient in a loop body is kept as its list of parts: the
 * backward loop adds them one by one onto its running sum (grad_loop), in the order the
 * tape adds them into the parameter's gradient, not summed per step first. */
static void add_part(AD *ad, int s, int grad, bool gemm) {
    int n = ad->nparts[s];
    if ((n & (n - 1)) == 0) {   /* 0, 1, 2, 4, ...: full, twice the room */
        Part *p = NEWN(Part, n ? 2 * n : 1);
        if (n) memcpy(p, ad->parts[s], sizeof *p * (size_t)n);
        ad->parts[s] = p;
    }
    ad->parts[s][n] = (Part){grad, gemm};
    ad->nparts[s] = n + 1;
    if (ad->gsum[s] < 0) ad->gsum[s] = grad;
}

static void acc(AD *ad, int s, int grad, bool gemm) {
    if (!ad->need[s]) return;
    int g = unbroadcast(ad, s, grad);
    gemm = gemm && g == grad;
    if (ad->gsum[s] >= 0) {   /* the parts of a fan-out's gradient are named after the value too */
        name_grad(ad->dst, ad->gsum[s], &ad->src->n[s]);
        name_grad(ad->dst, g, &ad->src->n[s]);
    }
    if (ad->parts && ad->src->n[s].op == OP_LOOP_CAPTURE) add_part(ad, s, g, gemm);
    else if (ad->gsum[s] < 0) ad->gsum[s] = g;
    else ad->gsum[s] = acc_add(ad, s, ad->gsum[s], g, gemm);
}

void ad_acc(AD *ad, int s, int grad) { acc(ad, s, grad, false); }
void ad_acc_gemm(AD *ad, int s, int m) { acc(ad, s, m, true); }

/* ------------------------------------------------------------------ which nodes */

/* A node can carry gradient unless it is an integer, a stop_gradient, or the output of
 * an op without a gradient (backward helpers). */
static bool differentiable(const Node *n) {
    if (n->dtype != DT_REAL) return false;
    unsigned f = op_info[n->op].flags;
    return (f & (OPF_DIFF | OPF_CTRL)) && n->op != OP_STOP_GRAD;
}

/* need_fwd: depends on a wrt leaf (wrt[i] marks leaves; carry/capture leaves of bodies
 * come from the caller through wrt as well). */
static void forward_need(const Graph *g, const bool *wrt, bool *fw) {
    for (int i = 0; i < g->len; i++) {
        const Node *n = &g->n[i];
        fw[i] = wrt[i];
        if (fw[i] || !differentiable(n)) continue;
        for (int k = 0; k < n->nin && !fw[i]; k++) fw[i] = fw[n->in[k]];
    }
}

/* reach: the seeds depend on it. */
static void backward_reach(const Graph *g, const int *seeds, int nseeds, bool *rb) {
    memset(rb, 0, sizeof(bool) * (size_t)g->len);
    for (int k = 0; k < nseeds; k++)
        if (seeds[k] >= 0) rb[seeds[k]] = true;
    for (int i = g->len - 1; i >= 0; i--)
        if (rb[i])
            for (int k = 0; k < g->n[i].nin; k++) rb[g->n[i].in[k]] = true;
}

/* ------------------------------------------------------------------ the sweep */

static void sweep(AD *ad);

/* Cotangent of result k of loop L, recorded when its LOOP_OUT is swept. */
static void record_loop_out(AD *ad, int s) {
    const Node *n = &ad->src->n[s];
    int L = n->in[0];
    const Graph *b = ad->src->n[L].sub;
    if (!ad->cot[L]) {
        ad->cot[L] = NEWN(int, b->nres);
        for (int k = 0; k < b->nres; k++) ad->cot[L][k] = -1;
    }
    int k = loop_out_result(n);
    int g = ad->gsum[s];
    if (ad->cot[L][k] < 0) ad->cot[L][k] = g;
    else {
        int in[2] = {ad->cot[L][k], g};
        ad->cot[L][k] = ad_add(ad, s, OP_ADD, 2, in, NULL, NULL);
    }
}

/* The name a gradient of forward node n goes by: n's variable, parameter or op name. */
static const char *fwd_name(const Node *n) {
    if (n->op == OP_PARAM && n->name) return n->name;
    return n->var ? n->var : n->name ? n->name : op_info[n->op].name;
}

/* Gradient node g of dst holds the whole gradient of forward node n (the first such
 * value wins: a gradient passed on unchanged keeps the name of the later value). */
static void name_grad(Graph *dst, int g, const Node *n) {
    Node *x = &dst->n[g];
    if ((x->flags & NF_GRAD) && !x->grad_of) x->grad_of = fwd_name(n);
}

/* The carry node of backward carried value j, standing for forward body node s. */
static int body_carry(Graph *bb, const Graph *fb, int s, int j) {
    Attrs at = {.i = {j}};
    const Node *n = &fb->n[s];
    int c = ir_add(bb, OP_LOOP_CARRY, n->loc, 0, NULL, &at, &n->shape, DT_REAL);
    if (c < 0) die("carry failed");
    bb->n[c].flags |= NF_GRAD;
    name_grad(bb, c, n);   /* the carried gradient, or the accumulator, of n */
    return c;
}

/* When the gradient of capture cap (a forward body node) is exactly the scatter of one
 * step slice x[.., a + k t, ..] (k > 0) of the captured value x, on the axis the loop
 * would stack a collected result on, returns the slice's gradient (a body node of
 * sub->dst that owns its storage, so it can be kept per step); else -1.  The stacked
 * gradients then are x's gradient at positions a + k tmin, step k, T of them. */
static int step_slice_grad(AD *sub, const Node *ln, int cap) {
    int g = sub->gsum[cap];
    if (g < 0 || sub->nparts[cap] != 1) return -1;
    const Graph *bb = sub->dst;
    const Node *sl = &bb->n[g];
    if (sl->op != OP_SLICE_BWD || sl->ia[4] != 1 || sl->ia[5] < 1) return -1;
    int gy = sl->in[0];
    const Node *gn = &bb->n[gy];
    if (op_info[gn->op].flags & (OPF_CTRL | OPF_LEAF | OPF_VIEW)) return -1;
    const Shape *xs = &bb->parent->n[capture_of(&sub->src->n[cap])].shape;
    int axis = gn->shape.batched ? 1 : 0;
    int64_t k = sl->ia[5], first = sl->ia[1] + k * loop_first_t(ln), T = loop_count(ln);
    if (sl->ia[0] != axis || xs->rank != gn->shape.rank + 1 || xs->batched != gn->shape.batched) return -1;
    if (first < 0 || first + k * (T - 1) >= xs->d[axis]) return -1;
    for (int i = 0, j = 0; i < xs->rank; i++)
        if (i != axis && xs->d[i] != gn->shape.d[j++]) return -1;
    return gy;
}

/* The accumulator of captured body node s after this step: its carry plus each part of
 * this step's gradient in turn, as the tape adds them (a weight gradient's GEMM adds
 * into it itself: matmul with an accumulator input; the plan keeps such accumulators
 * in one slot updated in place, plan.c). */
static int acc_chain(AD *sub, int s, int carry) {
    int r = carry;
    for (int k = 0; k < sub->nparts[s]; k++) r = acc_add(sub, s, r, sub->parts[s][k].g, sub->parts[s][k].gemm);
    return r;
}

/* The backward of forward loop L (a src node of ad, top level). */
/* Which nodes of loop L's body need gradients (on a path from a leaf that needs one to a
 * result whose gradient arrives).  Both halves are fixpoints over the carries: a carried
 * value depends on a leaf when its initial value or the next step's value does, and
 * a carried result is reached when its carry is (it feeds the next step). */
static bool *body_need(AD *ad, int L) {
    const Node *ln = &ad->src->n[L];
    const Graph *fb = ln->sub;
    int *cot = ad->cot[L];
    bool *wrt = NEWN(bool, fb->len), *fw = NEWN(bool, fb->len);
    bool changed = true;
    while (changed) {
        changed = false;
        for (int i = 0; i < fb->len; i++) {
            const Node *n = &fb->n[i];
            if (n->op == OP_LOOP_CAPTURE) wrt[i] = ad->need[capture_of(n)] || wrt[i];
            if (n->op == OP_LOOP_CARRY) wrt[i] = wrt[i] || ad->need[ln->in[carry_index(n)]];
        }
        forward_need(fb, wrt, fw);
        for (int i = 0; i < fb->len; i++) {
            const Node *n = &fb->n[i];
            if (n->op == OP_LOOP_CARRY && !wrt[i] && fw[fb->res[carry_index(n)]]) wrt[i] = changed = true;
        }
    }
    int *seeds = NEWN(int, fb->nres);
    for (int k = 0; k < fb->nres; k++) seeds[k] = cot && cot[k] >= 0 ? fb->res[k] : -1;
    bool *rb = NEWN(bool, fb->len);
    backward_reach(fb, seeds, fb->nres, rb);
    /* carried values feed the next step: their results are reached if the carry is */
    changed = true;
    while (changed) {
        changed = false;
        for (int i = 0; i < fb->len; i++)
            if (fb->n[i].op == OP_LOOP_CARRY && rb[i] && !rb[fb->res[carry_index(&fb->n[i])]]) {
                seeds[carry_index(&fb->n[i])] = fb->res[carry_index(&fb->n[i])];
                backward_reach(fb, seeds, fb->nres, rb);
                changed = true;
            }
    }
    bool *need = NEWN(bool, fb->len);
    for (int i = 0; i < fb->len; i++) need[i] = fw[i] && rb[i];
    return need;
}

static void loop_grads_out(AD *ad, int L, int BL, const Graph *bb, const int *gsum, const int *bc_src, int nbc,
                           int first_acc, const int *coll, int ncoll);

static void grad_loop(AD *ad, int L) {
    const Node *ln = &ad->src->n[L];
    const Graph *fb = ln->sub;
    int nc = fb->ncarry;
    int *cot = ad->cot[L];

    bool *need = body_need(ad, L);
    Graph *dst = ad->dst;
    Graph *bb = ir_body_new(dst);
    AD sub = {.src = fb, .dst = bb, .fwd_loop = L};
    sub.need = NEWN(bool, fb->len);
    sub.gsum = NEWN(int, fb->len);
    sub.xmap = NEWN(int, fb->len);
    sub.cot = NEWN(int *, fb->len);
    sub.parts = NEWN(Part *, fb->len);
    sub.nparts = NEWN(int, fb->len);
    for (int i = 0; i < fb->len; i++) {
        sub.need[i] = need[i];
        sub.gsum[i] = sub.xmap[i] = -1;
    }
    sub.caps = NEWN(int, dst->len + 1);
    for (int i = 0; i <= dst->len; i++) sub.caps[i] = -1;

    /* Backward carries: gradients of the carried values, then one accumulator per
     * captured outer value that needs a gradient. */
    int nbc = 0, *bc_src = NEWN(int, fb->len + nc), *bc_init = NEWN(int, fb->len + nc);
    int *carry_node = NEWN(int, nc);
    for (int k = 0; k < nc; k++) carry_node[k] = -1;
    for (int i = 0; i < fb->len; i++)
        if (fb->n[i].op == OP_LOOP_CARRY) carry_node[carry_index(&fb->n[i])] = i;
    int first_acc;
    for (int k = 0; k < nc; k++) {
        int cn = carry_node[k];
        if (cn < 0 || !sub.need[cn]) continue;
        bc_src[nbc] = cn;
        bc_init[nbc] = cot && cot[k] >= 0 ? cot[k] : zeros_like(ad, ln->in[k]);
        nbc++;
    }
    first_acc = nbc;
    for (int i = 0; i < fb->len; i++) {
        const Node *n = &fb->n[i];
        if (n->op != OP_LOOP_CAPTURE || !sub.need[i]) continue;
        /* the running sum starts from the gradient so far (the readers after the loop):
         * the tape adds every step's parts onto that, too */
        int o = capture_of(n);
        bc_src[nbc] = i;
        bc_init[nbc] = ad->gsum[o] >= 0 ? ad->gsum[o] : zeros_like(ad, o);
        nbc++;
    }
    /* Carry nodes of the carried gradients now (the sweep reads them); the
     * accumulators' after the sweep, when it is known which are carried at all. */
    int *bc_node = NEWN(int, nbc > 0 ? nbc : 1);
    for (int j = 0; j < first_acc; j++) bc_node[j] = body_carry(bb, fb, bc_src[j], j);

    /* Seeds: next step's carried gradients, and this step's slice of each collected
     * result's gradient. */
    for (int j = 0; j < first_acc; j++) {
        int k = carry_index(&fb->n[bc_src[j]]);
        ad_acc(&sub, fb->res[k], bc_node[j]);
    }
    for (int k = nc; k < fb->nres; k++) {
        if (!cot || cot[k] < 0) continue;
        const Node *r = &fb->n[fb->res[k]];
        int c = body_capture(&sub, cot[k]);
        /* position t - first t of the stack holds step t (cdl_steps_to_batch) */
        int64_t p0 = -loop_first_t(ln);
        Attrs at = {.i = {r->shape.batched ? 1 : 0, p0, p0 + 1, 1, 1, 1}};
        int sl = ad_add(&sub, fb->res[k], OP_SLICE, 1, &c, &at, NULL);
        ad_acc(&sub, fb->res[k], sl);
    }
    sweep(&sub);

    /* A captured value read only as x[.., t, ..] gets its gradient per step as a
     * collected result (one slot per step, stacked after the loop) instead of an
     * accumulator that scatters each step's slice into a full-size zeroed gradient
     * (quadratic in T).  Those leave the carried list; the rest keep their carry. */
    int *coll = NEWN(int, nbc + 1), ncoll = 0, nkeep = first_acc;
    for (int j = first_acc; j < nbc; j++) {
        if (step_slice_grad(&sub, ln, bc_src[j]) >= 0) {
            coll[ncoll++] = bc_src[j];
            continue;
        }
        int o = capture_of(&fb->n[bc_src[j]]);
        if (bc_init[j] == ad->gsum[o]) ad->gsum[o] = -1;   /* the loop's result is all of it now */
        bc_src[nkeep] = bc_src[j];
        bc_init[nkeep] = bc_init[j];
        bc_node[nkeep] = body_carry(bb, fb, bc_src[j], nkeep);
        nkeep++;
    }
    nbc = nkeep;

    /* Body results: carried gradient of the previous step; accumulators plus this step;
     * then the collected slice gradients. */
    bb->ncarry = nbc;
    bb->nres = nbc + ncoll;
    bb->res = NEWN(int, nbc + ncoll + 1);
    for (int j = 0; j < nbc; j++) {
        int s = bc_src[j], g = sub.gsum[s];
        if (j < first_acc) {
            bb->res[j] = g >= 0 ? g : ad_zero_grad(&sub, s, &fb->n[s].shape);
        } else if (g >= 0) {
            bb->res[j] = acc_chain(&sub, s, bc_node[j]);
            name_grad(bb, bb->res[j], &fb->n[s]);   /* the running sum */
        } else {
            bb->res[j] = bc_node[j];
        }
    }
    for (int q = 0; q < ncoll; q++) bb->res[nbc + q] = step_slice_grad(&sub, ln, coll[q]);

    /* The backward loop node: inputs are the carried inits, every outer value the body
     * captured, and the forward loop itself (its per-step values must stay alive). */
    int cap_count = 0;
    for (int i = 0; i < bb->len; i++)
        if (bb->n[i].op == OP_LOOP_CAPTURE) cap_count++;
    int nin = nbc + cap_count + 1, *in = NEWN(int, nin), k = 0;
    for (int j = 0; j < nbc; j++) in[k++] = bc_init[j];
    for (int i = 0; i < bb->len; i++)
        if (bb->n[i].op == OP_LOOP_CAPTURE) in[k++] = capture_of(&bb->n[i]);
    in[k++] = L;
    Attrs at = {.i = {loop_last(ln), loop_count(ln), -loop_step(ln)}};   /* the same steps, reversed */
    int BL = ir_add_loop(dst, ln->loc, nin, in, &at, bb);
    if (BL < 0) die("backward loop is ill-formed");
    dst->n[BL].flags |= NF_GRAD;
    loop_grads_out(ad, L, BL, bb, sub.gsum, bc_src, nbc, first_acc, coll, ncoll);
}

/* The backward loop BL's results, handed to the values they are gradients of: the
 * carried gradients to the forward loop's initial values, the accumulators to the
 * captured values, and each stack of per-step slice gradients to its captured value
 * (scattered into it once when the slices do not cover it exactly). */
static void loop_grads_out(AD *ad, int L, int BL, const Graph *bb, const int *gsum, const int *bc_src, int nbc, int first_acc,
                           const int *coll, int ncoll) {
    const Node *ln = &ad->src->n[L];
    const Graph *fb = ln->sub;
    Graph *dst = ad->dst;
    for (int j = 0; j < nbc; j++) {
        Attrs o = {.i = {j}};
        int out = ad_add(ad, L, OP_LOOP_OUT, 1, &BL, &o, NULL);
        const Node *s = &fb->n[bc_src[j]];
        ad_acc(ad, j < first_acc ? ln->in[carry_index(s)] : capture_of(s), out);
    }
    for (int q = 0; q < ncoll; q++) {
        Attrs o = {.i = {nbc + q}};
        int out = ad_add(ad, L, OP_LOOP_OUT, 1, &BL, &o, NULL);
        const Node *sl = &bb->n[gsum[coll[q]]];
        int x = capture_of(&fb->n[coll[q]]);
        int64_t k = sl->ia[5], first = sl->ia[1] + k * loop_first_t(ln);
        if (!shape_eq(&dst->n[out].shape, &dst->n[x].shape)) {
            Attrs at = {.i = {sl->ia[0], first, first + k * (loop_count(ln) - 1) + 1, k, 0, 0}};
            Shape xs = dst->n[x].shape;
            out = ad_add(ad, L, OP_SLICE_BWD, 1, &out, &at, &xs);
        }
        ad_acc(ad, x, out);
    }
}

/* Reverse sweep over ad->src: every needed node with a gradient hands it to its rule.
 * That gradient is complete when the sweep reaches its node: it is named after it. */
static void sweep(AD *ad) {
    for (int i = ad->src->len - 1; i >= 0; i--) {
        if (!ad->need[i]) continue;
        const Node *n = &ad->src->n[i];
        if (n->op == OP_LOOP) {
            if (ad->cot[i]) grad_loop(ad, i);
            continue;
        }
        if (ad->gsum[i] < 0) continue;
        name_grad(ad->dst, ad->gsum[i], n);
        if (n->op == OP_LOOP_OUT) {
            record_loop_out(ad, i);
            continue;
        }
        if (op_info[n->op].flags & OPF_LEAF) continue;
        if (n->op == OP_LOOP_CARRY || n->op == OP_LOOP_CAPTURE) continue;
        if (!op_info[n->op].rule.grad) die("no gradient rule for %s", op_info[n->op].name);
        op_info[n->op].rule.grad(ad, i, ad->gsum[i]);
    }
}

/* ------------------------------------------------------------------ entry */

void ad_run(const Model *m, Graph *g, bool want_params, bool want_inputs) {
    if (m->loss < 0) return;
    Graph *src = ir_snapshot(g);           /* g grows (and moves) as gradients are added */
    AD ad = {.src = src, .dst = g};
    int n = src->len;
    bool *wrt = NEWN(bool, n), *fw = NEWN(bool, n), *rb = NEWN(bool, n);
    for (int i = 0; i < n; i++) {
        const Node *x = &src->n[i];
        if (want_params && (x->flags & NF_PARAM) && !(x->flags & NF_STATE)) wrt[i] = true;
        if (want_inputs && x->op == OP_INPUT && x->dtype == DT_REAL) wrt[i] = true;
    }
    forward_need(src, wrt, fw);
    backward_reach(src, &m->loss, 1, rb);
    ad.need = NEWN(bool, n);
    ad.gsum = NEWN(int, n);
    ad.xmap = NEWN(int, n);
    ad.cot = NEWN(int *, n);
    for (int i = 0; i < n; i++) {
        ad.need[i] = fw[i] && rb[i];
        ad.gsum[i] = -1;
    }
    if (ad.need[m->loss]) {
        Attrs one = {.f = {1.0}};
        Shape s = {0};
        ad.gsum[m->loss] = ad_add(&ad, m->loss, OP_CONST, 0, NULL, &one, &s);
        ad.dst->n[ad.gsum[m->loss]].flags |= NF_GRAD;   /* d loss / d loss = 1 */
        sweep(&ad);
    }
    g->npgrad = m->nparams;
    g->pgrad = NEWN(int, m->nparams > 0 ? m->nparams : 1);
    for (int p = 0; p < m->nparams; p++) g->pgrad[p] = -1;
    g->nigrad = m->ninputs;
    g->igrad = NEWN(int, m->ninputs > 0 ? m->ninputs : 1);
    for (int i = 0; i < m->ninputs; i++) g->igrad[i] = -1;
    for (int i = 0; i < n; i++) {
        const Node *x = &src->n[i];
        if (!wrt[i] || ad.gsum[i] < 0) continue;
        if (x->op == OP_PARAM) g->pgrad[x->slot] = ad.gsum[i];
        else if (x->op == OP_INPUT) g->igrad[x->slot] = ad.gsum[i];
    }
    ir_snapshot_drop(src);                 /* a copy of every forward node: large, done with */
}
