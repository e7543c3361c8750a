/* cdlc.h -- the compiler's one internal header.  One section per .c file.
 *
 * Pipeline (main.c): parse -> elab (builds the forward graphs, shape-checked as each
 * node is made) -> verify -> clone per function kind -> autodiff -> verify -> opt ->
 * plan -> emit (C or tape).
 */
#ifndef CDLC_H
#define CDLC_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ======================================================================== arena.c */
/* One arena per compilation, freed whole.  Allocation failure is an internal error
 * (die), never a user error. */
typedef struct Arena Arena;
Arena *arena_new(void);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t n);                 /* zeroed, 16-byte aligned */
void *arena_grow(Arena *a, void *p, size_t old, size_t n);  /* copy into a bigger block */
/* arena_grow, but the bytes past old are unspecified (the caller sets each element as
 * it takes it): a large array's spare capacity then stays untouched, not resident. */
void *arena_reserve(Arena *a, void *p, size_t old, size_t n);
/* Give back a block of n bytes no longer used by anyone (a large temporary, e.g. a
 * snapshot of a graph): a block over 16 KiB returns to malloc at once, a smaller one
 * stays until the arena is freed. */
void arena_drop(Arena *a, void *p, size_t n);
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A point in the arena's history: arena_release(a, m) frees every block allocated
 * since arena_mark(a) gave m (for a phase whose allocations are all temporary, e.g.
 * writing one node's C).  Blocks from before the mark must not be grown in between. */
typedef struct ArenaMark { void *chunk; size_t used, nbig; } ArenaMark;
ArenaMark arena_mark(Arena *a);
void arena_release(Arena *a, ArenaMark m);
/* The compilation's arena (set by main / tests). */
extern Arena *cc_arena;
#define NEW(T) ((T *)arena_alloc(cc_arena, sizeof(T)))
#define NEWN(T, n) ((T *)arena_alloc(cc_arena, sizeof(T) * (size_t)(n)))
/* A formatted string in the compiler's arena (any length). */
#define cc_str(...) arena_printf(cc_arena, __VA_ARGS__)
/* Names to non-negative ints (open addressing in cc_arena; the names are not copied and
 * must outlive the map).  A zeroed NameMap is empty. */
typedef struct NameMap { const char **key; int *val; int n, cap; } NameMap;
int arena_map_get(const NameMap *m, const char *name);          /* the value, or -1 */
void arena_map_put(NameMap *m, const char *name, int val);      /* add or replace */

/* ======================================================================== diag.c */
typedef struct Loc { const char *file; int line, col; } Loc;
extern const Loc no_loc;

/* Register a source buffer so diagnostics can quote its lines. */
void diag_source(const char *file, const char *text, size_t len);
/* "file:line:col: error: msg", then the source line and a caret.  Counts errors;
 * after DIAG_MAX_ERRORS prints "too many errors" and exits with status 1. */
#define DIAG_MAX_ERRORS 20
void error_at(Loc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void warning_at(Loc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void note_at(Loc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int diag_error_count(void);
void diag_reset(void);   /* before a compilation: no errors, not muted, no trail */
/* While muted (calls nest), diagnostics are neither printed nor counted; an error seen
 * meanwhile sets diag_muted_error() (reset when muting starts). */
void diag_mute(bool on);
bool diag_muted_error(void);
/* fn(ctx) runs after each error and warning, to add notes (the elaborator's block-call
 * trail); NULL: none. */
void diag_set_trail(void (*fn)(void *ctx), void *ctx);
/* The candidate closest to word (a typo: edit distance 1 to 3 by length), or NULL;
 * diag_did_you_mean gives it as " (did you mean 'x'?)", or "". */
const char *diag_suggest(const char *word, const char *const *cand, int n);
const char *diag_did_you_mean(const char *word, const char *const *cand, int n);
void diag_set_stream(FILE *f);                         /* default stderr */
/* Running out of memory is the user's problem, not a compiler bug: say so (how much was
 * wanted, how much is in use) and exit with status 1. */
_Noreturn void diag_out_of_memory(size_t bytes, size_t in_use);
/* For a caller that compiles in its own process (tests/fuzz/fuzz_cdlc.c): the two exits
 * on user errors above (too many errors, out of memory) longjmp to *j with 1 after
 * their message instead; NULL, the default: exit.  Internal errors (die) still exit. */
void diag_set_recovery(jmp_buf *j);
/* Internal compiler bugs: distinct from user errors. */
_Noreturn void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
#define unreachable() die("unreachable")

/* ======================================================================== ast.c, grammar/ */
/* BEGIN AST (front end: parser, AST) */
/* The syntax tree.  One node type; the fields a kind uses are listed with the kind.
 * Every node keeps the location of its first token (binary operators: the operator). */
typedef enum AstKind {
    A_ERR,          /* placeholder after a syntax / nesting error */
    /* expressions */
    A_INT,          /* ival; text = spelling */
    A_REAL,         /* rval; text = spelling */
    A_STR,          /* text = decoded value */
    A_BOOL,         /* ival = 0 / 1 */
    A_NAME,         /* name */
    A_BIN,          /* a op b; op: '+' '-' '*' '/' '@' and 'P' for ** */
    A_NEG,          /* -a */
    A_PIPE,         /* a |> b  (b: a name or a call; a becomes b's first argument) */
    A_CALL,         /* name(list): positional args, then or among them A_KWARG */
    A_KWARG,        /* name = a */
    A_INDEX,        /* a[list]: items are expressions or A_SLICE */
    A_ATTR,         /* a.name (x.shape) */
    A_SLICE,        /* a:b:c inside [], each part may be NULL */
    A_LIST,         /* [list] */
    A_TYPE,         /* name = dtype ("f32"/"i32"), list = dims */
    A_RANGE,        /* a..b; op = 1 when reversed(a..b) */
    /* statements */
    S_ASSIGN,       /* list = targets (A_NAME), a = value (a tuple when several targets) */
    S_COLLECT,      /* name[a] = b */
    S_INPUT,        /* input name: a (A_TYPE) */
    S_PARAM,        /* param name: a (A_TYPE) = b (initialiser call, or NULL) */
    S_OUTPUT,       /* output a [as name] */
    S_LOSS,         /* loss a */
    S_ENTRY,        /* entry name(list = S_INPUT args) { list2 = body }; op = 1: the short
                       form "= expr [as name]", whose body is one S_OUTPUT */
    S_FOR,          /* for name in a (A_RANGE) { list = body } */
    S_RETURN,       /* return list */
    S_TRAIN,        /* train { list = A_KWARG } */
    /* top level */
    D_MODEL,        /* model name(list = A_KWARG constants) { list2 = body } */
    D_BLOCK,        /* block name(list = A_NAME / A_KWARG params with default) { list2 = body } */
    D_IMPORT,       /* import text */
    D_FILE,         /* list = items; name = file */
    AST_KIND_COUNT
} AstKind;

typedef struct Ast Ast;
typedef struct AstList { Ast **v; int n, cap; } AstList;
struct Ast {
    AstKind kind;
    Loc loc;
    int op;
    int depth;              /* expression nesting depth (guards the elaborator's recursion) */
    const char *name;
    const char *text;
    int64_t ival;
    double rval;
    Ast *a, *b, *c;
    AstList list, list2;
};

#define PARSE_MAX_NEST 256      /* brackets ( [ { open at once */
#define AST_MAX_DEPTH 500       /* expression depth */
#define IDENT_MAX 255           /* identifier length */

/* ast.c */
Ast *ast_new(AstKind k, Loc loc);
void ast_push(AstList *l, Ast *x);
const char *ast_kind_name(AstKind k);
/* S-expression dump, e.g. (call linear (name x) (int 256) (kw bias (bool 0))). */
void ast_dump(FILE *f, const Ast *a);
const char *ast_str(const Ast *a);                  /* the dump as an arena string */

/* grammar/cdl.y: parse a whole buffer (registered with diag_source).  Returns the
 * D_FILE node, never NULL; syntax errors are reported and counted (several per run:
 * recovery is per statement), so check diag_error_count(). */
Ast *parse_text(const char *file, const char *text, size_t len);
/* grammar/cdl.l, for tests: the token stream as "kind kind:text ..." (an arena string). */
const char *lex_debug(const char *file, const char *text, size_t len);
/* END AST */

/* ======================================================================== ir.c */
#define MAXDIM 6
#define MAXIN 8            /* inputs of fixed-arity ops; LOOP / CONCAT / LINEAR use in[] too */
#define MAX_ELEMS ((int64_t)1 << 40)   /* absurd-size guard for any one tensor */

typedef enum DType { DT_REAL, DT_I32 } DType;   /* DT_REAL: f32, or f64 with --precision=f64 */

typedef struct Shape {
    int rank;
    bool batched;          /* d[0] scales with the runtime batch: runtime d0 = d[0] / B * nb */
    int64_t d[MAXDIM];
} Shape;

typedef enum Op {
#define OP(id, name, nin, flags) OP_##id,
#include "../runtime/ops.def"
#undef OP
    OP_COUNT
} Op;

enum {
    OPF_LEAF = 1 << 0, OPF_DIFF = 1 << 1, OPF_VIEW = 1 << 2, OPF_RAND = 1 << 3,
    OPF_TRAIN = 1 << 4, OPF_BWD = 1 << 5, OPF_LOSS = 1 << 6, OPF_CTRL = 1 << 7, OPF_FN = 1 << 8,
};

/* Node flags. */
enum {
    NF_INPUT = 1 << 0,     /* an entry input */
    NF_PARAM = 1 << 1,     /* a trainable parameter */
    NF_STATE = 1 << 2,     /* a non-trainable persistent buffer (running stats) */
    NF_OUTPUT = 1 << 3,    /* a declared output: its buffer outlives the function */
    NF_LOSS = 1 << 4,      /* the declared loss */
    NF_GRAD = 1 << 5,      /* a gradient (made by autodiff from the loss's) */
    NF_WANT_GRAD = 1 << 6, /* an input whose gradient is requested */
    NF_PARAM_GRAD = 1 << 7,/* final gradient of param ia? (slot): lives in the grad slab */
    NF_INPUT_GRAD = 1 << 8,/* final gradient of input (slot): lives in net->in_grad[slot] */
    NF_DEAD = 1 << 9,      /* opt: nothing this function returns depends on it */
    NF_INPLACE = 1 << 10,  /* opt_inplace: computed over input in[inplace]'s storage */
    NF_NO_AUX = 1 << 11,   /* infer_prepare: the inference kernels need no aux scratch */
    NF_PERTURB = 1 << 12,  /* INPUT: the hidden delta of a perturb() (runtime CDL_T_PERTURB) */
};

enum { RED_MEAN = 0, RED_SUM = 1, RED_NONE = 2 };

typedef struct Attrs { int64_t i[8]; double f[4]; } Attrs;

typedef struct Graph Graph;

typedef struct Node {
    Op op;
    int nin;
    int *in;               /* node ids in the same graph */
    int64_t ia[8];         /* integer attributes, meaning per op (ops.def) */
    double fa[4];          /* real attributes */
    Shape shape;
    DType dtype;
    unsigned flags;        /* NF_* */
    int slot;              /* INPUT: input index; PARAM: model param index;
                              NF_PARAM_GRAD / NF_INPUT_GRAD: which; -1 otherwise */
    const char *name;      /* params, inputs, outputs: the public name */
    const char *var;       /* the source variable it was assigned to, for readable C */
    const char *grad_of;   /* NF_GRAD: the forward value this node is the gradient of, whole
                            * or one fan-out part of it (its variable, parameter or op name);
                            * NULL for an intermediate term of a gradient rule */
    Loc loc;               /* where in the source it came from (backward nodes: the forward op's) */
    Graph *sub;            /* LOOP: the body */
    int inplace;           /* NF_INPLACE: which input (index into in[]) it overwrites */
    int fused_into;        /* opt_fuse_conv: the node it was folded into, + 1 (0: none) */
    /* opt_pair_conv: one conv2d_bwd_xw call computes a convolution's dx, dw and db
     * (node ids + 1; 0: none) */
    int xw_dw;             /* conv2d_bwd_x(_fused): the conv2d_bwd_w node its call also writes */
    int xw_db;             /* ... and the bias gradient (SUM) node it also writes */
    int xw_at;             /* that conv2d_bwd_w or SUM: the conv2d_bwd_x(_fused) node writing it */
} Node;

struct Graph {
    Node *n;
    int len, cap;
    Graph *parent;         /* loop bodies: the enclosing graph */
    int owner;             /* loop bodies: the LOOP node's id in parent */
    int *res;              /* loop bodies: results, carried ones first, then collected */
    int nres, ncarry;
    int64_t batch;         /* the compiled batch size B (0: model has no batch) */
    int next_stream;       /* RNG stream ids: unique per model (shared counter via root) */
    /* Set by autodiff on a top-level graph: the node holding each parameter's gradient
     * (model param order; -1 = the loss does not depend on it: zero) and each input's. */
    int *pgrad; int npgrad;
    int *igrad; int nigrad;
};

Graph *ir_graph_new(int64_t batch);
Graph *ir_body_new(Graph *parent);
/* Add a node.  in[] is copied; at may be NULL (zero attributes); hint gives the result
 * shape for ops whose shape is not a function of their inputs (INPUT, PARAM, CONST,
 * RANDN, RAND, RESHAPE, BROADCAST, VIEW, SLICE_BWD, LOOP_*) and is ignored otherwise.
 * Runs the op's shape rule.  Returns the node id, or -1 after a diagnostic at loc. */
int ir_add(Graph *g, Op op, Loc loc, int nin, const int *in, const Attrs *at,
           const Shape *hint, DType dt);
/* A loop node over a finished body (body->parent == g; body->res / ncarry set).  in[] are
 * the carried initial values (body->ncarry of them, in order) followed by the outer ids
 * the body's LOOP_CAPTURE nodes refer to.  at: ia0 start, ia1 count, ia2 step (+1/-1).
 * Checks that every carried value keeps its shape and dtype.  Returns the id or -1. */
int ir_add_loop(Graph *g, Loc loc, int nin, const int *in, const Attrs *at, Graph *body);
/* Shorthands without attributes. */
int ir_op1(Graph *g, Op op, Loc loc, int a);
int ir_op2(Graph *g, Op op, Loc loc, int a, int b);
/* A scalar real constant. */
int ir_scalar(Graph *g, double v, Loc loc);
Graph *ir_clone(const Graph *g);               /* deep copy (bodies too) */
/* The nodes of g as they are now, sharing their input lists and bodies with g: a
 * read-only view that stays valid while g grows (autodiff reads the forward graph from
 * it while it appends to g; nothing may change a node's in[] or body meanwhile). */
Graph *ir_snapshot(const Graph *g);
void ir_snapshot_drop(Graph *snapshot);        /* its node array is given back (arena_drop) */
int64_t shape_numel(const Shape *s);
bool shape_eq(const Shape *a, const Shape *b);
/* "[64, 784]" into an arena string. */
const char *shape_str(const Shape *s);
Shape shape_make(int rank, const int64_t *d, bool batched);
/* Check structural invariants (ids in range and topological, shapes re-derivable,
 * arities); die()s on violation: a failure is a compiler bug. */
void ir_verify(const Graph *g);
/* Dumps: one node a line with shape and source location; Graphviz. */
void ir_dump(FILE *f, const Graph *g, const char *title);
void ir_dump_dot(FILE *f, const Graph *g, const char *title);
/* Reference counts (uses) of every node, including uses by results. */
int *ir_uses(const Graph *g);

/* Named accessors for the loop nodes' attributes (ops.def, section loops). */
static inline int64_t loop_start(const Node *L) { return L->ia[0]; }   /* LOOP: first t */
static inline int64_t loop_count(const Node *L) { return L->ia[1]; }   /* steps */
static inline int64_t loop_step(const Node *L) { return L->ia[2]; }    /* +1 or -1 */
static inline int64_t loop_last(const Node *L) { return L->ia[0] + (L->ia[1] - 1) * L->ia[2]; }
static inline int64_t loop_first_t(const Node *L) {                    /* the smallest t */
    return loop_step(L) > 0 ? loop_start(L) : loop_last(L);
}
static inline int carry_index(const Node *n) { return (int)n->ia[0]; }    /* LOOP_CARRY: k */
static inline int capture_of(const Node *n) { return (int)n->ia[0]; }     /* LOOP_CAPTURE: outer id */
static inline int saved_loop(const Node *n) { return (int)n->ia[0]; }     /* LOOP_SAVED: forward LOOP */
static inline int saved_node(const Node *n) { return (int)n->ia[1]; }     /*   and its body node */
static inline int loop_out_result(const Node *n) { return (int)n->ia[0]; }/* LOOP_OUT: body result k */

/* ======================================================================== ops_*.c */
typedef struct AD AD;
typedef struct Emit Emit;

/* One op's rules, side by side in its ops_<family>.c block: everything the passes and
 * the emitters need to know about the op.  Rows list the first five positionally and
 * name the rest (.tape = ..., .inplace = ...). */
typedef struct OpRule {
    Op op;
    /* Compute n->shape and n->dtype from the inputs and attributes (hint already
     * copied into n->shape when the op takes one).  On a user error: shape_error()
     * and return false. */
    bool (*shape)(Graph *g, Node *n);
    /* Reverse mode: n is node id in ad's source graph, gy the id of its output's
     * gradient in the destination graph.  Use ad_x / ad_add / ad_acc.  NULL exactly
     * when the op is not OPF_DIFF (loop nodes: autodiff.c differentiates loops). */
    void (*grad)(AD *ad, int n, int gy);
    /* Emit the C statements computing node n (see emit helpers). */
    void (*emit)(Emit *e, const Graph *g, int n);
    /* Reals of per-node scratch saved for the backward pass, at the compiled batch
     * (e.g. softmax probabilities, batch-norm mean/invstd); NULL = none. */
    int64_t (*aux)(const Graph *g, const Node *n);
    /* --target=tape: the C expression recording node n on the tape, a cdl_t_<op>(tp,
     * ...) call (inputs by e_ptr).  NULL only for backward helpers (OPF_BWD: the tape
     * differentiates at run time) and the loop nodes emit_tape.c writes itself (LOOP,
     * LOOP_OUT, LOOP_SAVED). */
    const char *(*tape)(Emit *e, const Graph *g, int n);
    /* --target=tape: bytes the tape keeps with node n's record for its backward
     * (*keep) and the largest short-lived scratch its forward or backward takes at once
     * beyond plan.c's general bound (*tmp), both at the compiled batch; NULL = none. */
    void (*tape_scratch)(const Graph *g, const Node *n, int real_size, int64_t *keep, int64_t *tmp);
    /* In place: bit k (INPLACE_IN(k)) set when the kernel, as `emit` calls it, stays
     * correct with its output in the exact storage of input k (y[i] = f(x[i], ...)
     * loops; never GEMMs over their operands, reductions, restrict-qualified kernels).
     * opt_inplace may then give the node that input's buffer. */
    unsigned inplace;
    /* Optional veto of `inplace` for one node (an emitter that writes its output
     * before it has read every input in some configuration); NULL: no veto. */
    bool (*inplace_if)(const Graph *g, const Node *n);
} OpRule;
#define INPLACE_IN(k) ((k) < 32 ? 1u << (k) : 0u)   /* inputs past 31 (a long concat) never */

/* COMPARE's ia0: which comparison, in the order of runtime/cdl.h's CDL_BIN_LT ... CDL_BIN_NE. */
enum { CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_EQ, CMP_NE, CMP_COUNT };
static inline const char *cmp_symbol(int64_t k) {
    static const char *const s[CMP_COUNT] = {"<", "<=", ">", ">=", "==", "!="};
    return k >= 0 && k < CMP_COUNT ? s[k] : "?";
}

typedef struct OpInfo {
    const char *name;
    int nin;
    unsigned flags;
    OpRule rule;
} OpInfo;
extern OpInfo op_info[OP_COUNT];
/* Fill op_info from every ops_*.c file's rule table; idempotent.  An op without rules
 * is reported by ir_add as "not implemented" at the user's location; the op-table test
 * (tests/test_ops_table.c) checks that every op of ops.def has a shape rule, an
 * emitter, a gradient rule exactly when it is differentiable, and a tape call. */
void ops_init(void);
/* Each family file exports its table: */
extern const OpRule ops_ew_rules[];    extern const int ops_ew_count;
extern const OpRule ops_dense_rules[]; extern const int ops_dense_count;
extern const OpRule ops_loss_rules[];  extern const int ops_loss_count;
extern const OpRule ops_conv_rules[];  extern const int ops_conv_count;
extern const OpRule ops_rnn_rules[];   extern const int ops_rnn_count;
extern const OpRule ops_ctrl_rules[];  extern const int ops_ctrl_count;
extern const OpRule ops_attn_rules[];  extern const int ops_attn_count;
extern const OpRule ops_norm_rules[];  extern const int ops_norm_count;
extern const OpRule ops_conv2_rules[]; extern const int ops_conv2_count;
extern const OpRule ops_sel_rules[];   extern const int ops_sel_count;
/* ops_conv.c: whether conv nodes a and b (conv2d, conv2d_bwd_x, conv2d_bwd_w or a fused
 * one, shapes known) have the same geometry at the compiled batch, as the kernels see it. */
bool conv_same_geom(const Graph *g, int a, int b);
/* ops_dense.c: the shape rule of axis reductions (ia0 axis mask, ia1 keepdim; a real
 * result), shared with ops_sel.c. */
bool shape_reduce(Graph *g, Node *n);

/* ======================================================================== shape.c */
/* Shape diagnostics: "file:line:col: error: <op>: <msg>" at n->loc; returns false (the
 * rule's answer: `return shape_error(n, ...);`). */
bool shape_error(const Node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The end of a shape rule that accepts n: its output is a real tensor of shape s. */
static inline bool shape_real(Node *n, Shape s) {
    n->shape = s;
    n->dtype = DT_REAL;
    return true;
}
/* numpy broadcasting of a and b into out; false (no diagnostic) if incompatible. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out);
/* Elementwise rule helpers used by many ops. */
bool shape_same_as_input(Graph *g, Node *n);          /* out = in[0] */
bool shape_require_real(const Graph *g, const Node *n, int input);
/* Do inputs ka and kb of n agree on the batch: both batched, or neither, or the
 * unbatched one broadcasts along axis 0?  Else a diagnostic at n naming `what`. */
bool shape_same_batch(const Graph *g, const Node *n, const char *what, int ka, int kb);
/* Product of dims with overflow / absurd size check (diagnostic at n). */
bool shape_checked_numel(const Node *n, const Shape *s);

/* ======================================================================== elab*.c, builtins.c, imports.c */
/* A model after elaboration: forward graphs, shape-checked. */
typedef struct Param {
    const char *name;       /* dotted */
    Shape shape;
    int init;               /* CDL_INIT_* (runtime cdl.h numbering) */
    double a, b;            /* init arguments */
    int64_t fan_in, fan_out;
    bool state;             /* non-trainable buffer */
    bool used;
    Loc loc;
    const Loc *calls;       /* made inside blocks: the call sites, outermost first */
    int ncalls;
} Param;

typedef struct EntryFn {    /* `entry name(args) = expr` */
    const char *name;
    Graph *g;               /* own graph: INPUT nodes are its arguments, PARAM nodes share the model's */
    int *outs; int nouts;
    Loc loc;
} EntryFn;

typedef struct TrainKV { const char *key, *value; Loc loc; } TrainKV;

typedef struct Model {
    const char *name;
    const char *file;
    Loc loc;
    Graph *g;               /* the main graph */
    int *inputs; int ninputs;       /* INPUT node ids, slot order */
    int *outputs; int noutputs;     /* NF_OUTPUT node ids */
    int loss;                       /* NF_LOSS node id or -1 */
    Param *params; int nparams;     /* slab order: trainable first, then state */
    EntryFn *entries; int nentries;
    TrainKV *train; int ntrain;     /* the train {} section */
    int64_t batch;
    const char *batch_name;         /* the batch constant ("B"), NULL without one */
    const char *consts_str;         /* "B=64 H=256" after -D overrides, for the header comment */
} Model;

/* BEGIN ELAB */
/* Elaborate the last model of the file at path ("-": stdin) into a Model: its main
 * graph, entry graphs and parameter table, shape-checked.  defs are -D overrides of
 * the model's header constants ("H=512").  Imports are resolved relative to the
 * importing file.  NULL after diagnostics (diag_error_count() > 0). */
Model *elab_file(const char *path, int ndefs, const char *const *defs);
/* The same from a buffer named file (tests; imports resolve relative to file). */
Model *elab_text(const char *file, const char *text, size_t len, int ndefs,
                 const char *const *defs);
/* The graph-size budget: nodes after inlining blocks, over all of a model's graphs
 * (cdlc --max-nodes).  Past it elaboration stops with an error naming the block calls
 * that grew; a model whose blocks would clearly exceed it is refused before inlining. */
#define ELAB_MAX_NODES_DEFAULT 1000000
void elab_set_max_nodes(int64_t n);

/* imports.c: read path ("-": stdin; text != NULL: the main file's contents) and,
 * recursively, its imports, each parsed once (paths relative to the importing file).
 * blocks: every file's blocks (a duplicate name, or a built-in's name, is an error);
 * model: the last model of the main file ("no model" is an error).  Import cycles and
 * unreadable files are errors at the import statement. */
typedef struct Program { const Ast **blocks; int nblocks; const Ast *model; } Program;
void load_program(const char *path, const char *text, size_t len, Program *p);

/* ---- the elaborator's services to the built-ins (builtins.c); elab_core.c ---- */
typedef struct Elab Elab;
typedef enum VKind {
    V_NONE,         /* an absent optional argument */
    V_ERR,          /* the value of an expression that already had an error: silent */
    V_NUM,          /* a compile-time number */
    V_BOOL, V_STR,
    V_TENSOR,       /* node id in graph g */
    V_TUPLE, V_LIST,
    V_FUNC,         /* a block or built-in named without a call (pipes, reduce=sum) */
    V_PARAM,        /* an explicit `param`, i = its index (a node is made on use) */
    V_INDEX,        /* the loop index: bfac * t + i */
} VKind;
typedef struct Value {
    VKind k;
    bool isint;     /* V_NUM: an integer (value in i and r) */
    int64_t i;
    double r;
    int64_t bfac;   /* V_NUM integers: value == bfac * B (0: not a batch multiple);
                       V_INDEX: the coefficient of t */
    const struct BExpr *bx; /* V_NUM: how it depends on the batch constant (NULL: not) */
    const char *s;  /* V_STR, V_FUNC */
    Graph *g;       /* V_TENSOR */
    int id;
    struct Value *v;/* V_TUPLE, V_LIST */
    int n;
} Value;

typedef struct BExpr BExpr;
typedef struct Builtin Builtin;
typedef Value (*BuiltinFn)(Elab *e, const Builtin *b, Loc loc, Value *arg);
struct Builtin {
    const char *name;
    const char *sig;    /* formals: "x out bias=true * name?" (? = optional, no default;
                           after *: keyword-only) */
    BuiltinFn fn;
    Op op;              /* for the table-driven ones (activations, losses) */
    const char *base;   /* layers: default instance name ("linear" -> linear1) */
};
extern const Builtin builtins[];
extern const int builtin_count;
const Builtin *builtin_find(const char *name);
/* builtins_nn.c: constructors of the issue-13 built-ins (rows in builtins.c's table). */
Value bn_attention(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bn_norm(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bn_conv(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bn_conv_t(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bn_pool(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bn_upsample(Elab *e, const Builtin *b, Loc loc, Value *a);
/* builtins_sel.c: masks and selection (rows in builtins.c's table). */
Value bs_where(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_masked_fill(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_tril(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_one_hot(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_argmax(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_moments(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_logsumexp(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_cast(Elab *e, const Builtin *b, Loc loc, Value *a);
Value bs_stack(Elab *e, const Builtin *b, Loc loc, Value *a);
/* builtins.c: the 'axis' argument of reductions (none: 0 = every axis; an integer or a
 * list, negative counting from the end) as a bit mask; false after an error at loc. */
bool axes_mask(Elab *e, Value v, int rank, const char *fn, Loc loc, int64_t *mask);
/* builtins.c: the tensors of a list argument like [a, b] (concat, stack; verb says what
 * an empty one cannot do) as real nodes in a new array *in; their count (>= 1), or -1
 * after an error at loc. */
int el_tensor_list(Elab *e, Value l, const char *fn, const char *verb, Loc loc, int **in);

/* Helpers for built-ins (elab_core.c).  fn/arg name the call and the argument in diagnostics; each
 * reports at loc and returns false / -1 / V_ERR on a user error (silently for V_ERR
 * inputs, which were reported already). */
Value el_err(void);
Value el_int_value(int64_t i, int64_t bfac);     /* bfac != 0: the number bfac * B */
Value el_real_value(double r);
Value el_num_neg(Value v);                        /* -v, keeping its batch dependence */
Value el_num_minmax(Value a, Value b, bool max);  /* maximum / minimum of two numbers */
const char *el_describe(Elab *e, Value v);        /* "a tensor f32[64, 10]", "the number 3" */
Value el_tensor(Elab *e, int id);                 /* V_TENSOR in the current graph; V_ERR if id < 0 */
Value el_tuple(int n, const Value *v);
int el_node(Elab *e, Value v, const char *fn, const char *arg, Loc loc);   /* tensor -> node id */
int el_real_node(Elab *e, Value v, const char *fn, const char *arg, Loc loc);  /* ... and f32 */
int el_operand(Elab *e, Value v, const char *fn, const char *arg, Loc loc); /* numbers too */
int el_mask_operand(Elab *e, Value v, const char *fn, const char *arg, Loc loc); /* ... and i32 as f32 */
const Node *el_n(Elab *e, int id);                /* node of the current graph */
bool el_int(Elab *e, Value v, const char *fn, const char *arg, Loc loc, int64_t *out);
bool el_num(Elab *e, Value v, const char *fn, const char *arg, Loc loc, double *out);
bool el_bool(Elab *e, Value v, const char *fn, const char *arg, Loc loc, bool *out);
bool el_reduce(Elab *e, Value v, const char *fn, Loc loc, int64_t *red);  /* "mean" / "sum" */
/* Dims must be positive, the element count at most 2^40 (no overflow); what names
 * the tensor in the diagnostic. */
bool el_dims_ok(Loc loc, const char *what, const Shape *s);
/* A shape from a list of integer constants; batched when dim 0 is a batch multiple.
 * Dim 0 may be -1: the batch (zeros([-1, H]) in a block that does not name B). */
bool el_dims(Elab *e, Value v, const char *fn, const char *arg, Loc loc, Shape *out);
int el_add(Elab *e, Op op, Loc loc, int nin, const int *in, const Attrs *at,
           const Shape *hint, DType dt);          /* ir_add into the current graph */
int el_stream(Elab *e);                           /* a fresh RNG stream id */
int64_t el_batch(Elab *e);                        /* the compiled batch size (0: none) */
Value el_arith(Elab *e, int op, Value a, Value b, Loc loc);  /* + - * / @ and 'P' (**) */
/* The shape of a tensor or explicit parameter value (no node is made). */
bool el_value_shape(Elab *e, Value v, const char *fn, const char *arg, Loc loc, Shape *out);
/* Dimension axis of s as a constant; dim 0 of a batched shape is a batch multiple
 * (so zeros([dim(x, 0), H]) is batched and, in tensor arithmetic, the runtime size). */
Value el_dim_value(Elab *e, const Shape *s, int axis);
/* "prefix.base<k>" (k counts per instance scope) or "prefix.<name=...>". */
const char *el_instance(Elab *e, const char *base, Value name, Loc loc);
/* The parameter inst.leaf: made on first use, shared (shapes must agree) on later
 * uses of the same name.  Returns its node id in the current graph, or -1. */
int el_param(Elab *e, const char *inst, const char *leaf, Shape s, int init, double a,
             double b, int64_t fan_in, int64_t fan_out, bool state, Loc loc);
/* ---- the elaborator's own state, shared by elab.c, elab_core.c, elab_call.c and
 * elab_loop.c (built-ins use the el_ helpers above, never these fields) ---- */
#define BLOCK_MAX_DEPTH 64

typedef enum SymKind { SYM_CONST, SYM_VAR, SYM_INPUT, SYM_PARAM, SYM_INDEX, SYM_COLLECT } SymKind;
typedef struct Sym { const char *name; SymKind kind; Value v; Loc loc; } Sym;
typedef struct Scope { Sym *s; int n, cap; NameMap ix; struct Scope *parent; } Scope;  /* ix: name -> s[] */

/* Instance naming scope: a prefix and a counter per base name. */
typedef struct Inst { const char *prefix; const char **key; int *count; int n, cap; } Inst;

typedef struct Loop {
    Graph *body, *outer;
    Loc loc;
    const char *var;
    int64_t tlo, thi;                   /* the values t takes, inclusive */
    Scope *scope;                       /* the body's scope */
    int ncarry;                         /* carried: name, home scope, init, LOOP_CARRY node */
    const char **cname;
    Scope **chome;
    Value *cinit;
    Loc *cloc;
    int ncollect, kcap;                 /* collected: name, value in the body */
    const char **kname;
    Value *kval;
    Loc *kloc;
    int ncap, capcap;                   /* captures: outer id -> capture node */
    int *cap_outer, *cap_inner;
} Loop;

typedef enum Ctx { CTX_MODEL, CTX_BLOCK, CTX_ENTRY } Ctx;   /* what kind of body is elaborated */

struct Elab {
    Model *m;
    int pcap;                           /* capacity of m->params */
    Graph *root, *g;                    /* the function's graph; where nodes go */
    Loop *loop;
    Inst *inst;
    Scope *scope, *model_scope;
    int *pnode, pnode_cap;              /* param index -> PARAM node in root, or -1 */
    const Ast **blocks;                 /* every file's blocks (imports.c) */
    int nblocks;
    const Ast *bstack[BLOCK_MAX_DEPTH]; /* the block calls being elaborated, outermost first */
    Loc bcall[BLOCK_MAX_DEPTH];         /* ... where each was called */
    const char *binst[BLOCK_MAX_DEPTH]; /* ... and its instance name */
    int bdepth;
    NameMap bmap;                       /* block name -> index in blocks (the first of a name) */
    NameMap pmap;                       /* parameter name -> index in m->params */
    int64_t max_nodes, nodes;           /* the graph-size budget; nodes made so far */
    bool over;                          /* the budget was exceeded: stop elaborating */
    int64_t batch;
    const char *bname;                  /* the batch constant's name, or NULL */
    EntryFn *entry;                     /* elaborating this entry, or NULL */
    bool seen_train;
    Loc loss_loc;
    int perturb_auto;                   /* 1 + the delta input a nameless perturb() just made (0: none) */
};

/* Formal parameter lists (built-in signatures and user blocks). */
#define MAX_FORMALS 16      /* a block has at most MAX_FORMALS - 1 parameters (and name=) */
typedef struct Formals {
    int n;
    int npos;               /* formals [npos, n) are keyword-only (after `*` in a signature) */
    const char *name[MAX_FORMALS];
    bool required[MAX_FORMALS];
    Value def[MAX_FORMALS];          /* V_NONE: optional without default */
    const Ast *defexpr[MAX_FORMALS]; /* blocks: default expressions */
} Formals;

/* elab_core.c: arena arrays, locations, scopes, values of the current graph. */
/* Count n new nodes against the budget; false (after one error) once it is exceeded. */
bool el_count_nodes(Elab *e, int n, Loc loc);
/* Grow an arena array p of *cap elements of size sz to hold at least need. */
void *el_grow(void *p, int *cap, int need, size_t sz);
/* "line:col" of at (with its file when it differs from from's), for "first at ...". */
const char *el_where(Loc at, Loc from);
const char *el_dtype_name(DType d);                  /* "f32" / "i32" */
Scope *el_scope_new(Scope *parent);
Sym *el_scope_here(Scope *s, const char *name);      /* in s itself, or NULL */
Sym *el_lookup(Scope *s, const char *name, Scope **home);   /* s and its parents */
Sym *el_define(Scope *s, const char *name, SymKind kind, Value v, Loc loc);  /* (re)bind in s */
int el_node_of(Elab *e, Value v);                    /* a V_TENSOR's node here (captured in a loop) */
int el_param_node(Elab *e, int p, Loc loc);          /* parameter p's PARAM node, made on first use */
/* Add (or find and check the shape of) the parameter called name: its index or -1. */
int el_declare_param(Elab *e, const char *name, Shape s, int init, double a, double b, int64_t fan_in,
                     int64_t fan_out, bool state, Loc loc);
/* elab.c */
Value el_eval(Elab *e, const Ast *a);                /* an expression's value (V_ERR after a diagnostic) */
/* A statement list in context ctx; a block's `return` sets *ret and *has_ret. */
void el_stmts(Elab *e, const AstList *body, Ctx ctx, Value *ret, bool *has_ret);
/* perturb(x, *, name?): x + a hidden batched input NAME.delta (a builtins.c row). */
Value el_perturb(Elab *e, const Builtin *b, Loc loc, Value *a);
/* elab_call.c */
void el_index_blocks(Elab *e);                        /* e->blocks into e->bmap */
const Ast *el_find_block(Elab *e, const char *name);  /* a user block, or NULL */
/* Refuse (false, after an error) a model whose block inlining would clearly exceed
 * e->max_nodes: a static count of the operations it would make. */
bool el_check_size(Elab *e, const Ast *model);
/* " (did you mean 'linear'?)" among built-ins, blocks and (vars) names in scope; or "". */
const char *el_did_you_mean(Elab *e, const char *word, bool vars);
/* A built-in signature ("x out bias=true * name?") as formals: `=` gives a default, `?`
 * marks an optional argument without one, formals after `*` are keyword-only. */
void el_sig_formals(const char *sig, Formals *f);
/* Match a call's arguments (pre: a piped value, first) to the formals: out[] gets one
 * value per formal, defaults filled in.  False after a diagnostic. */
bool el_bind_args(Elab *e, const char *fn, const Formals *f, const Ast *call, const Value *pre, Loc loc,
                  Value *out);
/* name(args), with an optional piped first argument: a block or a built-in. */
Value el_call(Elab *e, const char *name, const Ast *callast, const Value *pre, Loc loc);
/* elab_loop.c */
void el_stmt_for(Elab *e, const Ast *s, Ctx ctx);    /* for t in a..b { } */
void el_stmt_collect(Elab *e, const Ast *s);         /* hs[t] = v inside a loop */
/* END ELAB */

/* ======================================================================== autodiff.c */
/* Symbol-to-symbol reverse mode.  Appends to g the gradient of the loss with respect
 * to every parameter (flags NF_PARAM_GRAD, slot = param index) when want_params, and to
 * every real input (NF_INPUT_GRAD) when want_inputs.  Nodes nothing needs are not made. */
void ad_run(const Model *m, Graph *g, bool want_params, bool want_inputs);
/* For gradient rules: */
Graph *ad_dst(AD *ad);
const Graph *ad_src(AD *ad);
int ad_x(AD *ad, int src_node);            /* the forward value of src_node, usable in dst */
/* Make a node in the destination graph, located at src_node's location.  It counts as
 * a gradient (NF_GRAD: named d_<value> in the C) when an input is one; a forward value
 * a rule recomputes (reshape(x), b * b) or a constant it uses keeps its op's name. */
int ad_add(AD *ad, int src_node, Op op, int nin, const int *in, const Attrs *at,
           const Shape *hint);
int ad_zero_grad(AD *ad, int src_node, const Shape *s);   /* zeros that stand for a gradient */
/* Add dst node `grad` into the gradient of src input node `src_in`.  Sums over
 * broadcast axes to src_in's shape; accumulates fan-out.  Ignored for nodes that
 * need no gradient (integer, stop_gradient, constant). */
void ad_acc(AD *ad, int src_in, int grad);
/* ad_acc of a GEMM the rule made for input src_in alone: the tape runs it with beta = 1
 * into the gradient so far, and so does a loop body (matmul with an accumulator). */
void ad_acc_gemm(AD *ad, int src_in, int gemm);

/* ======================================================================== opt.c */
/* The optimisation passes, in order: CSE, dead code (loop bodies keep what their
 * backward loop reads), in-place marking (GEMM accumulation is autodiff's, ad_acc_gemm).  No constant folding: constants are few and cheap here. */
void opt_run(Graph *g);
/* Mark elementwise nodes of a top-level graph whose input dies at them NF_INPLACE: the
 * plan gives them that input's storage (no buffer of their own).  Loop bodies are left
 * alone.  Part of opt_run; after it, the graph must not change before planning. */
void opt_inplace(Graph *g);
/* The operand of input gradient q's accumulating add that can be computed into
 * net->in_grad too, or -1 (uses: ir_uses(g)). */
int opt_grad_chain(const Graph *g, const int *uses, int q);

/* ======================================================================== opt_fuse_conv.c */
/* Fold relu, residual adds and relu's backward mask into the convolution that feeds
 * them (conv2d_fused, conv2d_bwd_x_fused; the bits say what a fused node does, its
 * inputs follow in that order: forward (x, w, b?, skip?) with the bits in ia2,
 * backward (g, w, mask?, acc?) in ia4).  Static target, top-level graphs, before
 * opt_run; returns how many nodes it rewrote. */
enum { CONV_FUSE_BIAS = 1, CONV_FUSE_ADD = 2, CONV_FUSE_RELU = 4, CONV_FUSE_MASK = 8 };
int opt_fuse_conv(Graph *g);
/* Pair each convolution's conv2d_bwd_w with the conv2d_bwd_x(_fused) a few nodes after
 * it that reads the same gradient, and fold in its bias gradient's SUM, for one
 * conv2d_bwd_xw call at the bwd_x node (Node.xw_dw, xw_db, xw_at; the emitters read
 * them).  Static target, top-level graphs, after opt_run (it reads the dead and in-place
 * marks; it changes no node's op, inputs or flags); returns how many pairs it made. */
int opt_pair_conv(Graph *g);

/* ======================================================================== plan.c */
/* Buffer plan for one function: where every node's value (and aux scratch) lives in
 * the activation arena, by liveness with first-fit reuse.  Views share their base's
 * storage; leaves (inputs, params) take none, nor do gradients written straight into
 * the gradient slab or net->in_grad (external).  Inside a loop body a value gets one
 * slot, two alternating, or one per step (see plan.c). */
typedef struct Plan {
    int64_t *off;          /* per node: byte offset in act, or -1 (view, leaf, external, dead) */
    int64_t *aux_off;      /* per node: aux scratch offset, or -1 */
    int64_t *stride;       /* loop bodies (NULL at the top level): bytes between a node's slots */
    int64_t *aux_stride;
    int64_t *slots;        /* loop bodies: 1 (one slot reused every step), 2 (alternating:
                            * a carried value), or the step count (kept per step) */
    int64_t *aux_slots;
    struct Plan **sub;     /* LOOP nodes: the body's plan (absolute offsets) */
    bool *external;        /* top level: computed straight into the gradient slab (a
                            * parameter's gradient) or net->in_grad (an input's, or a
                            * part of its accumulation chain) */
    int *ext_param;        /* per external node: the parameter whose gradient it is, or -1 */
    int *ext_input;        /* ... the input whose net->in_grad it is written to, or -1 */
    int64_t bytes;         /* arena size needed */
} Plan;
Plan *plan_run(const Graph *g, int real_size);
/* Bytes of a node's value / aux at the compiled batch. */
int64_t plan_value_bytes(const Node *n, int real_size);
int64_t plan_aux_bytes(const Graph *g, const Node *n, int real_size);
/* Bytes of the tape's arena (--target=tape) for one step of the largest of the ng
 * record graphs g: an upper bound of what the runtime's tape allocates recording and
 * differentiating it; nleaves = parameters + inputs (the tape's leaf caches). */
int64_t plan_tape_bytes(Graph *const *g, int ng, int64_t nleaves, int real_size);

/* ======================================================================== pipeline.c */
/* The functions a model compiles to, and the passes that take each from the model's
 * forward graph to a planned graph.  main.c calls the passes in order (with
 * --dump-after between them); pipeline_build runs the same sequence for in-memory
 * callers (tests, the fuzz target). */
typedef enum FnKind {
    FN_EVAL,        /* eval-mode forward: outputs and loss */
    FN_TRAIN,       /* train mode: forward, backward, every parameter gradient */
    FN_INPUT_GRAD,  /* eval mode: the loss's gradient with respect to the inputs */
    FN_EVAL_GRAD,   /* eval mode: every parameter gradient (models whose modes differ) */
    FN_ENTRY,       /* an extra `entry` */
    FN_RECORD,      /* --target=tape: the model's graph as recorded on the tape */
} FnKind;

typedef struct Fn {
    FnKind kind;
    const EntryFn *entry;   /* FN_ENTRY */
    const Graph *src;       /* the model's graph it is cloned from */
    Graph *g;               /* its own copy, changed by the passes (NULL before the clone) */
    Plan *plan;             /* after pipeline_plan (static target) */
} Fn;

typedef struct Pipeline {
    const Model *m;
    int real_size;          /* 4 (f32) or 8 (f64) */
    bool tape;              /* --target=tape: record graphs, differentiated at run time */
    bool infer;             /* --inference (infer_clone): no fused ops, its kernels have none */
    Fn *fn; int nfn;
    int64_t act_bytes;      /* after pipeline_plan: the activation arena (tape: its arena) */
} Pipeline;

/* One graph per function kind, cloned from the model's graphs: static target: eval,
 * train and input gradient (when the model has a loss), then each entry; tape: the
 * record graph, then each entry. */
Pipeline *pipeline_clone(const Model *m, int real_size, bool tape);
/* The same functions without their graphs yet (pipeline_emit_c clones and plans each
 * in turn). */
Pipeline *pipeline_new(const Model *m, int real_size, bool tape);
void pipeline_autodiff(Pipeline *p);   /* ad_run on train / input-gradient functions */
void pipeline_verify(Pipeline *p);     /* ir_verify on every function */
void pipeline_opt(Pipeline *p);        /* opt_run (static target) */
void pipeline_plan(Pipeline *p);       /* plan_run, act_bytes */
Pipeline *pipeline_build(const Model *m, int real_size, bool tape);   /* all of the above */
/* emit_c for the static target, one function at a time: a function without a graph
 * (pipeline_new) is cloned, differentiated, verified, optimised and planned just
 * before its C, and all the memory that took is given back after it, so the compiler
 * holds the model and one function, not every function at once.  Functions that have
 * their graphs already are written as they are.  The same C as emit_c after
 * pipeline_build. */
void pipeline_emit_c(Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name);
/* Print every function's graph, titled "<kind> graph after <pass>". */
void pipeline_dump(FILE *f, const Pipeline *p, const char *pass);
const char *pipeline_kind_name(FnKind k);
/* Does graph g (or a loop body in it) compute differently in train and eval mode
 * (dropout, batch norm, rand, randn)?  Only then is FN_EVAL_GRAD a function of its own. */
bool pipeline_modes_differ(const Graph *g);

/* ======================================================================== weights.c */
/* A checkpoint's parameters for the inference export (--weights), read by the compiler
 * itself: a safetensors file (cdl's checkpoint, or a plain one with the same tensor
 * names) validated strictly, every parameter of m present with its shape, F32 or F64,
 * finite.  The table then grows by the tensors the export derives (infer.c: a
 * convolution's weights with the batch norm after it folded in). */
typedef struct WTensor {
    const char *name;      /* dotted: the parameter's, or the derived tensor's */
    Shape shape;
    float *data;
    const char *note;      /* how a derived tensor was made; NULL for a parameter */
    bool channel_last;     /* a convolution's weights [K, C, R, S], written [C, R, S, K] */
    bool q8;               /* --quantize=int8: written as int8, one float scale per output */
} WTensor;
typedef struct Weights {
    const char *path;
    bool f64;              /* the file held F64 tensors (rounded to float here) */
    WTensor *t; int n, cap;/* t[p] for p < m->nparams: parameter p (m->params order) */
} Weights;
/* NULL after an error naming the file (diag.c). */
Weights *weights_load(const char *path, const Model *m);
/* Add a derived tensor (or find the one of that name, which must have that shape);
 * returns its index. */
int weights_add(Weights *w, const char *name, Shape shape, float *data, const char *note);

/* ======================================================================== infer.c */
/* The pipeline of the inference export: the functions named in sel[0..n) ("forward":
 * the model's outputs without its loss; or an entry's name), the forward alone when n
 * is 0.  NULL after an error (an unknown entry, a forward with no outputs). */
Pipeline *infer_clone(const Model *m, int n, const char *const *sel);
/* Make function graph g (a clone of the eval forward or of an entry) ready for the
 * inference export, before opt_run: dropout becomes a view, and each batch norm after
 * a convolution or linear layer is folded into that layer's weights and bias (new
 * tensors in w).  The graph keeps its ids and topological order. */
void infer_prepare(Graph *g, Weights *w);

/* emit_infer.c: write the inference export of pipeline p (from infer_clone, prepared,
 * optimised and planned) to cf (named c_name) and its header (header_name) to hf; q8:
 * the weights of linear and convolution layers in int8 (--quantize=int8). */
void emit_infer(const Pipeline *p, Weights *w, bool q8, FILE *cf, FILE *hf, const char *c_name, const char *header_name);

/* ======================================================================== emit_common.c */
/* The emitters' toolkit: one function being written (either target), the helpers op
 * emitters call (strings live in the compilation arena), and what both emitters
 * write alike, so a model's static and tape builds interchange. */
struct Emit {
    FILE *f;
    int indent;
    const Model *m;
    int real_size;
    bool tape;              /* the tape emitter (its C variables are cdl_t pointers) */
    bool train;             /* static: the train-mode function */
    bool entry;             /* an extra entry: inputs come from in[], not net->in */
    bool infer;             /* static: the inference export (emit_c_infer_body): leaves are
                             * named by the caller, values without storage of their own
                             * are read-only, kernels get no scratch */
    const Graph *top;       /* the function's graph */
    const char **name;      /* top-level node -> C variable */
    const Plan *plan;       /* static: the function's buffers */
    const int64_t *slab_off;/* static: per param, its element offset in the slab */
    /* inside a loop body */
    const Graph *body;
    const char **bname;
    int loop;               /* top-level id of the LOOP being written, -1 outside */
    /* what the function's code refers to, so its prologue declares only that */
    bool used_A, used_P, used_G, used_nb, used_in;
    bool *bref;             /* in a body: nodes whose variable some statement reads */
};

void e_line(Emit *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text written before what must precede it (a function's body before its prologue):
 * an unlinked temporary file, so that a big body costs no memory (in memory when no
 * temporary file can be made).  e_spool_copy appends it to `to` and closes it. */
typedef struct Spool { FILE *f; bool in_memory; char *mem; size_t len; char *buf; } Spool;
FILE *e_spool_open(Spool *s);
void e_spool_copy(Spool *s, FILE *to);
const Graph *e_graph(const Emit *e);       /* the graph being written: the body inside a loop */
const char *e_ptr(Emit *e, int node);      /* its C variable: pointer to the first element (tape: cdl_t *) */
const char *e_outer(Emit *e, int node);    /* a top-level node's variable, also from inside a body */
const char *e_numel(Emit *e, int node);    /* runtime element count, e.g. "nb*256" or "2560" */
const char *e_rows(Emit *e, int node);     /* runtime size of dim 0 */
const char *e_dim(Emit *e, int node, int axis); /* runtime size of one dim */
/* Runtime product of node's dims [from, to) as a C expression: "1", "784", "nb", "nb*28". */
const char *e_prod(Emit *e, int node, int from, int to);
const char *e_dims_arg(Emit *e, int node); /* "rank, (const int64_t[]){nb, 128}" or "0, NULL" */
const char *e_fn(Emit *e, const char *kernel);  /* "cdl_<kernel>_f32" or "_f64" */
const char *e_real(Emit *e);               /* "float" or "double" */
const char *e_ctype(const Emit *e, const Node *n);  /* "float", "double" or "int32_t" */
const char *e_dtype(const Emit *e, const Node *n);  /* "CDL_F32", "CDL_F64" or "CDL_I32" */
/* A double as a C literal that reads back exactly; infinities as +-1e308, which the
 * kernels read as infinity (cdl.h, block EW); NaN as 0. */
const char *e_lit(double v);
const char *e_cstr(const char *s);         /* a C string literal */
/* v[0] sep v[1] sep ... in one string (linear in the total length). */
const char *e_join(int n, const char *const *v, const char *sep);
bool e_train(Emit *e);                     /* emitting the train-mode function */
bool e_entry(const Emit *e);               /* emitting an extra entry (inputs from in[]) */
const char *e_t(Emit *e);                  /* the loop step ("t") inside a body, "0" outside */
const char *e_rng(Emit *e, int node);      /* a cdl_rng_key expression for a RAND op */
const char *e_nb(Emit *e);                 /* "nb" */
int64_t e_batch(const Emit *e);            /* the compiled batch B (1 without one) */
/* A readable C identifier for node i: prefix, the source variable (or the param name,
 * or the op) and the id: "logits_12", "s_h_0"; a gradient is "d_" and the value it is
 * the gradient of ("d_logits_40", "s_d_h_3"), or its op for a partial term. */
const char *e_var_name(const Node *n, int i, const char *prefix);
/* Does C text use identifier word outside comments and string literals? */
bool e_mentions(const char *text, const char *word);
const char *e_shape_comment(const Emit *e, const Shape *s);  /* "(B, 256)" */
const char *e_loc(const Node *n);          /* " @ file.cdl:3:7" or "" */
/* OpRule.tape of the ops whose tape call is cdl_t_<op name>(tp, inputs...). */
const char *e_tape_plain(Emit *e, const Graph *g, int n);
/* Node `loop` of the top graph: its comment line and "for (int t = ...) {" (then
 * indent), `what` ending the comment ("values read after their step are kept per
 * step"); sets e->body (returned), e->loop and e->bname (empty names, the caller's
 * to fill).  e_loop_close closes the brace and clears them. */
const Graph *e_loop_open(Emit *e, int loop, const char *what);
void e_loop_close(Emit *e);

typedef struct EmitLayout {
    int64_t *slab;           /* per param: element offset in the parameter slab */
    int64_t param_count;     /* slab elements: trainable, then state */
    int64_t train_count;     /* the trainable prefix */
} EmitLayout;
EmitLayout emit_layout(const Model *m);
uint64_t emit_fingerprint(const Model *m, int real_size);
void emit_header(FILE *hf, const Model *m, const char *header_name, bool tape);
void emit_prologue(FILE *cf, const Model *m, const char *header_name, const char *about);
/* Parameter, input, output and entry tables, and NAME_init_params. */
void emit_tables(FILE *cf, const Model *m, int real_size, const EmitLayout *L);
/* Entries table, the cdl_model descriptor (which names NAME_fwd_eval, NAME_fwd_bwd,
 * NAME_fwd_bwd_input, NAME_entry_E), the public wrappers and, with_main, main(). */
void emit_descriptor(FILE *cf, const Model *m, int real_size, const EmitLayout *L, int64_t act_bytes, const char *act_comment,
                     bool with_main);

/* ======================================================================== emit_c.c */
/* Write MODEL.c to cf and MODEL.h (named header_name, as the .c includes it) to hf from
 * a planned pipeline: tables, init, one C function per Fn, the cdl_model descriptor and
 * the public wrappers; with_main adds main() -> cdl_main. */
void emit_c(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name);
/* emit_c in three steps, for a caller that plans each function just before its C
 * (pipeline_emit_c): the header, prologue and tables; one function (planned); the
 * descriptor, which reads p->act_bytes, so after the last function's plan. */
typedef struct EmitC EmitC;
EmitC *emit_c_begin(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name);
void emit_c_function(EmitC *c, const Fn *fn);
void emit_c_end(EmitC *c);
/* The inference export (emit_infer.c): the statements of function fn's body, written
 * to f at indent 1 as the static target writes them (a pointer per node, the op
 * emitters' kernel calls under their runtime names, C loops), reading the arena
 * `char *A` and the batch `nb`; leaf[i] names top-level INPUT and PARAM node i (the
 * caller's input, a weight array), values without storage of their own are const, and
 * kernels get NULL for scratch.  Returns every top-level node's C expression. */
const char **emit_c_infer_body(FILE *f, const Model *m, const Fn *fn, const char *const *leaf);
/* For op emitters (static target): */
const char *e_aux(Emit *e, int node);      /* pointer to node's aux scratch */
const char *e_aux_at(Emit *e, int node, int64_t off);   /* that + off reals (NULL in the inference export) */
/* A convolution kernel's call, kernel(geom, in0, in1[, in2 or NULL], node, scratch), as
 * cdl_conv2d, cdl_convg, cdl_conv_transpose2d and their _bwd_x / _bwd_w take it; the
 * third operand (the optional bias) only when bias_slot. */
void e_conv_call(Emit *e, int n, const char *kernel, const char *geom, bool bias_slot, const char *scratch);
const char *e_aux_as(Emit *e, int node, const char *type);   /* the same as a type * ("uint8_t") */
/* The inner (contraction) size k of a GEMM-like node as a C expression: "k", or
 * "t != t0 ? k : 0" inside a loop body when one of its first nops inputs is all zeros
 * at step t0 (a zero initial state: the product is skipped, not branched around).
 * *note gets the trailing comment saying so, or "". */
const char *e_inner(Emit *e, int node, int nops, const char *k, const char **note);

/* ======================================================================== emit_tape.c */
/* --target=tape: the same model (tables, names, descriptor) with every function
 * recording its ops on the runtime tape and differentiating them with cdl_backward.
 * Op blocks give their cdl_t_<op> call (OpRule.tape) with the shared helpers above. */
void emit_tape(const Pipeline *p, FILE *cf, FILE *hf, bool with_main, const char *header_name);
/* In a body being recorded: the variable holding carried value k in this trip. */
const char *e_tape_carry(Emit *e, int k);

#endif /* CDLC_H */
